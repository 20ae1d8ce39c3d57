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

#[cfg(test)]
mod tests {
    //! The `az` and `azd` stand-ins run by the real `azure_identity` 1.0.0
    //! credentials, and the shape of their answers.

    use super::*;
    use crate::identity::REDIS_AUDIENCE;
    use azure_core::credentials::TokenCredential;
    use azure_identity::{
        AzureCliCredential, AzureCliCredentialOptions, AzureDeveloperCliCredential, AzureDeveloperCliCredentialOptions,
        Executor,
    };
    use serde_json::Value;
    use std::ffi::OsStr;
    use std::future::Future;
    use std::pin::Pin;
    use std::process::Output;
    use std::sync::Arc;

    const SCOPE: &str = "https://redis.azure.com/.default";

    /// Runs the credential's commands with the stand-ins first on `PATH` (the
    /// test process's own environment stays as it is).
    #[derive(Debug)]
    struct WithPath(String);

    impl Executor for WithPath {
        fn run<'a, 'b, 'c, 'd, 'f>(
            &'a self,
            program: &'b OsStr,
            args: &'c [&'d OsStr],
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'f>>
        where
            'a: 'f,
            'b: 'f,
            'c: 'f,
            'd: 'f,
            Self: 'f,
        {
            Box::pin(async move {
                tokio::process::Command::new(program)
                    .args(args)
                    .env("PATH", &self.0)
                    .output()
                    .await
            })
        }
    }

    /// `AzureCliCredential` runs the `az` stand-in with exactly its command
    /// (in `/bin`), parses its answer, and the token is minted here.
    #[tokio::test]
    async fn azure_cli_credential_runs_the_stand_in() {
        let cli = DeveloperCli::start(CliConfig::default()).await.unwrap();
        let cred = AzureCliCredential::new(Some(AzureCliCredentialOptions {
            executor: Some(Arc::new(WithPath(cli.path_env()))),
            ..Default::default()
        }))
        .unwrap();
        let token = cred.get_token(&[SCOPE], None).await.unwrap();
        let claims = cli.claims(token.token.secret()).expect("minted here");
        assert_eq!(claims.aud, REDIS_AUDIENCE);
        assert_eq!(token.expires_on.unix_timestamp(), claims.exp);
        let calls = cli.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].tool, Tool::Az);
        assert_eq!(
            calls[0].args,
            ["account", "get-access-token", "-o", "json", "--scope", SCOPE]
        );
        assert_eq!((calls[0].cwd.as_str(), calls[0].exit_code), ("/bin", 0));

        cli.set_signed_in(Tool::Az, false);
        let err = cred.get_token(&[SCOPE], None).await.unwrap_err().to_string();
        assert!(err.contains("Please run 'az login' to setup account."), "{err}");
    }

    /// `AzureDeveloperCliCredential` runs the `azd` stand-in with exactly its
    /// command and parses its RFC 3339 `expiresOn`; signed out, it reports azd's
    /// own message.
    #[tokio::test]
    async fn azure_developer_cli_credential_runs_the_stand_in() {
        let cli = DeveloperCli::start(CliConfig::default()).await.unwrap();
        let cred = AzureDeveloperCliCredential::new(Some(AzureDeveloperCliCredentialOptions {
            executor: Some(Arc::new(WithPath(cli.path_env()))),
            ..Default::default()
        }))
        .unwrap();
        let token = cred.get_token(&[SCOPE], None).await.unwrap();
        let claims = cli.claims(token.token.secret()).expect("minted here");
        assert_eq!(token.expires_on.unix_timestamp(), claims.exp);
        let call = &cli.calls()[0];
        assert_eq!(call.tool, Tool::Azd);
        assert_eq!(
            call.args,
            ["auth", "token", "-o", "json", "--no-prompt", "--scope", SCOPE]
        );
        assert_eq!(call.cwd, "/bin");

        cli.set_signed_in(Tool::Azd, false);
        let err = cred.get_token(&[SCOPE], None).await.unwrap_err().to_string();
        assert!(
            err.contains("ERROR: not logged in, run `azd auth login` to login"),
            "{err}"
        );
    }

    /// `az`'s answer has the real tool's fields: `expiresOn` in local time
    /// without a zone and `expires_on` in Unix seconds, the same instant; keys
    /// sorted and indented by two; an argument it does not know exits 2.
    #[tokio::test]
    async fn az_answers_in_the_real_shape() {
        let cli = DeveloperCli::start(CliConfig::default()).await.unwrap();
        let run = |args: &'static str| {
            let path = cli.path_env();
            async move {
                tokio::process::Command::new("/bin/sh")
                    .args(["-c", &format!("cd /bin && az {args}")])
                    .env("PATH", path)
                    .output()
                    .await
                    .unwrap()
            }
        };
        let out = run("account get-access-token -o json --scope https://redis.azure.com/.default").await;
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("{\n  \"accessToken\": "), "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "accessToken",
                "expiresOn",
                "expires_on",
                "subscription",
                "tenant",
                "tokenType"
            ]
        );
        let exp = body["expires_on"].as_i64().unwrap();
        let local = body["expiresOn"].as_str().unwrap();
        let (date, clock) = local.strip_suffix(".000000").unwrap().split_once(' ').unwrap();
        let num = |s: &str| {
            s.split(['-', ':'])
                .map(|n| n.parse::<i64>().unwrap())
                .collect::<Vec<_>>()
        };
        let (d, c) = (num(date), num(clock));
        let month = time::Month::try_from(d[1] as u8).unwrap();
        let naive = time::Date::from_calendar_date(d[0] as i32, month, d[2] as u8)
            .unwrap()
            .with_hms(c[0] as u8, c[1] as u8, c[2] as u8)
            .unwrap()
            .assume_utc()
            .unix_timestamp();
        let offset = naive - exp;
        assert!(
            offset % 900 == 0 && offset.abs() <= 14 * 3600,
            "{local} is {exp} in local time"
        );
        assert_eq!(body["tokenType"], "Bearer");

        let out = run("account get-access-token -o json --resource https://redis.azure.com").await;
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized arguments: --resource"));
    }
}
