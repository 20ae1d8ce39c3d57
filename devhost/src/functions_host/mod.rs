//! The Functions host's side of the custom-handler protocol: start the
//! handler, wait until it answers, forward HTTP requests and send envelope
//! invocations.
//!
//! Follows AZURE-FACTS "The Functions host and a custom handler": start with
//! `FUNCTIONS_CUSTOMHANDLER_PORT` (= `FUNCTIONS_HTTPWORKER_PORT`),
//! `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`, `FUNCTIONS_APP_ROOT_PATH` and the app
//! root as working directory; ready on any HTTP answer to `GET /` polled
//! every 25 ms, given up after 30 s; forwarding keeps method, `/api/...` path
//! and query and adds `X-Azure-Functions-InvocationId` and
//! `X-Azure-Functions-HostVersion`, the body only when non-empty, redirects
//! not followed; other invocations are `POST /{FunctionName}` with a chunked
//! JSON envelope.

mod envelope;

pub use envelope::{envelope, host_encode, http_envelope_metadata, http_envelope_request, timer_info};

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// The host version the emulator claims (headers and User-Agent).
pub const HOST_VERSION: &str = "4.1037.0.0";

/// How long the host waits for `GET /` to answer (`initializationTimeout`).
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-request limit: an HTTP trigger must answer within 230 s on Azure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(230);

/// A running custom handler, started as the Functions host starts it; killed
/// on drop.
#[derive(Debug)]
pub struct HandlerProcess {
    child: Child,
    pid: u32,
    port: u16,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl HandlerProcess {
    /// Starts `binary` with the host's environment (inherited environment,
    /// then `env`, then the host's own variables on a free port) in
    /// `app_root`, captures its output, and returns once `GET /` gets any
    /// HTTP answer. Fails after 30 s, or at once with its stderr if it exits.
    pub async fn spawn(binary: &Path, app_root: &Path, env: &[(String, String)]) -> anyhow::Result<HandlerProcess> {
        let port = crate::util::free_port()?;
        let mut cmd = Command::new(binary);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", crate::util::uuid_v4())
            .env("FUNCTIONS_APP_ROOT_PATH", app_root)
            .current_dir(app_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("child has no pid")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().context("no stdout pipe")?;
        let err = child.stderr.take().context("no stderr pipe")?;
        tokio::spawn(capture(out, stdout.clone(), format!("handler {pid} stdout")));
        tokio::spawn(capture(err, stderr.clone(), format!("handler {pid} stderr")));
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        let mut handler = HandlerProcess {
            child,
            pid,
            port,
            stdout,
            stderr,
            client,
        };
        handler.wait_ready().await?;
        Ok(handler)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + INIT_TIMEOUT;
        let url = format!("{}/", self.base_url());
        loop {
            let probe = self.client.get(&url).timeout(Duration::from_secs(1));
            if probe.send().await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.try_wait() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                anyhow::bail!(
                    "handler exited before it was ready ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "handler did not answer GET / on port {} within {INIT_TIMEOUT:?}; stderr:\n{}",
                    self.port,
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The port the handler listens on (`FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the handler wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the handler wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The exit status, if the handler has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Forwards an HTTP request as the host does with
    /// `enableForwardingHttpRequest`: same method and `/api/...` path and
    /// query, plus invocation id and host version headers; the body only when
    /// non-empty. Redirects are not followed.
    pub async fn forward(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<reqwest::Response> {
        self.forward_with_headers(method, path_and_query, &[], body).await
    }

    /// [`HandlerProcess::forward`] with the caller's own headers too.
    pub async fn forward_with_headers(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> reqwest::Result<reqwest::Response> {
        let url = format!("{}{}", self.base_url(), path_and_query);
        let mut req = self.client.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = req
            .header("X-Azure-Functions-InvocationId", crate::util::uuid_v4())
            .header("X-Azure-Functions-HostVersion", HOST_VERSION);
        if let Some(b) = body.filter(|b| !b.is_empty()) {
            req = req.body(b);
        }
        req.send().await
    }

    /// Sends a non-HTTP invocation: `POST /{function_name}` with the
    /// [`envelope`] of `data` and `metadata`, chunked (no Content-Length),
    /// with the host's headers and a `traceparent`.
    pub async fn invoke(
        &self,
        function_name: &str,
        data: Value,
        metadata: Value,
    ) -> reqwest::Result<reqwest::Response> {
        let body = serde_json::to_vec(&envelope(function_name, data, metadata)).expect("envelope serialises");
        let chunks = vec![Ok::<_, std::io::Error>(bytes::Bytes::from(body))];
        let traceparent = format!("00-{}-{}-01", crate::util::random_hex(16), crate::util::random_hex(8));
        self.client
            .post(format!("{}/{}", self.base_url(), function_name))
            .header("content-type", "application/json; charset=utf-8")
            .header("User-Agent", format!("Azure-Functions-Host/{HOST_VERSION}"))
            .header("X-Azure-Functions-InvocationId", crate::util::uuid_v4())
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .header("traceparent", traceparent)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send()
            .await
    }

    /// Invokes a timer function: `Data` = `{binding_name: timer_info}` (see
    /// [`timer_info`]).
    pub async fn invoke_timer(
        &self,
        function_name: &str,
        binding_name: &str,
        timer_info: Value,
    ) -> reqwest::Result<reqwest::Response> {
        let data = json!({ binding_name: timer_info });
        self.invoke(function_name, data, json!({})).await
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; on timeout kills
    /// the process and returns an error saying so.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Ok(status);
        }
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        anyhow::ensure!(rc == 0, "SIGTERM failed: {}", std::io::Error::last_os_error());
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = self.child.kill().await;
                anyhow::bail!("handler did not exit within {timeout:?} of SIGTERM; killed")
            }
        }
    }
}

impl Drop for HandlerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Appends each line of `pipe` to `buf`; echoes to stderr when `TEST_LOG`
/// is set.
async fn capture(pipe: impl AsyncRead + Unpin, buf: Arc<Mutex<String>>, label: String) {
    let echo = std::env::var_os("TEST_LOG").is_some();
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if echo {
                    eprint!("[{label}] {text}");
                    if !text.ends_with('\n') {
                        eprintln!();
                    }
                }
                buf.lock().unwrap().push_str(&text);
            }
        }
    }
}
