//! A real `redis-server` (7.x, built with TLS) as a child process, standing
//! in for Azure Cache for Redis / Azure Managed Redis.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis": TLS only for the handler
//! (the TLS port), users are object ids whose passwords are access tokens,
//! errors are Redis's own (`WRONGPASS invalid username-password pair`,
//! `NOAUTH`, `NOPERM`). The plain port exists only for the emulators' admin
//! connection ([`RedisAdmin`]), authenticated as `default` with a random
//! password. `DEBUG` is enabled for loopback (`DEBUG SLEEP` simulates a slow
//! cache). What this stand-in does NOT do by itself: close a connection when
//! its token expires (Azure does; Redis keeps it).

mod admin;

pub use admin::{ClientInfo, RedisAdmin};

use crate::pki::Pki;
use anyhow::Context;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to get a `redis-server` built with TLS (6.0 or later; 7.x tested).
pub const INSTALL_HINT: &str = "install Redis 7 with TLS: `sudo apt-get install -y redis-server` (Debian/Ubuntu), \
     `sudo dnf install -y redis` (Fedora), `brew install redis` (macOS), or see https://redis.io/docs/latest/operate/oss_and_stack/install/";

/// How long [`RedisServer::start`] waits for the server to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How [`RedisServer::start_with`] runs the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    /// Linux: the server gets SIGTERM if this process dies without stopping
    /// it (even by SIGKILL). Start it from a thread that outlives it.
    pub die_with_parent: bool,
}

/// A running `redis-server` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Mutex<Option<Child>>,
    opts: RedisOptions,
    plain_port: u16,
    tls_port: u16,
    admin: RedisAdmin,
    dir: tempfile::TempDir,
    /// Appended to the command line on every start (cluster settings).
    extra_args: Vec<String>,
}

/// How a server started by this crate differs from [`RedisServer::start`]'s
/// (a cluster node: ports chosen by the caller, one admin password shared by
/// every node, cluster settings).
#[derive(Debug)]
pub(crate) struct ServerSpec {
    pub(crate) plain_port: u16,
    pub(crate) tls_port: u16,
    /// The `default` user's password.
    pub(crate) password: String,
    /// Appended to the command line.
    pub(crate) extra_args: Vec<String>,
}

impl RedisServer {
    /// Starts `redis-server` from PATH with a TLS port using `pki`'s server
    /// certificate (copied, so `pki` may be dropped afterwards), a plain
    /// admin port, no persistence, and a random admin password; returns once
    /// it answers PING (at most ~10 s).
    pub async fn start(pki: &Pki) -> anyhow::Result<RedisServer> {
        Self::start_with(pki, RedisOptions::default()).await
    }

    /// [`RedisServer::start`] with [`RedisOptions`].
    pub async fn start_with(pki: &Pki, opts: RedisOptions) -> anyhow::Result<RedisServer> {
        let plain_port = crate::util::free_port()?;
        let mut tls_port = crate::util::free_port()?;
        while tls_port == plain_port {
            tls_port = crate::util::free_port()?;
        }
        let spec = ServerSpec {
            plain_port,
            tls_port,
            password: crate::util::random_hex(24),
            extra_args: Vec::new(),
        };
        Self::start_spec(pki, opts, spec).await
    }

    /// [`RedisServer::start_with`] on the ports, with the admin password and
    /// the extra `redis-server` arguments of `spec` (a cluster node).
    pub(crate) async fn start_spec(pki: &Pki, opts: RedisOptions, spec: ServerSpec) -> anyhow::Result<RedisServer> {
        let ServerSpec {
            plain_port,
            tls_port,
            password,
            extra_args,
        } = spec;
        let dir = tempfile::Builder::new().prefix("devhost-redis-").tempdir()?;
        for (from, to) in [
            (&pki.ca_path, "ca.pem"),
            (&pki.cert_path, "server.pem"),
            (&pki.key_path, "server.key"),
        ] {
            std::fs::copy(from, dir.path().join(to)).with_context(|| format!("copying {}", from.display()))?;
        }
        let hash: String = Sha256::digest(password.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(
            dir.path().join("users.acl"),
            format!("user default on #{hash} ~* &* +@all\n"),
        )?;
        let server = RedisServer {
            child: Mutex::new(None),
            opts,
            plain_port,
            tls_port,
            admin: RedisAdmin::new(plain_port, password),
            dir,
            extra_args,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// Starts the server again after [`RedisServer::stop`], on the same ports
    /// with the same configuration and ACL users (the keys are gone), and waits until it
    /// answers. Does nothing if it is running.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let child = self.spawn()?;
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.lock().unwrap().as_mut().and_then(exited) {
                anyhow::bail!(
                    "redis-server exited during start-up ({status}); log tail:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(mut conn) = self.admin.connection().await {
                if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.stop();
                anyhow::bail!(
                    "redis-server did not answer PING on 127.0.0.1:{} within {:?}; log tail:\n{}",
                    self.plain_port,
                    READY_TIMEOUT,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let d = self.dir.path();
        let out = File::create(self.log_path()).context("creating the redis log")?;
        let p = |s: &str| d.join(s).into_os_string();
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port").arg(self.plain_port.to_string());
        cmd.args(["--bind", "127.0.0.1", "--daemonize", "no"]);
        cmd.arg("--tls-port").arg(self.tls_port.to_string());
        cmd.arg("--tls-cert-file").arg(p("server.pem"));
        cmd.arg("--tls-key-file").arg(p("server.key"));
        cmd.arg("--tls-ca-cert-file").arg(p("ca.pem"));
        cmd.args(["--tls-auth-clients", "no", "--save", "", "--appendonly", "no"]);
        cmd.args(["--enable-debug-command", "local"]);
        cmd.arg("--dir").arg(d);
        cmd.arg("--aclfile").arg(p("users.acl"));
        cmd.args(&self.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(d);
        if self.opts.die_with_parent {
            crate::util::die_with_parent(&mut cmd, libc::SIGTERM);
        }
        cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("redis-server not found on PATH; {INSTALL_HINT}")
            } else {
                anyhow::Error::new(e).context("spawning redis-server")
            }
        })
    }

    /// Kills the server (SIGKILL, like a crash or failover) and reaps it. The
    /// ports are kept for [`RedisServer::start_again`].
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the child process is alive.
    pub fn is_running(&self) -> bool {
        let mut guard = self.child.lock().unwrap();
        match guard.as_mut() {
            Some(child) => exited(child).is_none(),
            None => false,
        }
    }

    /// The TLS port: the one the handler uses (`Redis__port`).
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The plain port, for the emulators' admin connection only.
    pub fn plain_port(&self) -> u16 {
        self.plain_port
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// Admin commands on this server, each on a short-lived plain
    /// connection as `default`; clone it to keep one (for
    /// [`crate::identity::IdentityConfig::redis`], or past this server).
    pub fn admin(&self) -> &RedisAdmin {
        &self.admin
    }

    /// The server's working directory (its log is `redis.log` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last 40 lines of the server's stdout/stderr log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

fn exited(child: &mut Child) -> Option<std::process::ExitStatus> {
    child.try_wait().ok().flatten()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
