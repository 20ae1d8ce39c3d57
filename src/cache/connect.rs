//! Opening one connection to one node: TCP with keepalive, TLS verified
//! against the configured host name, the handshake (`HELLO`/`AUTH`), and the
//! task that does the connection's I/O.
//!
//! Every connection, the configured endpoint's included, is made here, the
//! same way:
//!
//! - TCP keepalive on every socket (30 s idle, then every 10 s, 3 probes),
//!   as Microsoft advises Linux clients of Azure Redis, and on Linux a TCP
//!   user timeout, so a peer that vanished without a FIN cannot hold a
//!   socket for the kernel's default 15 minutes.
//! - TLS against `Redis__redisHostName`, whatever address is dialled: a
//!   cluster announces its nodes by IP (Azure Managed Redis on 85xx ports,
//!   clustered Premium on 1500N) while their certificates name the cache's
//!   host name, as StackExchange.Redis (`SslHost`) and go-redis
//!   (`TLSConfig.ServerName`) verify them. Verification is always on.
//! - RESP3 when maintenance notifications are on (pushes need it), with a
//!   push sender; RESP2 otherwise.
//! - The I/O task is ours ([`AbortOnDrop`]): aborting it fails every
//!   command in flight on the connection at once, which is how a connection
//!   found dead is abandoned.
//! - The time of the last read is kept ([`LastRead`]), so a command that
//!   times out can tell a silent connection (nothing came back for a while)
//!   from a slow command (other answers kept coming).
//! - While other commands are in flight, a write waits one turn of the
//!   runtime for more to join it ([`super::batch`]).

use super::batch::{InFlight, Turn};
use super::error::{classify, CacheError};
use super::Target;
use crate::secret::redact;
use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisConnectionInfo};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Idle time before the first keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel drops the connection.
const KEEPALIVE_PROBES: u32 = 3;

/// Aborts a spawned task when dropped.
#[derive(Debug)]
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Ends the task now: every command in flight on its connection fails.
    pub(super) fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A new connection, the task doing its I/O, when it last read, and its
/// commands in flight (which its invocations count).
pub(super) struct Opened {
    pub(super) conn: MultiplexedConnection,
    pub(super) driver: AbortOnDrop,
    pub(super) last_read: LastRead,
    pub(super) in_flight: InFlight,
}

/// When a connection last read anything: milliseconds since a
/// process-wide epoch, updated by the connection's I/O task.
#[derive(Debug, Clone, Default)]
pub(super) struct LastRead(Arc<AtomicU64>);

/// The epoch [`LastRead`] counts from.
fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

impl LastRead {
    fn new() -> Self {
        let last = LastRead::default();
        last.touch();
        last
    }

    fn touch(&self) {
        self.0.store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long nothing has been read.
    pub(super) fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.0.load(Ordering::Relaxed));
        epoch().elapsed().saturating_sub(last)
    }
}

/// Who the connection authenticates as, and how it speaks.
pub(super) struct Handshake<'a, P> {
    /// The ACL user (the identity's object id for Entra ID).
    pub(super) user: Option<&'a str>,
    /// The access token or key.
    pub(super) password: &'a str,
    /// Where RESP3 pushes go; `None` speaks RESP2.
    pub(super) pushes: Option<P>,
}

/// Opens a connection to `host:port` with `target`'s TLS settings and
/// authenticates. No deadline of its own: the caller bounds it.
pub(super) async fn open<P: AsyncPushSender>(
    target: &Target,
    host: &str,
    port: u16,
    handshake: Handshake<'_, P>,
) -> Result<Opened, CacheError> {
    authenticate(transport(target, host, port).await?, host, port, handshake).await
}

/// A connection's TCP and, with TLS, its handshake done: what needs no
/// credentials ([`transport`]).
pub(super) struct Transport(Box<dyn Stream>);

/// TCP to `host:port` and, with `target`'s TLS settings, the TLS handshake:
/// the part of a connection that needs no credentials, so that it can be
/// made while they are fetched. No deadline of its own.
pub(super) async fn transport(target: &Target, host: &str, port: u16) -> Result<Transport, CacheError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        CacheError::Unavailable(format!("{what} {host}:{port}: {}", without_link(&e.to_string())))
    };
    let tcp = dial(host, port)
        .await
        .map_err(|e| unavailable("cannot connect to", &e))?;
    tune(&tcp, target);
    let stream: Box<dyn Stream> = if target.tls {
        let tls = crate::tls::redis_client_config(target.extra_roots.as_deref());
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| unavailable("bad TLS server name for", &e))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| match rejected_certificate(&e) {
                Some(why) => CacheError::Certificate(format!("{host}:{port} (checked against {}): {why}", target.host)),
                None => unavailable("TLS handshake failed with", &e),
            })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    Ok(Transport(stream))
}

/// Authenticates over `transport` (to `host:port`) as `handshake` says and
/// starts the connection's driver. No deadline of its own.
pub(super) async fn authenticate<P: AsyncPushSender>(
    transport: Transport,
    host: &str,
    port: u16,
    handshake: Handshake<'_, P>,
) -> Result<Opened, CacheError> {
    let Transport(stream) = transport;
    let last_read = LastRead::new();
    let in_flight = InFlight::default();
    let counted = Counted {
        inner: stream,
        last_read: last_read.clone(),
        turn: Turn::new(in_flight.clone()),
    };
    let mut info = RedisConnectionInfo::default().set_password(handshake.password);
    if let Some(user) = handshake.user {
        info = info.set_username(user);
    }
    // No response timeout of the crate's (500 ms by default): each command
    // has ours, and a timeout must tell silence from slowness (see
    // `node.rs`), which the crate's cannot.
    let mut config = AsyncConnectionConfig::new().set_response_timeout(None);
    if let Some(pushes) = handshake.pushes {
        info = info.set_protocol(ProtocolVersion::RESP3);
        config = config.set_push_sender(pushes);
    }
    let (conn, driver) = MultiplexedConnection::new_with_config(&info, counted, config)
        .await
        .map_err(|e| match classify(&e) {
            auth @ CacheError::Auth(_) => auth,
            _ => CacheError::Unavailable(format!("{host}:{port}: {}", without_link(&redact(&e.to_string())))),
        })?;
    Ok(Opened {
        conn,
        driver: AbortOnDrop(tokio::spawn(driver)),
        last_read,
        in_flight,
    })
}

/// An error's text without the documentation link rustls appends to some
/// (it says nothing to the reader of an HTTP answer).
fn without_link(text: &str) -> &str {
    text.split_once(": https://").map_or(text, |(before, _)| before)
}

/// Why rustls rejected the server's certificate, if that is what ended
/// the handshake (not a connection closed during it).
fn rejected_certificate(e: &std::io::Error) -> Option<String> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        err @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => Some(err.to_string()),
        _ => None,
    }
}

/// TCP to the first address of `host` that answers.
async fn dial(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address found")))
}

/// No Nagle delay; keepalive; on Linux, unacknowledged data for longer than
/// one connect plus one command deadline closes the socket.
fn tune(tcp: &tokio::net::TcpStream, target: &Target) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
    #[cfg(target_os = "linux")]
    let _ = socket.set_tcp_user_timeout(Some(target.deadlines.connect + target.deadlines.command));
    #[cfg(not(target_os = "linux"))]
    let _ = target;
}

/// What a connection runs over: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A stream that notes when it last read something, and holds a write
/// back for a turn while other commands are in flight.
struct Counted {
    inner: Box<dyn Stream>,
    last_read: LastRead,
    turn: Turn,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last_read.touch();
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.turn.wait(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.turn.wait(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut *self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let flushed = Pin::new(&mut *self.inner).poll_flush(cx);
        if flushed.is_ready() {
            self.turn.flushed();
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devhost::gateway::resp::parse_command;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// The client's end of the pipe, counting the writes that reach it.
    struct Tally {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Tally {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Tally {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            written
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A server that answers `+OK` to every command: at once, except
    /// `SET`s, which it answers `sets` at a time, as a server whose answers
    /// take longer than the commands take to arrive.
    async fn serve(mut io: DuplexStream, sets: usize) {
        let (mut buf, mut chunk, mut held) = (Vec::new(), [0u8; 4096], 0);
        while let Ok(n @ 1..) = io.read(&mut chunk).await {
            buf.extend_from_slice(&chunk[..n]);
            let mut answers = 0;
            while let Some((len, args)) = parse_command(&buf) {
                if args.first().is_some_and(|name| name.eq_ignore_ascii_case(b"SET")) {
                    held += 1;
                } else {
                    answers += 1;
                }
                buf.drain(..len);
            }
            if held == sets {
                answers += std::mem::take(&mut held);
            }
            if io.write_all(&b"+OK\r\n".repeat(answers)).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn commands_in_flight_together_share_writes() {
        const COMMANDS: usize = 32;
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(server, COMMANDS));
        let writes = Arc::new(AtomicUsize::new(0));
        let in_flight = InFlight::default();
        let stream = Counted {
            inner: Box::new(Tally {
                inner: client,
                writes: writes.clone(),
            }),
            last_read: LastRead::new(),
            turn: Turn::new(in_flight.clone()),
        };
        let (conn, driver) = MultiplexedConnection::new_with_config(
            &RedisConnectionInfo::default(),
            stream,
            AsyncConnectionConfig::new(),
        )
        .await
        .unwrap();
        let _driver = AbortOnDrop(tokio::spawn(driver));
        let before = writes.load(Ordering::Relaxed);
        // From tasks on the worker, as invocations run: each command's
        // send wakes the connection's task, which tokio runs next.
        tokio::spawn(async move {
            let sets: Vec<_> = (0..COMMANDS)
                .map(|i| {
                    let (mut conn, in_flight) = (conn.clone(), in_flight.clone());
                    tokio::spawn(async move {
                        let _flying = in_flight.enter();
                        redis::cmd("SET").arg(i).arg("v").query_async::<()>(&mut conn).await
                    })
                })
                .collect();
            for set in sets {
                set.await.unwrap().unwrap();
            }
        })
        .await
        .unwrap();
        let writes = writes.load(Ordering::Relaxed) - before;
        assert!(writes <= COMMANDS / 4, "{COMMANDS} commands took {writes} writes");
    }
}
