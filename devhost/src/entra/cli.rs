//! Stand-in `az` and `azd` executables: small bash scripts in a temporary
//! directory (put it first on the handler's `PATH`) that hand their
//! arguments and working directory to a broker in this process over
//! loopback TCP, and print its answer as the real tool would.
//!
//! `azure_identity` runs them as `/bin/sh -c "cd /bin && az …"` (process
//! module), so the scripts are found through `PATH` like the real tools, and
//! the broker sees the same arguments and `/bin` as working directory. The
//! answers are in `tools.rs`.

use super::model::Principal;
use super::tools::{self, Account, Answer, Tool};
use crate::identity::Claims;
use crate::identity::Issuer;
use anyhow::Context;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest a stand-in may take to send its request.
const REQUEST_LIMIT: Duration = Duration::from_secs(5);

/// Largest request a stand-in may send (its arguments and directory).
const MAX_REQUEST: u64 = 64 * 1024;

/// Who is signed in to the tools, and where.
#[derive(Debug, Clone)]
pub struct CliConfig {
    /// The signed-in user (its `oid` is the Redis user), tenant, token
    /// lifetime and Redis.
    pub principal: Principal,
    /// The current subscription (`az`'s `subscription`).
    pub subscription_id: String,
}

impl Default for CliConfig {
    fn default() -> Self {
        CliConfig {
            principal: Principal::default(),
            subscription_id: "00000000-0000-4000-8000-00000005ab01".into(),
        }
    }
}

/// One run of a stand-in, as the broker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliCall {
    /// Which tool ran.
    pub tool: Tool,
    /// Its arguments, after the program name.
    pub args: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// The exit code it was told to exit with.
    pub exit_code: i32,
}

/// What the broker and its owner share: the sign-ins and the calls.
struct CliState {
    issuer: Arc<Issuer>,
    subscription_id: String,
    /// Whether `az` and `azd` are signed in.
    signed_in: Mutex<[bool; 2]>,
    calls: Mutex<Vec<CliCall>>,
}

impl CliState {
    /// What `tool` answers from now.
    fn account(&self, tool: Tool) -> Account<'_> {
        Account {
            issuer: &self.issuer,
            subscription_id: &self.subscription_id,
            signed_in: self.signed_in.lock().unwrap()[tool as usize],
        }
    }
}

/// Stand-in `az` and `azd`, both signed in at start; the scripts and the
/// broker go away on drop.
pub struct DeveloperCli {
    dir: tempfile::TempDir,
    shared: Arc<CliState>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for DeveloperCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeveloperCli")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl DeveloperCli {
    /// Writes the scripts and starts the broker on a free loopback port.
    /// The scripts need `bash` (for `/dev/tcp`) and `cat` on `PATH`.
    pub async fn start(cfg: CliConfig) -> anyhow::Result<DeveloperCli> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let dir = tempfile::Builder::new().prefix("devhost-cli-").tempdir()?;
        for tool in [Tool::Az, Tool::Azd] {
            let path = dir.path().join(tool.name());
            std::fs::write(&path, script(tool, addr)).with_context(|| format!("writing {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        let issuer = cfg.principal.issuer();
        let shared = Arc::new(CliState {
            issuer: issuer.clone(),
            subscription_id: cfg.subscription_id,
            signed_in: Mutex::new([true, true]),
            calls: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let broker = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Ok(DeveloperCli {
            dir,
            shared,
            tasks: vec![broker, issuer.spawn_sweeper()],
        })
    }

    /// The directory holding `az` and `azd`.
    pub fn bin_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `PATH` with [`DeveloperCli::bin_dir`] first, then this process's own.
    pub fn path_env(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        format!("{}:{rest}", self.dir.path().display())
    }

    /// Signs `tool` in or out (signed out, it fails as the real one does).
    pub fn set_signed_in(&self, tool: Tool, signed_in: bool) {
        self.shared.signed_in.lock().unwrap()[tool as usize] = signed_in;
    }

    /// Every run so far, in order.
    pub fn calls(&self) -> Vec<CliCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// How many times `tool` ran.
    pub fn calls_to(&self, tool: Tool) -> usize {
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.tool == tool)
            .count()
    }

    /// Tokens handed out, by either tool.
    pub fn tokens_minted(&self) -> usize {
        self.shared.issuer.minted()
    }

    /// The most recent token handed out.
    pub fn last_token(&self) -> Option<String> {
        self.shared.issuer.last_token()
    }

    /// The claims of a token handed out here (signature checked, any
    /// audience, even expired); `None` for any other string.
    pub fn claims(&self, token: &str) -> Option<Claims> {
        self.shared.issuer.claims(token)
    }

    /// Changes the lifetime of tokens handed out from now on.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.shared.issuer.set_lifetime(lifetime);
    }
}

impl Drop for DeveloperCli {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The script for `tool`: request = name, directory and argument count, one
/// per line, then each argument NUL-terminated; answer = the exit code on a
/// line, then the output.
fn script(tool: Tool, broker: SocketAddr) -> String {
    let (name, host, port) = (tool.name(), broker.ip(), broker.port());
    format!(
        r#"#!/usr/bin/env bash
# Stand-in for `{name}` written by devhost (entra::DeveloperCli): it hands its
# arguments and working directory to the broker on {host}:{port} and prints
# the answer as the real tool would (stdout, or stderr and the exit code).
exec 3<>/dev/tcp/{host}/{port} || {{ echo "ERROR: devhost's {name}: its broker on {host}:{port} is gone" >&2; exit 1; }}
printf '%s\n%s\n%s\n' '{name}' "$PWD" "$#" >&3
for arg in "$@"; do printf '%s\0' "$arg" >&3; done
IFS= read -r code <&3 || exit 1
if [ "$code" = 0 ]; then cat <&3; else cat <&3 >&2; fi
exit "$code"
"#
    )
}

/// Reads one request, answers it, records the call.
async fn serve(stream: TcpStream, s: Arc<CliState>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read.take(MAX_REQUEST));
    let Ok(Ok((tool, cwd, args))) = tokio::time::timeout(REQUEST_LIMIT, read_request(&mut read)).await else {
        return;
    };
    let answer: Answer = match tool {
        Tool::Az => tools::az(s.account(tool), &args).await,
        Tool::Azd => tools::azd(s.account(tool), &args).await,
    };
    s.calls.lock().unwrap().push(CliCall {
        tool,
        args,
        cwd,
        exit_code: answer.code,
    });
    let _ = write
        .write_all(format!("{}\n{}", answer.code, answer.out).as_bytes())
        .await;
    let _ = write.shutdown().await;
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> anyhow::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line).await?;
    Ok(line.trim_end_matches('\n').to_owned())
}

async fn read_request<R: AsyncBufReadExt + Unpin>(r: &mut R) -> anyhow::Result<(Tool, String, Vec<String>)> {
    let tool = match read_line(r).await?.as_str() {
        "az" => Tool::Az,
        "azd" => Tool::Azd,
        other => anyhow::bail!("unknown tool {other:?}"),
    };
    let cwd = read_line(r).await?;
    let argc: usize = read_line(r).await?.parse()?;
    let mut args = Vec::with_capacity(argc.min(64));
    for _ in 0..argc {
        let mut arg = Vec::new();
        r.read_until(0, &mut arg).await?;
        anyhow::ensure!(arg.pop() == Some(0), "argument not NUL-terminated");
        args.push(String::from_utf8(arg)?);
    }
    Ok((tool, cwd, args))
}
