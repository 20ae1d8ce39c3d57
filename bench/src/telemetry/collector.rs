//! What the telemetry scenario's handlers export to, and the runtime those
//! run on: a counting receiver, which reads every export, walks its
//! protobuf down to each span and checks it (a trace id of 16 bytes, a span
//! id of 8) and counts it, without building anything of it (a collector's
//! receive path at its cheapest, so that the figure is the handler's cost
//! and not the collector's); and `devhost`'s OTLP receiver, which decodes
//! every export with the official definitions into its own values and
//! keeps every span (a collector that does real work, on the same cores).
//! The handler does the same work for both; the difference between the two
//! is the collector's share of the machine.

use anyhow::Context;
use devhost::otlp::{Behaviour, Receiver};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The two collectors, on a runtime of their own (as many workers as
/// cores), which the paced load also uses.
pub struct Collectors {
    /// `devhost`'s receiver.
    pub receiver: Receiver,
    /// The counting receiver.
    pub counter: Counter,
    /// Last, so it outlives the collectors' tasks.
    pub rt: tokio::runtime::Runtime,
}

impl Collectors {
    /// Starts both on loopback.
    pub fn start() -> anyhow::Result<Collectors> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(crate::machine::cores() as usize)
            .enable_all()
            .build()?;
        let receiver = rt.block_on(Receiver::start(Behaviour::Accept))?;
        let counter = rt.block_on(Counter::start())?;
        Ok(Collectors { receiver, counter, rt })
    }
}

/// An OTLP/HTTP endpoint for `http/protobuf` traces that reads every
/// request (HTTP/1.1 with a `Content-Length` body, as the handler's
/// exporter sends), counts the spans in it, and answers 200 with an empty
/// body (an empty `ExportTraceServiceResponse` is zero bytes of protobuf;
/// the exporter looks only at the status), or 400 when the body is not a
/// well-formed export. Dropping it closes every connection.
pub struct Counter {
    endpoint: String,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

/// What a [`Counter`] has seen.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    spans: AtomicU64,
    refused: AtomicU64,
}

impl Counter {
    async fn start() -> anyhow::Result<Counter> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let counter = counts.clone();
        let task = tokio::spawn(async move {
            // Held here so that aborting this task closes the connections.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, counter.clone()));
            }
        });
        Ok(Counter { endpoint, counts, task })
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Export requests answered 200 so far.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Spans in them.
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }

    /// Requests answered 400: not a well-formed export.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: requests read and answered until it closes or sends
/// something this receiver does not read (then it is closed, and the
/// handler counts that export as failed, which the scenario's check
/// catches).
async fn serve(mut stream: TcpStream, counts: Arc<Counts>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let Ok((traces, body)) = request_head(&mut stream, &mut buf).await else {
            return;
        };
        while buf.len() < body {
            if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
        }
        // Metrics (every 60 s) are taken and not looked at.
        let spans = if traces { count_spans(&buf[..body]) } else { Ok(0) };
        buf.drain(..body);
        let answer: &[u8] = match spans {
            Ok(n) => {
                counts.requests.fetch_add(1, Ordering::Relaxed);
                counts.spans.fetch_add(n, Ordering::Relaxed);
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
            }
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
            }
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// The spans in an `ExportTraceServiceRequest` (1 resource_spans { 2
/// scope_spans { 2 spans } }), each checked to carry a 16-byte trace id
/// (field 1) and an 8-byte span id (field 2); every other field is
/// stepped over by its wire type, so a malformed message is an error.
pub fn count_spans(request: &[u8]) -> anyhow::Result<u64> {
    let mut spans = 0;
    for field in Fields(request) {
        if let (1, Wire::Len(resource_spans)) = field? {
            for field in Fields(resource_spans) {
                if let (2, Wire::Len(scope_spans)) = field? {
                    for field in Fields(scope_spans) {
                        if let (2, Wire::Len(span)) = field? {
                            let (mut trace_id, mut span_id) = (0, 0);
                            for field in Fields(span) {
                                match field? {
                                    (1, Wire::Len(id)) => trace_id = id.len(),
                                    (2, Wire::Len(id)) => span_id = id.len(),
                                    _ => {}
                                }
                            }
                            anyhow::ensure!((trace_id, span_id) == (16, 8), "a span without its ids");
                            spans += 1;
                        }
                    }
                }
            }
        }
    }
    Ok(spans)
}

/// A protobuf field's value, by wire type.
enum Wire<'a> {
    Varint,
    Fixed,
    Len(&'a [u8]),
}

/// The fields of a protobuf message, in order: `(number, value)`.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = anyhow::Result<(u64, Wire<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.0)?;
            let value = match key & 7 {
                0 => varint(&mut self.0).map(|_| Wire::Varint)?,
                1 | 5 => {
                    let n = if key & 7 == 1 { 8 } else { 4 };
                    anyhow::ensure!(self.0.len() >= n, "a fixed field past the end");
                    self.0 = &self.0[n..];
                    Wire::Fixed
                }
                2 => {
                    let n = usize::try_from(varint(&mut self.0)?)?;
                    anyhow::ensure!(self.0.len() >= n, "a length past the end");
                    let (value, rest) = self.0.split_at(n);
                    self.0 = rest;
                    Wire::Len(value)
                }
                wire => anyhow::bail!("wire type {wire}"),
            };
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            // One error, then the end.
            self.0 = &[];
        }
        Some(field)
    }
}

/// A varint off the front of `buf`.
fn varint(buf: &mut &[u8]) -> anyhow::Result<u64> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(v);
        }
    }
    anyhow::bail!("a varint past the end")
}

/// Reads a request head into `buf` and takes it out; gives whether it
/// posts traces (`/v1/traces`) and its body's `Content-Length`.
async fn request_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(bool, usize)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let mut lines = head.split("\r\n");
            let traces = lines
                .next()
                .and_then(|request| request.split(' ').nth(1))
                .is_some_and(|path| path.ends_with("/v1/traces"));
            let length = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .context("a request without Content-Length")?;
            return Ok((traces, length));
        }
        if stream.read_buf(buf).await? == 0 {
            anyhow::bail!("closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::count_spans;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn span(id: u8) -> Span {
        Span {
            trace_id: vec![id; 16],
            span_id: vec![id; 8],
            name: "GET".into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        }
    }

    fn request(scopes: Vec<Vec<Span>>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: scopes
                    .into_iter()
                    .map(|spans| ScopeSpans {
                        spans,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// Every span of every scope is counted; a cut-off body, or a span
    /// without its ids, is refused.
    #[test]
    fn counts_and_checks_spans() {
        let body = request(vec![vec![span(1), span(2)], vec![span(3)]]);
        assert_eq!(count_spans(&body).unwrap(), 3);
        assert_eq!(count_spans(&[]).unwrap(), 0);
        assert!(count_spans(&body[..body.len() - 1]).is_err());
        let no_id = request(vec![vec![Span {
            span_id: Vec::new(),
            ..span(4)
        }]]);
        assert!(count_spans(&no_id).is_err());
    }
}
