//! The Functions host's side of the custom-handler protocol: start the
//! handler, wait until it answers, proxy or forward HTTP requests and send
//! envelope invocations.
//!
//! Follows docs/azure.md "The Functions host and a custom handler": start with
//! `FUNCTIONS_CUSTOMHANDLER_PORT` (= `FUNCTIONS_HTTPWORKER_PORT`),
//! `FUNCTIONS_CUSTOMHANDLER_WORKER_ID`, `FUNCTIONS_APP_ROOT_PATH` and the app
//! root as working directory; ready on any HTTP answer to `GET /` polled
//! every 25 ms, given up after 30 s; proxying as `enableProxyingHttpRequest`
//! does it is in [`proxy`]; forwarding keeps method, `/api/...` path
//! and query and adds `X-Azure-Functions-InvocationId` and
//! `X-Azure-Functions-HostVersion`, the body only when non-empty, redirects
//! not followed; other invocations are `POST /{FunctionName}` with a chunked
//! JSON envelope.

mod client;
mod envelope;
mod output;
pub mod proxy;

pub use client::{host_traceparent, new_invocation_id, HandlerClient};
pub use envelope::{
    dotnet_time, envelope, host_encode, http_envelope_metadata, http_envelope_request, timer_info,
    timer_info_with_status, ScheduleStatus,
};
pub use proxy::{Origin, ProxyRequest};

use anyhow::Context;
use output::{capture, Echo};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The host version the emulator claims (headers and User-Agent).
pub const HOST_VERSION: &str = "4.1037.0.0";

/// A proxied answer silent this long is cut (YARP `ActivityTimeout`).
pub const ACTIVITY_TIMEOUT: Duration = Duration::from_secs(240);

/// How long the host waits for `GET /` to answer (`initializationTimeout`).
const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the host polls `GET /` until it answers.
const READY_POLL: Duration = Duration::from_millis(25);

/// With live output, how much of each stream is kept for error messages.
const KEPT_WHEN_ECHOING: usize = 256 * 1024;

/// How [`HandlerProcess::spawn_with`] starts the handler, beyond the host's
/// own environment.
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    /// The port to give it (host.json `customHandler.port`); a free one when `None`.
    pub port: Option<u16>,
    /// Print each output line as it comes, prefixed with `[<label>]` (stdout
    /// lines to stdout, stderr lines to stderr); only the last 256 KiB are
    /// then kept for [`HandlerProcess::stdout`]/[`HandlerProcess::stderr`].
    /// Without it, lines are echoed to stderr only when `TEST_LOG` is set.
    pub echo: Option<String>,
    /// Inherited variables not to pass on (e.g. settings that would point
    /// the handler elsewhere).
    pub env_remove: Vec<String>,
    /// Run the handler in its own process group, so a terminal's Ctrl-C
    /// reaches only this process, which then stops the handler in order;
    /// and on Linux the handler gets SIGTERM if this process dies without
    /// stopping it (even by SIGKILL). Spawn from a thread that outlives the
    /// handler (the signal fires when the spawning thread exits).
    pub die_with_parent: bool,
    /// Command-line arguments (host.json `customHandler.description.arguments`;
    /// for a program run by an interpreter, its script first).
    pub args: Vec<String>,
    /// Start from an empty environment but for `PATH`, `HOME`, `LANG` and
    /// `TMPDIR`, so that nothing else from the caller's environment reaches
    /// the program (a benchmark's servers see only their settings).
    pub clean_env: bool,
    /// Keep only about the last this many bytes of each stream for
    /// [`HandlerProcess::stdout`]/[`HandlerProcess::stderr`] (256 KiB with
    /// `echo`, everything otherwise).
    pub keep_output: Option<usize>,
    /// Return once the process is started, without polling `GET /` (every
    /// 25 ms, as the host does) until it answers: for a caller that times
    /// readiness itself. tokio's timer counts whole milliseconds and rounds
    /// a sleep up to its next tick: polls asked for every 1 ms here went out
    /// every 2.1 ms (median of 200 sleeps, against 1.08 ms for a thread's
    /// `sleep`), so readiness read late by a millisecond on average. The
    /// bench polls from a thread of its own instead.
    pub no_ready_wait: bool,
}

/// Inherited variables kept by [`SpawnOptions::clean_env`].
const CLEAN_ENV_KEPT: [&str; 4] = ["PATH", "HOME", "LANG", "TMPDIR"];

/// A running custom handler, started as the Functions host starts it; killed
/// on drop.
#[derive(Debug)]
pub struct HandlerProcess {
    child: Child,
    pid: u32,
    port: u16,
    started: Instant,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    client: HandlerClient,
}

impl HandlerProcess {
    /// Starts `binary` with the host's environment (inherited environment,
    /// then `env`, then the host's own variables on a free port) in
    /// `app_root`, captures its output, and returns once `GET /` gets any
    /// HTTP answer. Fails after 30 s, or at once with its stderr if it exits.
    pub async fn spawn(binary: &Path, app_root: &Path, env: &[(String, String)]) -> anyhow::Result<HandlerProcess> {
        Self::spawn_with(binary, app_root, env, &SpawnOptions::default()).await
    }

    /// [`HandlerProcess::spawn`] with [`SpawnOptions`]. `binary` may also be
    /// another program that serves the same protocol (an interpreter, with
    /// its script in [`SpawnOptions::args`]).
    pub async fn spawn_with(
        binary: &Path,
        app_root: &Path,
        env: &[(String, String)],
        opts: &SpawnOptions,
    ) -> anyhow::Result<HandlerProcess> {
        let port = match opts.port {
            Some(p) => p,
            None => crate::util::free_port()?,
        };
        let mut cmd = Command::new(binary);
        if opts.clean_env {
            cmd.env_clear();
            for name in CLEAN_ENV_KEPT {
                if let Some(v) = std::env::var_os(name) {
                    cmd.env(name, v);
                }
            }
        }
        for name in &opts.env_remove {
            cmd.env_remove(name);
        }
        cmd.args(&opts.args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", crate::util::uuid_v4())
            .env("FUNCTIONS_APP_ROOT_PATH", app_root)
            .current_dir(app_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if opts.die_with_parent {
            crate::util::die_with_parent(cmd.as_std_mut(), libc::SIGTERM);
        }
        // Built before the clock starts: building it takes milliseconds of
        // CPU (two clients, each with its TLS set-up), which would otherwise
        // run beside the starting handler and count in its start-up, and
        // the Functions host's own client exists before it starts a worker.
        let client = HandlerClient::new(format!("http://127.0.0.1:{port}"))?;
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id().context("child has no pid")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().context("no stdout pipe")?;
        let err = child.stderr.take().context("no stderr pipe")?;
        let (out_echo, err_echo) = match &opts.echo {
            Some(label) => (Echo::Stdout(label.clone()), Echo::Stderr(label.clone())),
            None if std::env::var_os("TEST_LOG").is_some() => (
                Echo::Stderr(format!("handler {pid} stdout")),
                Echo::Stderr(format!("handler {pid} stderr")),
            ),
            None => (Echo::None, Echo::None),
        };
        let keep = opts.keep_output.or(opts.echo.as_ref().map(|_| KEPT_WHEN_ECHOING));
        tokio::spawn(capture(out, stdout.clone(), out_echo, keep));
        tokio::spawn(capture(err, stderr.clone(), err_echo, keep));
        let mut handler = HandlerProcess {
            child,
            pid,
            port,
            started,
            stdout,
            stderr,
            client,
        };
        if !opts.no_ready_wait {
            handler.wait_ready(READY_POLL).await?;
        }
        Ok(handler)
    }

    async fn wait_ready(&mut self, poll: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + INIT_TIMEOUT;
        let url = format!("{}/", self.base_url());
        loop {
            let probe = self.client.http().get(&url).timeout(Duration::from_secs(1));
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
            tokio::time::sleep(poll).await;
        }
    }

    /// Just before the process was spawned (cold starts are measured from here).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The port the handler listens on (`FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A cloneable client for this handler (for tasks that invoke it while
    /// the owner keeps the process).
    pub fn client(&self) -> HandlerClient {
        self.client.clone()
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

    /// Waits for the handler to exit by itself.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
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
        self.client
            .forward_with_headers(method, path_and_query, headers, body)
            .await
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
        self.client.invoke(function_name, data, metadata).await
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
