//! The stand-ins the benchmark runs against (a TLS `redis-server` with ACL
//! users and the App Service identity endpoint, from `devhost`) and the
//! servers under test, started as the Functions host starts a custom handler.

use crate::client;
use anyhow::{bail, Context};
use devhost::functions_host::{HandlerProcess, SpawnOptions};
use devhost::identity::{IdentityConfig, IdentityEndpoint};
use devhost::pki::Pki;
use devhost::redis_server::{RedisOptions, RedisServer};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Keys are `key:000000000000` to `key:<KEYSPACE-1>`, as `redis-benchmark -r` makes them.
pub const KEYSPACE: u32 = 10_000;
/// Value size in bytes, for PUT/SET and the stored values GET reads (`redis-benchmark -d`).
pub const VALUE_BYTES: usize = 100;
/// The ACL user `redis-benchmark` authenticates as (same rules as the identity's user).
pub const BENCH_USER: &str = "bench";

/// Redis, the identity endpoint, and where things are.
pub struct Rig {
    /// The repository root: the function app's root for the handler.
    pub root: PathBuf,
    /// The throw-away CA (its file is `SSL_CERT_FILE`).
    pub pki: Pki,
    /// TLS `redis-server` with ACL users.
    pub redis: RedisServer,
    /// The identity endpoint the servers under test use (1 h tokens).
    pub identity: IdentityEndpoint,
    /// Password of [`BENCH_USER`].
    pub bench_password: String,
    /// Runs the stand-ins' tasks; the benchmark itself is synchronous. Last,
    /// so it is dropped after the stand-ins.
    pub rt: tokio::runtime::Runtime,
}

impl Rig {
    /// Starts Redis and the identity endpoint, adds the benchmark's ACL user
    /// and stores a value under every key of the key space.
    pub fn start(root: &Path) -> anyhow::Result<Rig> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let pki = Pki::generate()?;
        // Spawned from this (the main) thread, which outlives it: if the
        // bench dies without cleaning up, the server gets SIGTERM.
        let redis = rt.block_on(RedisServer::start_with(&pki, RedisOptions { die_with_parent: true }))?;
        let identity = rt.block_on(Self::identity_on(&redis, Duration::from_secs(3600)))?;
        let bench_password = format!("bench-{}", std::process::id());
        rt.block_on(redis.admin().acl_add_password(BENCH_USER, &bench_password))?;
        rt.block_on(async {
            let mut pipe = redis::pipe();
            for i in 0..KEYSPACE {
                pipe.cmd("SET").arg(key(i)).arg("x".repeat(VALUE_BYTES)).ignore();
            }
            redis.admin().cmd::<()>(&redis::cmd("FLUSHALL")).await?;
            let mut conn = redis.admin().connection().await?;
            pipe.query_async::<()>(&mut conn).await?;
            anyhow::Ok(())
        })?;
        Ok(Rig {
            root: root.to_owned(),
            pki,
            redis,
            identity,
            bench_password,
            rt,
        })
    }

    /// Another identity endpoint for the same identity, minting tokens of `lifetime`.
    pub fn identity_with_lifetime(&self, lifetime: Duration) -> anyhow::Result<IdentityEndpoint> {
        self.rt.block_on(Self::identity_on(&self.redis, lifetime))
    }

    async fn identity_on(redis: &RedisServer, lifetime: Duration) -> anyhow::Result<IdentityEndpoint> {
        IdentityEndpoint::start(IdentityConfig {
            redis: Some(redis.admin().clone()),
            token_lifetime: lifetime,
            ..IdentityConfig::default()
        })
        .await
    }

    /// Connections the identity's user has open on Redis now.
    pub fn identity_connections(&self) -> anyhow::Result<usize> {
        let oid = self.identity.oid().to_owned();
        self.user_connections(&oid)
    }

    /// Connections `user` has open on Redis now.
    pub fn user_connections(&self, user: &str) -> anyhow::Result<usize> {
        let clients = self.rt.block_on(self.redis.admin().client_list())?;
        Ok(clients.iter().filter(|c| c.user == user).count())
    }

    /// The settings both servers under test read, pointing at `identity`.
    pub fn app_settings(&self, identity: &IdentityEndpoint, refresh_offset_s: u64) -> Vec<(String, String)> {
        let mut env = vec![
            ("Redis__redisHostName".to_owned(), "127.0.0.1".to_owned()),
            ("Redis__port".to_owned(), self.redis.tls_port().to_string()),
            (
                "Redis__tokenRefreshOffsetSeconds".to_owned(),
                refresh_offset_s.to_string(),
            ),
            ("SSL_CERT_FILE".to_owned(), self.pki.ca_path.display().to_string()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        env.extend(identity.env());
        env
    }

    /// The floor's settings: the same Redis, port and CA as
    /// [`Rig::app_settings`], and [`BENCH_USER`]'s password in place of an
    /// identity (the floor authenticates once and never refreshes).
    pub fn floor_settings(&self) -> Vec<(String, String)> {
        [
            ("Redis__redisHostName", "127.0.0.1".to_owned()),
            ("Redis__port", self.redis.tls_port().to_string()),
            ("SSL_CERT_FILE", self.pki.ca_path.display().to_string()),
            ("FLOOR_REDIS_USER", BENCH_USER.to_owned()),
            ("FLOOR_REDIS_PASSWORD", self.bench_password.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// The `i`th key of the key space.
pub fn key(i: u32) -> String {
    format!("key:{i:012}")
}

/// What to start.
#[derive(Debug, Clone)]
pub enum Program {
    /// The `handler` binary.
    Handler(PathBuf),
    /// The `floor` binary (`bench/floor`): hyper and one TLS Redis
    /// connection, nothing else.
    Floor(PathBuf),
    /// The Python peer: the venv's interpreter and `app.py`.
    Python {
        /// `target/bench-venv/bin/python`.
        interpreter: PathBuf,
        /// `bench/python_peer/app.py`.
        script: PathBuf,
    },
}

/// A server under test, started by `devhost`'s Functions host code as the
/// host starts a custom handler (with only the settings given in its
/// environment, readiness polled every millisecond), killed on drop. Its
/// output is read and thrown away as it comes (as the host reads a
/// handler's stdout), keeping a tail for error messages.
pub struct Server {
    process: HandlerProcess,
    /// The port it listens on.
    pub port: u16,
}

impl Server {
    /// Starts `program` with the Functions host's variables and `settings`,
    /// in the app root, and waits until `GET /` answers, polling every
    /// millisecond from this thread.
    pub fn spawn_ready(program: &Program, root: &Path, settings: &[(String, String)]) -> anyhow::Result<Server> {
        let (binary, args) = match program {
            Program::Handler(bin) | Program::Floor(bin) => (bin, vec![]),
            Program::Python { interpreter, script } => (interpreter, vec![script.display().to_string()]),
        };
        let opts = SpawnOptions {
            args,
            clean_env: true,
            keep_output: Some(16 * 1024),
            no_ready_wait: true,
            die_with_parent: true,
            ..SpawnOptions::default()
        };
        // From this (the main) thread, which outlives the server: a bench
        // that aborts leaves no server behind.
        let process = runtime()
            .block_on(HandlerProcess::spawn_with(binary, root, settings, &opts))
            .with_context(|| format!("starting {program:?}"))?;
        let mut server = Server {
            port: process.port(),
            process,
        };
        // Any answer: readiness, as the host reads it.
        server.poll(Duration::from_secs(30), "/", |_| true)?;
        Ok(server)
    }

    /// Starts `program` and waits until `GET /` answers and a cache request
    /// answers 200: `GET /api/ping` (token fetched, connected), or for the
    /// floor, which has no such route, `GET` of the first key.
    pub fn start(program: &Program, root: &Path, settings: &[(String, String)]) -> anyhow::Result<Server> {
        let mut server = Self::spawn_ready(program, root, settings)?;
        let probe = match program {
            Program::Floor(_) => format!("/api/cache/{}", key(0)),
            _ => "/api/ping".to_owned(),
        };
        server.poll(Duration::from_secs(30), &probe, |s| s == 200)?;
        Ok(server)
    }

    /// Just before the process was spawned.
    pub fn started(&self) -> Instant {
        self.process.started()
    }

    /// Polls `GET path` every millisecond until `ok(status)`; fails if the
    /// process exits or `limit` passes.
    pub fn poll(&mut self, limit: Duration, path: &str, ok: impl Fn(u16) -> bool) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if client::status_once(self.port, "GET", path).is_ok_and(&ok) {
                return Ok(());
            }
            if let Some(status) = self.process.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                bail!("the server exited ({status}); its output ends:\n{}", self.tail());
            }
            if start.elapsed() > limit {
                bail!(
                    "no good answer to GET {path} within {limit:?}; output ends:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `VmRSS` and `VmHWM` (peak) from `/proc/<pid>/status`, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .with_context(|| format!("no {name} in /proc/{}/status", self.pid()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// The resident file pages of the server's own binary and of its other
    /// files (shared libraries), from `/proc/<pid>/smaps`, in KiB: what of
    /// its RSS the kernel shares with the page cache rather than allocated
    /// for it.
    pub fn file_rss_kib(&self) -> anyhow::Result<FileRss> {
        let pid = self.pid();
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
        Ok(file_rss(&smaps, &exe.to_string_lossy()))
    }

    /// The last few KiB the server wrote to stdout and to stderr.
    pub fn tail(&self) -> String {
        format!("{}{}", self.process.stdout(), self.process.stderr())
    }
}

/// Resident file pages of a process, KiB ([`Server::file_rss_kib`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileRss {
    /// Of the program's own binary.
    pub binary: u64,
    /// Of every other file it maps (shared libraries).
    pub libraries: u64,
}

/// Sums the `Rss:` of each mapping in `smaps` by what it maps: the binary
/// at `exe`, another file, or memory (`[heap]`, `[stack]`, anonymous).
pub fn file_rss(smaps: &str, exe: &str) -> FileRss {
    let mut out = FileRss::default();
    let mut path = "";
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's header: range, perms, offset, device, inode, path.
            path = line.splitn(6, char::is_whitespace).nth(5).unwrap_or("").trim();
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if path == exe {
                out.binary += kib;
            } else if path.starts_with('/') {
                out.libraries += kib;
            }
        }
    }
    out
}

/// Runs the servers' output readers (one thread).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary's mappings, other files' and memory are told apart by
    /// the path each mapping's header ends with.
    #[test]
    fn file_rss_sums_the_binary_and_the_other_files() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 fe:01 42                         /srv/handler
Size:               1024 kB
Rss:                1000 kB
55d0c0100000-55d0c0200000 r--p 00100000 fe:01 42                         /srv/handler
Rss:                 200 kB
55d0c0300000-55d0c0400000 rw-p 00000000 00:00 0                          [heap]
Rss:                 300 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0 
Rss:                 400 kB
7f0000200000-7f0000300000 r-xp 00000000 fe:01 7                          /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                  50 kB
VmFlags: rd ex mr mw me
";
        assert_eq!(
            file_rss(smaps, "/srv/handler"),
            FileRss {
                binary: 1200,
                libraries: 50
            }
        );
    }
}
