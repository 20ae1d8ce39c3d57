//! The handler's own HTTP client, for what it asks over HTTP besides the
//! host's invocations: tokens (from an identity endpoint or Entra ID,
//! through azure_core's `HttpClient` trait: [`TokenTransport`]) and OTLP
//! exports ([`crate::otel`]).
//!
//! Both used reqwest before. This does what they used of it, on the parts
//! the handler already has (hyper's client connection, rustls, tokio), and
//! the binary is 0.4 MiB smaller without reqwest and its connection pool:
//! on a kernel that maps the binary whole, that much less resident memory
//! (`bench/notes.md`, item 9).
//!
//! What it does:
//! - HTTP/1.1, plain or over TLS with the `rustls` configuration it is given
//!   (verification on, as [`crate::tls`] builds them); no redirects, as
//!   azure_core's own client follows none;
//! - proxies from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
//!   (and their lower-case forms), read by hyper-util's matcher as reqwest
//!   read them: HTTPS through an `http://` proxy's `CONNECT` tunnel, HTTP
//!   through the proxy itself, with `Proxy-Authorization` from the proxy's
//!   URL;
//! - one idle connection kept for the next request to the same place (the
//!   exporter posts every few seconds), for at most [`IDLE_FOR`]; a request
//!   that finds it closed goes on a new one;
//! - a connect timeout and a deadline on the whole exchange, and answers of
//!   at most [`MAX_BODY`].

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, HOST, PROXY_AUTHORIZATION};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long an idle connection is kept for reuse (reqwest's default).
const IDLE_FOR: Duration = Duration::from_secs(90);

/// The largest answer read: a token or a collector's reply is a few KiB.
const MAX_BODY: usize = 1 << 20;

/// The most a proxy's answer to `CONNECT` may hold before its blank line.
const MAX_PROXY_HEAD: usize = 8 * 1024;

/// A client: TLS, proxies, and the idle connection.
pub(crate) struct Client {
    tls: tokio_rustls::TlsConnector,
    proxies: Matcher,
    connect_timeout: Duration,
    idle: Mutex<Option<Idle>>,
}

/// A connection kept after its last answer.
struct Idle {
    to: Origin,
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// Where a request goes: its scheme, host and port, and whether a proxy
/// stands between.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: String,
    port: u16,
    /// The proxy's URL: a kept connection serves only requests that would
    /// take the same way.
    proxy: Option<Uri>,
}

/// A request to send: what [`Client::send`] needs, cheap to send twice.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// An answer, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum Error {
    /// No connection: DNS, TCP, the proxy or TLS failed, or took longer
    /// than the connect timeout.
    Connect(String),
    /// No whole answer before the deadline.
    Timeout(Duration),
    /// The request cannot be sent as it is (its URL, say).
    Request(String),
    /// The connection failed during the exchange, or the answer was bad.
    Exchange(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(why) => write!(f, "cannot connect: {why}"),
            Self::Timeout(after) => write!(f, "no answer within {after:?}"),
            Self::Request(why) => write!(f, "bad request: {why}"),
            Self::Exchange(why) => write!(f, "the exchange failed: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// What a connection runs over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl Client {
    /// A client trusting what `tls` trusts, with the proxies the
    /// environment names.
    pub(crate) fn new(tls: rustls::ClientConfig, connect_timeout: Duration) -> Self {
        Self::with_proxies(tls, connect_timeout, Matcher::from_env())
    }

    /// [`Client::new`] with the proxies `proxies` gives.
    fn with_proxies(tls: rustls::ClientConfig, connect_timeout: Duration, proxies: Matcher) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            proxies,
            connect_timeout,
            idle: Mutex::new(None),
        }
    }

    /// Sends `request` and reads the whole answer, all within `deadline`.
    pub(crate) async fn send(&self, request: Outgoing, deadline: Duration) -> Result<Reply, Error> {
        match tokio::time::timeout(deadline, self.exchange(request)).await {
            Ok(reply) => reply,
            Err(_) => Err(Error::Timeout(deadline)),
        }
    }

    async fn exchange(&self, request: Outgoing) -> Result<Reply, Error> {
        let proxy = self.proxies.intercept(&request.uri);
        let origin = Origin::of(&request.uri, proxy.as_ref())?;
        let request = prepare(request, &origin, proxy.as_ref())?;
        if let Some(mut sender) = self.reuse(&origin) {
            // A server may have closed it since: then nothing was sent, the
            // request comes back, and goes on a new connection.
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request.to_hyper()).await {
                    Ok(answer) => return self.read(origin, sender, answer).await,
                    Err(mut e) => {
                        if e.take_message().is_none() {
                            return Err(Error::Exchange(e.into_error().to_string()));
                        }
                    }
                }
            }
        }
        let mut sender = self.connect(&origin, proxy.as_ref()).await?;
        let answer = sender
            .send_request(request.to_hyper())
            .await
            .map_err(|e| Error::Exchange(e.to_string()))?;
        self.read(origin, sender, answer).await
    }

    /// Reads `answer` whole, then keeps the connection for the next request.
    async fn read(
        &self,
        to: Origin,
        sender: SendRequest<Full<Bytes>>,
        answer: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Reply, Error> {
        let (parts, body) = answer.into_parts();
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| Error::Exchange(format!("reading the answer: {e}")))?
            .to_bytes();
        if !sender.is_closed() {
            *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(Idle {
                to,
                sender,
                since: Instant::now(),
            });
        }
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The idle connection, if it goes to `origin` and is fresh.
    fn reuse(&self, origin: &Origin) -> Option<SendRequest<Full<Bytes>>> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        (idle.to == *origin && idle.since.elapsed() < IDLE_FOR && !idle.sender.is_closed()).then_some(idle.sender)
    }

    /// A new connection to `origin`, through `proxy` if one is given.
    async fn connect(&self, origin: &Origin, proxy: Option<&Intercept>) -> Result<SendRequest<Full<Bytes>>, Error> {
        let io = match tokio::time::timeout(self.connect_timeout, self.open(origin, proxy)).await {
            Ok(io) => io?,
            Err(_) => {
                return Err(Error::Connect(format!(
                    "no connection within {:?}",
                    self.connect_timeout
                )))
            }
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "an outbound HTTP connection failed");
            }
        });
        Ok(sender)
    }

    /// TCP to the origin or the proxy, the proxy's tunnel for HTTPS, and TLS
    /// with the origin for HTTPS.
    async fn open(&self, origin: &Origin, proxy: Option<&Intercept>) -> Result<Box<dyn Io>, Error> {
        let tcp = match proxy {
            Some(proxy) => {
                let (host, port) = host_port(proxy.uri(), false)?;
                let mut tcp = tcp(&host, port).await?;
                if origin.https {
                    tunnel(&mut tcp, origin, proxy.basic_auth()).await?;
                }
                tcp
            }
            None => tcp(&origin.host, origin.port).await?,
        };
        if !origin.https {
            return Ok(Box::new(tcp));
        }
        let name = ServerName::try_from(origin.host.clone())
            .map_err(|_| Error::Request(format!("{} is not a host name", origin.host)))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| Error::Connect(format!("TLS with {}: {e}", origin.host)))?;
        Ok(Box::new(tls))
    }
}

impl Origin {
    /// Where `uri` goes, through the proxy `proxy` names if any.
    fn of(uri: &Uri, proxy: Option<&Intercept>) -> Result<Self, Error> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(Error::Request(format!("{uri} is not an http or https URL"))),
        };
        let (host, port) = host_port(uri, https)?;
        let proxy = match proxy {
            Some(p) if p.uri().scheme_str() == Some("http") => Some(p.uri().clone()),
            Some(p) => {
                return Err(Error::Request(format!(
                    "only http:// proxies are supported, not {}",
                    p.uri().scheme_str().unwrap_or("this one")
                )))
            }
            None => None,
        };
        Ok(Self {
            https,
            host,
            port,
            proxy,
        })
    }

    /// `host:port`, with an IPv6 address in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The host (an IPv6 address without its brackets) and port of `uri`; the
/// scheme's port when it names none.
fn host_port(uri: &Uri, https: bool) -> Result<(String, u16), Error> {
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Request(format!("{uri} names no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    Ok((host, port))
}

/// `request` as it goes on the wire: to the origin, its path and `Host`; to
/// a proxy that forwards plain HTTP, the whole URL and the proxy's
/// credentials.
fn prepare(mut request: Outgoing, origin: &Origin, proxy: Option<&Intercept>) -> Result<Outgoing, Error> {
    let authority = request
        .uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let host = HeaderValue::from_str(&authority).map_err(|e| Error::Request(e.to_string()))?;
    request.headers.insert(HOST, host);
    if let (Some(proxy), false) = (proxy, origin.https) {
        if let Some(auth) = proxy.basic_auth() {
            request.headers.insert(PROXY_AUTHORIZATION, auth.clone());
        }
        return Ok(request);
    }
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    request.uri = path
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| Error::Request(e.to_string()))?;
    Ok(request)
}

impl Outgoing {
    /// `method` with `body` to `uri`, without headers yet.
    pub(crate) fn new(method: Method, uri: &str, body: Bytes) -> Result<Self, Error> {
        Ok(Self {
            method,
            uri: uri.parse().map_err(|_| Error::Request(format!("{uri} is not a URL")))?,
            headers: HeaderMap::new(),
            body,
        })
    }

    fn to_hyper(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// TCP to `host:port`, without Nagle's delay (a request is one write).
async fn tcp(host: &str, port: u16) -> Result<TcpStream, Error> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::Connect(format!("{host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Asks the proxy on `tcp` for a tunnel to `origin` (`CONNECT`), and reads
/// its answer up to the blank line; any 2xx opens the tunnel.
async fn tunnel(tcp: &mut TcpStream, origin: &Origin, auth: Option<&HeaderValue>) -> Result<(), Error> {
    let to = origin.authority();
    let mut head = format!("CONNECT {to} HTTP/1.1\r\nHost: {to}\r\n").into_bytes();
    if let Some(auth) = auth {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let failed = |e: std::io::Error| Error::Connect(format!("the proxy: {e}"));
    tcp.write_all(&head).await.map_err(failed)?;
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await.map_err(failed)?;
        if n == 0 {
            return Err(Error::Connect("the proxy closed the connection".into()));
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_PROXY_HEAD {
            return Err(Error::Connect("the proxy's answer is too long".into()));
        }
    }
    // "HTTP/1.1 200 Connection established"
    let status = answer
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if answer.starts_with(b"HTTP/1.") && (200..300).contains(&s) => Ok(()),
        Some(s) => Err(Error::Connect(format!("the proxy answered {s} to CONNECT {to}"))),
        None => Err(Error::Connect("the proxy's answer is not HTTP".into())),
    }
}

/// azure_core's `HttpClient` over a [`Client`]: the transport of every
/// credential that makes HTTP requests ([`crate::credential`]).
pub(crate) struct TokenTransport {
    client: Arc<Client>,
    deadline: Duration,
}

impl fmt::Debug for TokenTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTransport")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl TokenTransport {
    /// Requests through `client`, each answered within `deadline`.
    pub(crate) fn new(client: Client, deadline: Duration) -> Self {
        Self {
            client: Arc::new(client),
            deadline,
        }
    }
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for TokenTransport {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        use azure_core::error::ErrorKind;
        let error = |kind: ErrorKind, message: String| azure_core::Error::with_message(kind, message);
        let body = match request.body() {
            azure_core::http::Body::Bytes(bytes) => bytes.clone(),
            azure_core::http::Body::SeekableStream(_) => {
                return Err(error(
                    ErrorKind::Other,
                    "a streamed request body is not supported".into(),
                ))
            }
        };
        let method = Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|e| error(ErrorKind::Other, e.to_string()))?;
        let mut outgoing =
            Outgoing::new(method, request.url().as_str(), body).map_err(|e| error(ErrorKind::Other, e.to_string()))?;
        for (name, value) in request.headers().iter() {
            let name = hyper::header::HeaderName::from_bytes(name.as_str().as_bytes());
            let value = HeaderValue::from_str(value.as_str());
            match (name, value) {
                (Ok(name), Ok(value)) => {
                    outgoing.headers.append(name, value);
                }
                _ => return Err(error(ErrorKind::Other, "a header that HTTP cannot carry".into())),
            }
        }
        let reply = self.client.send(outgoing, self.deadline).await.map_err(|e| {
            let kind = match e {
                Error::Connect(_) => ErrorKind::Connection,
                Error::Request(_) => ErrorKind::Other,
                Error::Timeout(_) | Error::Exchange(_) => ErrorKind::Io,
            };
            error(kind, crate::secret::redact(&e.to_string()))
        })?;
        let mut headers = azure_core::http::headers::Headers::new();
        for (name, value) in &reply.headers {
            if let Ok(value) = value.to_str() {
                headers.insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        let body = reply.body;
        let stream: azure_core::http::response::PinnedStream =
            Box::pin(futures_util::stream::once(std::future::ready(Ok(body))));
        Ok(azure_core::http::AsyncRawResponse::new(
            reply.status.as_u16().into(),
            headers,
            stream,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// What a fake server saw: each request's head and body, and how many
    /// connections it accepted.
    struct Seen {
        requests: mpsc::UnboundedReceiver<String>,
        connections: Arc<AtomicUsize>,
    }

    /// Reads one request (head and `content-length` body) off `io`; `None`
    /// at the end of the stream.
    async fn read_request(io: &mut (impl AsyncRead + Unpin)) -> Option<String> {
        let mut data = Vec::new();
        let mut byte = [0u8; 1];
        while !data.ends_with(b"\r\n\r\n") {
            if io.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            data.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&data).to_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        let mut body = vec![0; length];
        io.read_exact(&mut body).await.ok()?;
        data.extend_from_slice(&body);
        Some(String::from_utf8_lossy(&data).into_owned())
    }

    /// Serves requests on `io`, answering each with `answer`.
    async fn answer_all(
        mut io: impl AsyncRead + AsyncWrite + Unpin,
        answer: Vec<u8>,
        seen: mpsc::UnboundedSender<String>,
    ) {
        while let Some(request) = read_request(&mut io).await {
            let _ = seen.send(request);
            if io.write_all(&answer).await.is_err() {
                return;
            }
        }
    }

    /// A plain HTTP server on loopback answering every request with `answer`.
    async fn origin(answer: &str) -> (u16, Seen) {
        serve(answer, None).await
    }

    /// An HTTPS server with `pki`'s certificate (`localhost`) answering
    /// every request with `answer`.
    async fn tls_origin(pki: &devhost::pki::Pki, answer: &str) -> (u16, Seen) {
        let certs = CertificateDer::pem_file_iter(&pki.cert_path)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.key_path).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        serve(answer, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    /// A server on loopback, over TLS with `tls`, answering every request
    /// with `answer`.
    async fn serve(answer: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> (u16, Seen) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, requests) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let (counted, answer) = (connections.clone(), answer.as_bytes().to_vec());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                match &tls {
                    None => drop(tokio::spawn(answer_all(tcp, answer.clone(), tx.clone()))),
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            tokio::spawn(answer_all(tls, answer.clone(), tx.clone()));
                        }
                    }
                }
            }
        });
        (port, Seen { requests, connections })
    }

    /// A proxy on loopback that opens a `CONNECT` tunnel to 127.0.0.1 at the
    /// port asked for, and sends each `CONNECT` head it read.
    async fn connect_proxy() -> (u16, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, heads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let head = read_request(&mut tcp).await.unwrap();
                    let to = head.split(' ').nth(1).unwrap().to_owned();
                    let _ = tx.send(head);
                    let port: u16 = to.rsplit(':').next().unwrap().parse().unwrap();
                    let mut origin = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut origin).await;
                });
            }
        });
        (port, heads)
    }

    fn plain_client(proxies: Matcher) -> Client {
        Client::with_proxies(crate::tls::https_client_config(b""), Duration::from_secs(5), proxies)
    }

    fn get(uri: &str) -> Outgoing {
        Outgoing::new(Method::GET, uri, Bytes::new()).unwrap()
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-answer: yes\r\n\r\nhello";

    /// A request goes in origin form with its `Host`; the answer comes back
    /// whole; the next request to the same place goes on the same
    /// connection.
    #[tokio::test]
    async fn answers_and_keeps_the_connection_for_the_next_request() {
        let (port, mut seen) = origin(OK).await;
        let client = plain_client(Matcher::builder().build());
        for path in ["/a?b=1", "/c"] {
            let mut request =
                Outgoing::new(Method::POST, &format!("http://127.0.0.1:{port}{path}"), "body".into()).unwrap();
            request.headers.insert("x-asked", HeaderValue::from_static("1"));
            let reply = client.send(request, Duration::from_secs(5)).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.headers["x-answer"], "yes");
            assert_eq!(&reply.body[..], b"hello");
            let request = seen.requests.recv().await.unwrap();
            assert!(request.starts_with(&format!("POST {path} HTTP/1.1\r\n")), "{request}");
            let lower = request.to_lowercase();
            assert!(lower.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")), "{request}");
            assert!(lower.contains("\r\nx-asked: 1\r\n"), "{request}");
            assert!(request.ends_with("\r\n\r\nbody"), "{request}");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1, "one connection for both");
    }

    /// When the server has closed the connection kept idle, the next request
    /// goes on a new one and is answered.
    #[tokio::test]
    async fn a_closed_idle_connection_is_replaced() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Each connection answers one request, then closes when told to,
        // without saying so (no `Connection: close`), as a server whose
        // keep-alive ran out does; `closed` says it has.
        let (close, mut told) = mpsc::unbounded_channel::<()>();
        let (closed_tx, mut closed) = mpsc::unbounded_channel::<()>();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                read_request(&mut tcp).await.unwrap();
                tcp.write_all(OK.as_bytes()).await.unwrap();
                told.recv().await.unwrap();
                drop(tcp);
                closed_tx.send(()).unwrap();
            }
        });
        let client = plain_client(Matcher::builder().build());
        for _ in 0..3 {
            let reply = client
                .send(get(&format!("http://127.0.0.1:{port}/")), Duration::from_secs(5))
                .await;
            assert_eq!(&reply.unwrap().body[..], b"hello");
            close.send(()).unwrap();
            closed.recv().await.unwrap();
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    /// A server that never answers costs the deadline, no more.
    #[tokio::test]
    async fn the_deadline_bounds_a_silent_server() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                open.push(tcp);
            }
        });
        let client = plain_client(Matcher::builder().build());
        let deadline = Duration::from_millis(200);
        let result = client.send(get(&format!("http://127.0.0.1:{port}/")), deadline).await;
        assert!(matches!(result, Err(Error::Timeout(d)) if d == deadline), "{result:?}");
    }

    /// An answer longer than [`MAX_BODY`] is refused, not read into memory.
    #[tokio::test]
    async fn an_answer_over_the_limit_fails() {
        let big = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
            MAX_BODY + 1,
            "x".repeat(MAX_BODY + 1)
        );
        let (port, _seen) = origin(&big).await;
        let client = plain_client(Matcher::builder().build());
        let result = client
            .send(get(&format!("http://127.0.0.1:{port}/")), Duration::from_secs(5))
            .await;
        assert!(matches!(result, Err(Error::Exchange(_))), "{result:?}");
    }

    /// Plain HTTP through a proxy goes to the proxy, with the whole URL and
    /// the proxy's credentials from its URL; `NO_PROXY` hosts go direct.
    #[tokio::test]
    async fn plain_http_goes_through_the_proxy_with_its_credentials() {
        let (proxy, mut at_proxy) = origin(OK).await;
        let (direct, mut at_origin) = origin(OK).await;
        let client = plain_client(
            Matcher::builder()
                .http(format!("http://user:pass@127.0.0.1:{proxy}"))
                .no("127.0.0.1")
                .build(),
        );
        let reply = client
            .send(get("http://identity.invalid:8080/token?x=1"), Duration::from_secs(5))
            .await;
        assert_eq!(&reply.unwrap().body[..], b"hello");
        let request = at_proxy.requests.recv().await.unwrap();
        assert!(
            request.starts_with("GET http://identity.invalid:8080/token?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        // base64("user:pass")
        assert!(
            request
                .to_lowercase()
                .contains("\r\nproxy-authorization: basic dxnlcjpwyxnz\r\n"),
            "{request}"
        );
        let reply = client
            .send(get(&format!("http://127.0.0.1:{direct}/d")), Duration::from_secs(5))
            .await;
        assert_eq!(&reply.unwrap().body[..], b"hello");
        assert!(at_origin
            .requests
            .recv()
            .await
            .unwrap()
            .starts_with("GET /d HTTP/1.1\r\n"));
    }

    /// HTTPS through a proxy goes through its `CONNECT` tunnel, with TLS to
    /// the origin (its certificate checked against the origin's name).
    #[tokio::test]
    async fn https_goes_through_a_connect_tunnel() {
        crate::tls::install_crypto_provider();
        let pki = devhost::pki::Pki::generate().unwrap();
        let (port, mut seen) = tls_origin(&pki, OK).await;
        let (proxy, mut heads) = connect_proxy().await;
        let client = Client::with_proxies(
            crate::tls::https_client_config(pki.ca_pem.as_bytes()),
            Duration::from_secs(5),
            Matcher::builder()
                .https(format!("http://user:pass@127.0.0.1:{proxy}"))
                .build(),
        );
        let reply = client
            .send(get(&format!("https://localhost:{port}/t")), Duration::from_secs(5))
            .await;
        assert_eq!(&reply.unwrap().body[..], b"hello");
        let head = heads.recv().await.unwrap();
        assert!(
            head.starts_with(&format!("CONNECT localhost:{port} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(
            head.to_lowercase()
                .contains("\r\nproxy-authorization: basic dxnlcjpwyxnz\r\n"),
            "{head}"
        );
        let request = seen.requests.recv().await.unwrap();
        assert!(request.starts_with("GET /t HTTP/1.1\r\n"), "{request}");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    /// A proxy that refuses the tunnel is a connection error that says what
    /// it answered.
    #[tokio::test]
    async fn a_refused_tunnel_is_a_connection_error() {
        let (proxy, _seen) = origin("HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n").await;
        let client = plain_client(Matcher::builder().https(format!("http://127.0.0.1:{proxy}")).build());
        let result = client
            .send(get("https://login.invalid/t"), Duration::from_secs(5))
            .await;
        let Err(Error::Connect(why)) = result else {
            panic!("{result:?}")
        };
        assert!(why.contains("407"), "{why}");
    }
}
