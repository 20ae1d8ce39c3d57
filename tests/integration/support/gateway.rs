//! An Entra ID–enforcing stand-in for Azure's Redis front end.
//!
//! A TLS listener on loopback in front of a real `redis-server`. It reads
//! the client's RESP command stream and follows what AZURE-FACTS.md ("Entra
//! ID and Azure Redis") says Azure does:
//!
//! - `AUTH <object id> <access token>` (and `HELLO … AUTH <user> <token>`)
//!   is checked: signature, audience, not expired, `oid` equal to the user.
//!   A valid one is rewritten in-stream to the backend's own credentials,
//!   so pipelined replies stay in order; an invalid one is rewritten to a
//!   wrong password so the backend answers a real `WRONGPASS`.
//! - "The server closes a connection when the token it authenticated with
//!   expires, unless a new valid token was sent with AUTH before that": each
//!   connection's expiry is remembered and the connection is closed when it
//!   passes without a newer valid AUTH.
//! - A lost access policy (`set_reject_all`) makes every AUTH a WRONGPASS;
//!   a connection already authenticated stays open on its own token.
//! - A front end failing on each try (`cut_on`) closes any connection that
//!   sends the named command, before forwarding it.
//!
//! It counts connections, AUTHs accepted and rejected, closes for expiry
//! and cuts.

use devhost::pki::Pki;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Checks a token for a user; gives its expiry (Unix seconds) when valid.
pub type Verify = Arc<dyn Fn(&str, &str) -> Result<i64, String> + Send + Sync>;

/// What the gateway has seen.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Client connections accepted.
    pub connections: AtomicUsize,
    /// Client connections open now.
    pub open: AtomicUsize,
    /// AUTHs with a valid token.
    pub auth_accepted: AtomicUsize,
    /// AUTHs refused (bad, expired, wrong user, or policy removed).
    pub auth_rejected: AtomicUsize,
    /// Connections closed because their token expired.
    pub expiry_closes: AtomicUsize,
    /// Connections cut on the command named by [`Gateway::cut_on`].
    pub cuts: AtomicUsize,
}

struct Shared {
    backend_port: u16,
    backend_password: String,
    verify: Verify,
    reject_all: AtomicBool,
    /// A command name (upper case) whose arrival cuts the connection.
    cut_on: std::sync::Mutex<Option<Vec<u8>>>,
    close_all: Notify,
    stats: GatewayStats,
    /// Local addresses (`ip:port`) of the open backend connections: what
    /// `CLIENT LIST` on the backend shows as each client's `addr`.
    backend_addrs: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// A running gateway; stops accepting when dropped.
pub struct Gateway {
    port: u16,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.close_all.notify_waiters();
    }
}

impl Gateway {
    /// Listens on a free loopback port with the Pki's server certificate and
    /// forwards to `redis-server`'s plain port as `default`/`backend_password`.
    pub async fn start(pki: &Pki, backend_port: u16, backend_password: &str, verify: Verify) -> Gateway {
        azure_redis_handler::tls::install_crypto_provider();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert_path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key_path).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            backend_port,
            backend_password: backend_password.to_owned(),
            verify,
            reject_all: AtomicBool::new(false),
            cut_on: std::sync::Mutex::new(None),
            close_all: Notify::new(),
            stats: GatewayStats::default(),
            backend_addrs: std::sync::Mutex::default(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, s).await;
                    }
                });
            }
        });
        Gateway { port, shared, task }
    }

    /// The TLS port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.shared.stats
    }

    /// Refuse every AUTH (the identity lost its access policy), or stop refusing.
    pub fn set_reject_all(&self, reject: bool) {
        self.shared.reject_all.store(reject, Ordering::SeqCst);
    }

    /// Cuts any connection, before forwarding, when it sends `command` (a
    /// front end failing on each try), or stops cutting with `None`.
    pub fn cut_on(&self, command: Option<&str>) {
        *self.shared.cut_on.lock().unwrap() = command.map(|c| c.to_ascii_uppercase().into_bytes());
    }

    /// Closes every open client connection (a failover, a patch).
    pub fn close_all(&self) {
        self.shared.close_all.notify_waiters();
    }

    /// The backend's port (`redis-server`'s plain port).
    pub fn backend_port(&self) -> u16 {
        self.shared.backend_port
    }

    /// The `ip:port` each open client connection's backend connection comes
    /// from: the `addr` of its entry in the backend's `CLIENT LIST`, which
    /// tells the clients behind this gateway from admin connections.
    pub fn backend_addrs(&self) -> Vec<String> {
        self.shared.backend_addrs.lock().unwrap().iter().cloned().collect()
    }
}

/// Milliseconds since the Unix epoch: expiry is enforced to the
/// millisecond, so a handler that re-AUTHs even just after `exp` is closed.
fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn serve(client: tokio_rustls::server::TlsStream<TcpStream>, s: Arc<Shared>) {
    s.stats.connections.fetch_add(1, Ordering::SeqCst);
    s.stats.open.fetch_add(1, Ordering::SeqCst);
    if let Ok(backend) = TcpStream::connect(("127.0.0.1", s.backend_port)).await {
        let local = backend.local_addr().map(|a| a.to_string()).unwrap_or_default();
        s.backend_addrs.lock().unwrap().insert(local.clone());
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let (mut backend_rd, mut backend_wr) = backend.into_split();
        // 0 = not authenticated with a token yet.
        let expiry = Arc::new(AtomicI64::new(0));
        let changed = Arc::new(Notify::new());
        let upstream = commands(&mut client_rd, &mut backend_wr, &s, &expiry, &changed);
        let downstream = tokio::io::copy(&mut backend_rd, &mut client_wr);
        let expired = watch_expiry(&expiry, &changed);
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
            () = expired => { s.stats.expiry_closes.fetch_add(1, Ordering::SeqCst); }
            () = s.close_all.notified() => {}
        }
        let _ = client_wr.shutdown().await;
        s.backend_addrs.lock().unwrap().remove(&local);
    }
    s.stats.open.fetch_sub(1, Ordering::SeqCst);
}

/// Resolves when the connection's token has expired with no newer AUTH:
/// at its `exp` (Unix seconds) exactly.
async fn watch_expiry(expiry: &AtomicI64, changed: &Notify) {
    loop {
        let exp = expiry.load(Ordering::SeqCst);
        let wait = if exp == 0 {
            Duration::from_secs(3600)
        } else {
            let left_ms = exp * 1000 - unix_now_ms();
            if left_ms <= 0 {
                return;
            }
            Duration::from_millis(left_ms as u64)
        };
        let _ = tokio::time::timeout(wait, changed.notified()).await;
    }
}

/// Reads commands from the client, rewrites AUTH and HELLO AUTH, forwards.
async fn commands<R, W>(
    client: &mut R,
    backend: &mut W,
    s: &Shared,
    expiry: &AtomicI64,
    changed: &Notify,
) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::with_capacity(buf.len());
        let mut at = 0;
        while let Some((len, args)) = parse_command(&buf[at..]) {
            let frame = &buf[at..at + len];
            if cut_here(&args, s) {
                s.stats.cuts.fetch_add(1, Ordering::SeqCst);
                backend.write_all(&out).await?;
                return Ok(());
            }
            match rewrite(&args, s, expiry) {
                Some(rewritten) => {
                    out.extend_from_slice(&rewritten);
                    changed.notify_waiters();
                }
                None => out.extend_from_slice(frame),
            }
            at += len;
        }
        buf.drain(..at);
        backend.write_all(&out).await?;
    }
}

/// Whether this command is the one the test asked to cut connections on.
fn cut_here(args: &[Vec<u8>], s: &Shared) -> bool {
    let cut_on = s.cut_on.lock().unwrap();
    match (cut_on.as_deref(), args.first()) {
        (Some(name), Some(cmd)) => cmd.eq_ignore_ascii_case(name),
        _ => false,
    }
}

/// A rewritten frame for AUTH/HELLO-with-AUTH, or `None` to pass it on.
fn rewrite(args: &[Vec<u8>], s: &Shared, expiry: &AtomicI64) -> Option<Vec<u8>> {
    let name = args.first()?.to_ascii_uppercase();
    // Where the user name (if any) and the token stand.
    let (user_at, token_at) = match name.as_slice() {
        b"AUTH" if args.len() == 3 => (Some(1), 2),
        b"AUTH" if args.len() == 2 => (None, 1),
        b"HELLO" => {
            let i = args.iter().position(|a| a.eq_ignore_ascii_case(b"AUTH"))?;
            if args.len() < i + 3 {
                return None;
            }
            (Some(i + 1), i + 2)
        }
        _ => return None,
    };
    let user = user_at.map_or(&b""[..], |i| &args[i][..]);
    let verdict = if s.reject_all.load(Ordering::SeqCst) {
        Err("access policy removed".to_owned())
    } else {
        (s.verify)(
            &String::from_utf8_lossy(user),
            &String::from_utf8_lossy(&args[token_at]),
        )
    };
    let password = match verdict {
        Ok(exp) => {
            s.stats.auth_accepted.fetch_add(1, Ordering::SeqCst);
            expiry.store(exp, Ordering::SeqCst);
            s.backend_password.as_bytes().to_vec()
        }
        Err(_) => {
            s.stats.auth_rejected.fetch_add(1, Ordering::SeqCst);
            b"rejected-by-gateway".to_vec()
        }
    };
    let mut parts = args.to_vec();
    parts[token_at] = password;
    match user_at {
        Some(u) => parts[u] = b"default".to_vec(),
        None => parts.insert(token_at, b"default".to_vec()),
    }
    Some(encode(&parts))
}

fn encode(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one RESP command (an array of bulk strings, or an inline line):
/// its length in bytes and its arguments, or `None` if incomplete.
pub fn parse_command(buf: &[u8]) -> Option<(usize, Vec<Vec<u8>>)> {
    let line_end = |from: usize| buf[from..].windows(2).position(|w| w == b"\r\n").map(|p| from + p);
    if buf.first() != Some(&b'*') {
        let end = line_end(0)?;
        let args = buf[..end]
            .split(|b| *b == b' ')
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        return Some((end + 2, args));
    }
    let end = line_end(0)?;
    let count: usize = std::str::from_utf8(&buf[1..end]).ok()?.parse().ok()?;
    let mut at = end + 2;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        if buf.get(at) != Some(&b'$') {
            return None;
        }
        let end = line_end(at)?;
        let len: usize = std::str::from_utf8(&buf[at + 1..end]).ok()?.parse().ok()?;
        let start = end + 2;
        if buf.len() < start + len + 2 {
            return None;
        }
        args.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    Some((at, args))
}
