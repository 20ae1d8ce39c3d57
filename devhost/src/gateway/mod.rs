//! A stand-in for Azure's Redis front end: Entra ID enforcement, and the
//! faults of Azure's routine maintenance, on demand.
//!
//! A TLS listener on loopback in front of a real `redis-server`. It reads
//! the client's RESP commands and the server's replies and follows what
//! docs/azure.md says Azure does:
//!
//! - "Entra ID and Azure Redis": `AUTH <object id> <access token>` (and
//!   `HELLO … AUTH <user> <token>`) is checked: signature, audience, not
//!   expired, `oid` equal to the user. A valid one is rewritten in-stream to
//!   the backend's own credentials (or passed on unchanged when the backend
//!   itself knows the token as an ACL password, as `devhost start`'s
//!   does), so pipelined replies stay in order; an invalid one is rewritten
//!   to a wrong password so the backend answers a real `WRONGPASS`. "The
//!   server closes a connection when the token it authenticated with
//!   expires, unless a new valid token was sent with AUTH before that":
//!   each connection's expiry is remembered and the connection is closed
//!   when it passes. A lost access policy ([`Gateway::set_reject_all`])
//!   makes every AUTH a WRONGPASS.
//! - "Maintenance, failover and notifications": a node closes its
//!   connections ([`Gateway::close_all`]); a connection is cut right after
//!   a command reached Redis, its answer lost ([`Gateway::cut_after`]) or
//!   before it did ([`Gateway::cut_on`]); connections go silent without a
//!   FIN, as when a VM is gone ([`Gateway::go_silent`]); a retired address
//!   that accepts nothing ([`Gateway::set_refuse`]); replies slowed
//!   ([`Gateway::set_reply_delay`]); `AzureRedisEvents` published
//!   ([`Gateway::publish`]) and RESP3 push messages (`MOVING`,
//!   `MIGRATING`, ...) injected between replies ([`Gateway::inject`]),
//!   which `redis-server` 7 cannot send itself.
//!
//! It counts connections, AUTHs accepted and rejected, closes for expiry,
//! cuts, silences, injections, the commands it saw, and connections the
//! client closed.

pub mod resp;

use crate::pki::ServerCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// Checks a token for a user; gives its expiry (Unix seconds) when valid.
pub type Verify = Arc<dyn Fn(&str, &str) -> Result<i64, String> + Send + Sync>;

/// What the gateway has seen.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Client connections accepted (not counting refused ones).
    pub connections: AtomicUsize,
    /// Client connections open now.
    pub open: AtomicUsize,
    /// AUTHs with a valid token.
    pub auth_accepted: AtomicUsize,
    /// AUTHs refused (bad, expired, wrong user, or policy removed).
    pub auth_rejected: AtomicUsize,
    /// Connections closed because their token expired.
    pub expiry_closes: AtomicUsize,
    /// Connections cut before forwarding the command named by [`Gateway::cut_on`].
    pub cuts: AtomicUsize,
    /// Connections cut after the command named by [`Gateway::cut_after`]
    /// ran, its answer thrown away.
    pub cuts_after: AtomicUsize,
    /// Connections accepted and dropped at once ([`Gateway::set_refuse`]).
    pub refused: AtomicUsize,
    /// Connections made silent ([`Gateway::go_silent`]).
    pub silenced: AtomicUsize,
    /// Push frames written to clients ([`Gateway::inject`]).
    pub injected: AtomicUsize,
    /// Connections the client closed (EOF from its side).
    pub closed_by_client: AtomicUsize,
}

/// How to start a [`Gateway`].
#[derive(Clone)]
pub struct GatewayConfig {
    /// `redis-server`'s plain port.
    pub backend_port: u16,
    /// The backend's `default` password: AUTH is rewritten to it, and
    /// [`Gateway::publish`] uses it.
    pub backend_password: String,
    /// Which tokens are valid.
    pub verify: Verify,
    /// Pass a valid AUTH on unchanged (the backend knows the token as an
    /// ACL password) instead of rewriting it to `default`.
    pub pass_through_auth: bool,
    /// The certificate the gateway presents.
    pub cert: ServerCert,
}

/// Cutting connections right after a command ran.
struct CutAfter {
    /// Command names (upper case).
    names: Vec<Vec<u8>>,
    /// Cut every `every`th of them.
    every: u64,
    /// Seen so far.
    seen: u64,
    /// Cuts left (`None`: no limit).
    left: Option<u64>,
}

/// One open client connection, as the gateway's controls reach it.
struct ConnHandle {
    inject: mpsc::UnboundedSender<Vec<u8>>,
    state: Arc<ConnState>,
}

/// What the two directions of one connection share.
#[derive(Default)]
struct ConnState {
    /// Relay nothing more, either way, and send no FIN.
    silent: AtomicBool,
    /// Replies the client expects so far (one per command forwarded, one
    /// per channel of a subscription command).
    expected: AtomicU64,
    /// Close when this reply (1-based) comes back, without relaying it.
    cut_at: AtomicU64,
    /// The token's expiry, Unix seconds; 0 before any AUTH.
    expiry: AtomicI64,
    /// A new AUTH changed the expiry.
    changed: Notify,
}

/// What the gateway's connections and its owner share: the faults armed,
/// the open connections and the counts.
struct GatewayState {
    config: GatewayConfig,
    reject_all: AtomicBool,
    refuse: AtomicBool,
    /// A command name (upper case) whose arrival cuts the connection.
    cut_on: Mutex<Option<Vec<u8>>>,
    /// Which commands to cut the connection after, and when.
    cut_after: Mutex<Option<CutAfter>>,
    reply_delay: Mutex<Option<Duration>>,
    /// An error the next commands are answered with instead of running,
    /// and how many more.
    answer_with: Mutex<Option<(String, u64)>>,
    close_all: Notify,
    conns: Mutex<HashMap<u64, ConnHandle>>,
    next_id: AtomicU64,
    stats: GatewayStats,
    /// Commands seen, by upper-case name.
    commands: Mutex<BTreeMap<String, u64>>,
    /// Local addresses (`ip:port`) of the open backend connections: what
    /// `CLIENT LIST` on the backend shows as each client's `addr`.
    backend_addrs: Mutex<std::collections::BTreeSet<String>>,
}

/// A running gateway; stops accepting and closes its connections when dropped.
pub struct Gateway {
    port: u16,
    shared: Arc<GatewayState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.close_all.notify_waiters();
    }
}

impl Gateway {
    /// Listens on a free loopback port with `pki`'s server certificate and
    /// forwards to `redis-server`'s plain port as `default`/`backend_password`.
    pub async fn start(pki: &crate::pki::Pki, backend_port: u16, backend_password: &str, verify: Verify) -> Gateway {
        Self::start_with(GatewayConfig {
            backend_port,
            backend_password: backend_password.to_owned(),
            verify,
            pass_through_auth: false,
            cert: pki.server_cert(),
        })
        .await
        .expect("a gateway on a free loopback port")
    }

    /// Listens on a free loopback port as `config` says.
    pub async fn start_with(config: GatewayConfig) -> anyhow::Result<Gateway> {
        Self::start_on(config, 0).await
    }

    /// Listens on `port` of 127.0.0.1 (0: a free one) as `config` says.
    pub async fn start_on(config: GatewayConfig, port: u16) -> anyhow::Result<Gateway> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&config.cert.cert_path)?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&config.cert.key_path)?;
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(GatewayState {
            config,
            reject_all: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            cut_on: Mutex::new(None),
            cut_after: Mutex::new(None),
            reply_delay: Mutex::new(None),
            answer_with: Mutex::new(None),
            close_all: Notify::new(),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stats: GatewayStats::default(),
            commands: Mutex::new(BTreeMap::new()),
            backend_addrs: Mutex::default(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if s.refuse.load(Ordering::SeqCst) {
                    s.stats.refused.fetch_add(1, Ordering::SeqCst);
                    drop(tcp);
                    continue;
                }
                let (acceptor, s) = (acceptor.clone(), s.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, s).await;
                    }
                });
            }
        });
        Ok(Gateway { port, shared, task })
    }

    /// The TLS port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How it was started (to start another like it).
    pub fn config(&self) -> &GatewayConfig {
        &self.shared.config
    }

    /// Counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.shared.stats
    }

    /// How many times a command (any case) has been seen.
    pub fn commands_seen(&self, command: &str) -> u64 {
        let commands = self.shared.commands.lock().unwrap();
        commands.get(&command.to_ascii_uppercase()).copied().unwrap_or(0)
    }

    /// Refuse every AUTH (the identity lost its access policy), or stop refusing.
    pub fn set_reject_all(&self, reject: bool) {
        self.shared.reject_all.store(reject, Ordering::SeqCst);
    }

    /// Accept connections and drop them at once, unanswered (an address
    /// whose node is gone), or serve them again.
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Cuts any connection, before forwarding, when it sends `command` (a
    /// front end failing on each try), or stops cutting with `None`.
    pub fn cut_on(&self, command: Option<&str>) {
        *self.shared.cut_on.lock().unwrap() = command.map(|c| c.to_ascii_uppercase().into_bytes());
    }

    /// Cuts a connection right after one of `commands` reached Redis and
    /// ran: its answer is read from Redis and thrown away, and the
    /// connection is closed; every `nth` time one of them is seen (1: every
    /// time). An empty list stops cutting.
    pub fn cut_after(&self, commands: &[&str], nth: u64) {
        self.set_cut_after(commands, nth, None);
    }

    /// Like [`Gateway::cut_after`], but only `times` cuts, then no more: a
    /// storm of cuts that ends, as a maintenance event's does.
    pub fn cut_after_times(&self, commands: &[&str], nth: u64, times: u64) {
        self.set_cut_after(commands, nth, Some(times));
    }

    /// Like [`Gateway::cut_after`] every time, but only the next `times` of
    /// `commands`.
    pub fn cut_after_next(&self, commands: &[&str], times: u64) {
        self.set_cut_after(commands, 1, Some(times));
    }

    fn set_cut_after(&self, commands: &[&str], every: u64, left: Option<u64>) {
        *self.shared.cut_after.lock().unwrap() = (!commands.is_empty()).then(|| CutAfter {
            names: commands.iter().map(|c| c.to_ascii_uppercase().into_bytes()).collect(),
            every: every.max(1),
            seen: 0,
            left,
        });
    }

    /// Holds every reply this long before relaying it (`None`: no delay).
    pub fn set_reply_delay(&self, delay: Option<Duration>) {
        *self.shared.reply_delay.lock().unwrap() = delay;
    }

    /// Answers the next `count` commands (not the handshake's `HELLO`,
    /// `AUTH`, `CLIENT`, nor `SUBSCRIBE`) with the error `reply` instead of
    /// running them, as a node loading its data (`LOADING ...`), a replica
    /// (`READONLY ...`) or a cluster failing over (`TRYAGAIN ...`,
    /// `CLUSTERDOWN ...`) answers. In order with the other replies: Redis
    /// itself gives the error (a script returning it).
    pub fn answer_with(&self, reply: &str, count: u64) {
        *self.shared.answer_with.lock().unwrap() = Some((reply.to_owned(), count));
    }

    /// Closes every open client connection (a failover, a patch).
    pub fn close_all(&self) {
        self.shared.close_all.notify_waiters();
    }

    /// Every connection open now stops relaying, both ways, and stays
    /// open without a FIN (a VM gone, a partition); new connections are
    /// served. Returns how many went silent.
    pub fn go_silent(&self) -> usize {
        let conns = self.shared.conns.lock().unwrap();
        for conn in conns.values() {
            conn.state.silent.store(true, Ordering::SeqCst);
        }
        self.shared.stats.silenced.fetch_add(conns.len(), Ordering::SeqCst);
        conns.len()
    }

    /// Writes `frame` (a RESP3 push, see [`resp::encode_push`]) to every
    /// open, not silent connection, between two replies. Returns how many
    /// connections it was queued for.
    pub fn inject(&self, frame: &[u8]) -> usize {
        let conns = self.shared.conns.lock().unwrap();
        conns
            .values()
            .filter(|c| !c.state.silent.load(Ordering::SeqCst))
            .filter(|c| c.inject.send(frame.to_vec()).is_ok())
            .count()
    }

    /// `PUBLISH channel message` on the backend (on a cluster, every node
    /// relays it to its subscribers); returns how many received it.
    pub async fn publish(&self, channel: &str, message: &str) -> anyhow::Result<usize> {
        let mut conn = self.backend().await?;
        Ok(redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await?)
    }

    /// How many clients of the backend subscribe to `channel`.
    pub async fn subscribers(&self, channel: &str) -> anyhow::Result<usize> {
        let mut conn = self.backend().await?;
        let (_, n): (String, usize) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    /// An admin connection to the backend, as `default`.
    async fn backend(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let url = format!(
            "redis://default:{}@127.0.0.1:{}/",
            self.shared.config.backend_password, self.shared.config.backend_port
        );
        Ok(redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?)
    }

    /// The backend's port (`redis-server`'s plain port).
    pub fn backend_port(&self) -> u16 {
        self.shared.config.backend_port
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

async fn serve(client: tokio_rustls::server::TlsStream<TcpStream>, s: Arc<GatewayState>) {
    s.stats.connections.fetch_add(1, Ordering::SeqCst);
    s.stats.open.fetch_add(1, Ordering::SeqCst);
    if let Ok(backend) = TcpStream::connect(("127.0.0.1", s.config.backend_port)).await {
        let id = s.next_id.fetch_add(1, Ordering::SeqCst);
        let local = backend.local_addr().map(|a| a.to_string()).unwrap_or_default();
        s.backend_addrs.lock().unwrap().insert(local.clone());
        let state = Arc::new(ConnState::default());
        let (inject, injected) = mpsc::unbounded_channel();
        s.conns.lock().unwrap().insert(
            id,
            ConnHandle {
                inject,
                state: state.clone(),
            },
        );
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let (mut backend_rd, mut backend_wr) = backend.into_split();
        let upstream = commands(&mut client_rd, &mut backend_wr, &s, &state);
        let downstream = replies(&mut backend_rd, &mut client_wr, injected, &s, &state);
        let expired = watch_expiry(&state.expiry, &state.changed);
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
            () = expired => { s.stats.expiry_closes.fetch_add(1, Ordering::SeqCst); }
            () = s.close_all.notified() => {}
        }
        let _ = client_wr.shutdown().await;
        s.conns.lock().unwrap().remove(&id);
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

/// Reads commands from the client, rewrites AUTH and HELLO AUTH, forwards;
/// cuts where asked. Ends when the client closes or a cut ends it.
async fn commands<R, W>(client: &mut R, backend: &mut W, s: &GatewayState, state: &ConnState) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // A client that closes without TLS's close_notify is an error
        // here; either way it closed.
        let n = match client.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                s.stats.closed_by_client.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            Ok(n) => n,
        };
        if state.silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::with_capacity(buf.len());
        let mut at = 0;
        while let Some((len, args)) = resp::parse_command(&buf[at..]) {
            let frame = &buf[at..at + len];
            let name = args.first().map(|a| a.to_ascii_uppercase()).unwrap_or_default();
            *s.commands
                .lock()
                .unwrap()
                .entry(String::from_utf8_lossy(&name).into_owned())
                .or_insert(0) += 1;
            if s.cut_on.lock().unwrap().as_deref() == Some(name.as_slice()) {
                s.stats.cuts.fetch_add(1, Ordering::SeqCst);
                backend.write_all(&out).await?;
                return Ok(());
            }
            let replies = resp::replies_for(&args);
            let expected = state.expected.fetch_add(replies, Ordering::SeqCst) + replies;
            if let Some(error) = error_instead(&name, s) {
                out.extend_from_slice(&error);
                at += len;
                continue;
            }
            match rewrite(&args, s, state) {
                Some(rewritten) => {
                    out.extend_from_slice(&rewritten);
                    state.changed.notify_waiters();
                }
                None => out.extend_from_slice(frame),
            }
            at += len;
            if cut_after_here(&name, s) {
                // Forward it, let Redis run it, and read nothing more: the
                // reply side closes the connection at its answer.
                state.cut_at.store(expected, Ordering::SeqCst);
                backend.write_all(&out).await?;
                backend.flush().await?;
                std::future::pending::<()>().await;
            }
        }
        buf.drain(..at);
        backend.write_all(&out).await?;
    }
}

/// The command that makes Redis answer the armed error, if this command
/// (upper case) is to get it.
fn error_instead(name: &[u8], s: &GatewayState) -> Option<Vec<u8>> {
    if matches!(name, b"HELLO" | b"AUTH" | b"CLIENT" | b"SUBSCRIBE" | b"ASKING") {
        return None;
    }
    let mut armed = s.answer_with.lock().unwrap();
    let (reply, left) = armed.as_mut()?;
    let frame = resp::encode(&[
        b"EVAL".to_vec(),
        b"return redis.error_reply(ARGV[1])".to_vec(),
        b"0".to_vec(),
        reply.as_bytes().to_vec(),
    ]);
    *left -= 1;
    if *left == 0 {
        *armed = None;
    }
    Some(frame)
}

/// Whether this command (upper case) is one to cut the connection after.
fn cut_after_here(name: &[u8], s: &GatewayState) -> bool {
    let mut armed = s.cut_after.lock().unwrap();
    let Some(cut) = armed.as_mut() else {
        return false;
    };
    if !cut.names.iter().any(|n| n.as_slice() == name) {
        return false;
    }
    cut.seen += 1;
    if cut.seen % cut.every != 0 {
        return false;
    }
    if let Some(left) = cut.left.as_mut() {
        *left -= 1;
        if *left == 0 {
            *armed = None;
        }
    }
    true
}

/// Relays replies to the client a whole frame at a time, so pushes can be
/// injected between them; closes the connection at the reply of a
/// command cut after it ran.
async fn replies<R, W>(
    backend: &mut R,
    client: &mut W,
    mut injected: mpsc::UnboundedReceiver<Vec<u8>>,
    s: &GatewayState,
    state: &ConnState,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut replies: u64 = 0;
    loop {
        tokio::select! {
            frame = injected.recv(), if !injected.is_closed() => {
                let Some(frame) = frame else { continue };
                if !state.silent.load(Ordering::SeqCst) {
                    client.write_all(&frame).await?;
                    s.stats.injected.fetch_add(1, Ordering::SeqCst);
                }
            }
            n = backend.read(&mut chunk) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                if state.silent.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                buf.extend_from_slice(&chunk[..n]);
                let mut out = Vec::with_capacity(buf.len());
                let mut at = 0;
                while let Some(len) = resp::frame_len(&buf[at..]) {
                    let frame = &buf[at..at + len];
                    let is_reply = resp::push_kind(frame).is_none_or(|k| resp::push_is_reply(&k));
                    if is_reply {
                        replies += 1;
                        let cut_at = state.cut_at.load(Ordering::SeqCst);
                        if cut_at != 0 && replies == cut_at {
                            client.write_all(&out).await?;
                            s.stats.cuts_after.fetch_add(1, Ordering::SeqCst);
                            return Ok(());
                        }
                    }
                    out.extend_from_slice(frame);
                    at += len;
                }
                buf.drain(..at);
                let delay = *s.reply_delay.lock().unwrap();
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                client.write_all(&out).await?;
            }
        }
    }
}

/// A rewritten frame for AUTH/HELLO-with-AUTH, or `None` to pass it on.
fn rewrite(args: &[Vec<u8>], s: &GatewayState, state: &ConnState) -> Option<Vec<u8>> {
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
        (s.config.verify)(
            &String::from_utf8_lossy(user),
            &String::from_utf8_lossy(&args[token_at]),
        )
    };
    let password = match verdict {
        Ok(exp) => {
            s.stats.auth_accepted.fetch_add(1, Ordering::SeqCst);
            state.expiry.store(exp, Ordering::SeqCst);
            if s.config.pass_through_auth {
                return Some(resp::encode(args));
            }
            s.config.backend_password.as_bytes().to_vec()
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
    Some(resp::encode(&parts))
}
