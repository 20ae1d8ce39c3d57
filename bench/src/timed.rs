//! A closed-loop HTTP load generator that keeps every request's send time
//! and latency, for runs whose requests have to be split by when they were
//! in flight (`wrk` reports one histogram for a whole run). Like `wrk`:
//! keep-alive connections, each sending its next request as soon as the
//! last is answered, as many worker threads as cores, random keys over the
//! key space.

use crate::rig::{key, KEYSPACE, VALUE_BYTES};
use anyhow::{ensure, Context};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a request may take before it counts as an error and its
/// connection is given up, as `wrk --timeout 10s`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was sent, in nanoseconds after the run's start.
    pub sent_ns: u64,
    /// From sending its first byte to reading its answer's last, ns.
    pub latency_ns: u64,
}

impl Sample {
    /// When its answer was read, in nanoseconds after the run's start.
    pub fn done_ns(&self) -> u64 {
        self.sent_ns + self.latency_ns
    }
}

/// What one timed run recorded.
#[derive(Debug, Clone)]
pub struct TimedRun {
    /// When the connections were opened and the clock started.
    pub start: Instant,
    /// How long requests were being sent (the last answers may come later).
    pub duration: Duration,
    /// Every request answered 200, in no particular order.
    pub samples: Vec<Sample>,
    /// Requests that failed: another status, a broken connection, a timeout.
    pub errors: u64,
    /// The requests that failed, with when they were sent and how long
    /// they took.
    pub failed: Vec<Sample>,
}

impl TimedRun {
    /// Requests answered per second of the run.
    pub fn rps(&self) -> f64 {
        self.samples.len() as f64 / self.duration.as_secs_f64()
    }
}

/// What each request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /api/cache/{key}`.
    Get,
    /// `PUT /api/cache/{key}` with a value of [`VALUE_BYTES`] (a write that
    /// a restart of the stand-in, which keeps nothing, does not turn into 404s).
    Put,
}

/// Sends `GET /api/cache/{key}` on `conns` keep-alive connections to
/// `127.0.0.1:port` for `duration`, recording every request.
pub fn get(port: u16, conns: u32, duration: Duration) -> anyhow::Result<TimedRun> {
    run(port, conns, duration, Request::Get)
}

/// Sends `request` on `conns` keep-alive connections to `127.0.0.1:port`
/// for `duration`, recording every request.
pub fn run(port: u16, conns: u32, duration: Duration, request: Request) -> anyhow::Result<TimedRun> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::machine::cores() as usize)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut streams = Vec::with_capacity(conns as usize);
        for _ in 0..conns {
            let stream = TcpStream::connect(addr).await.context("connecting the load")?;
            stream.set_nodelay(true)?;
            streams.push(stream);
        }
        let start = Instant::now();
        let stop = start + duration;
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, stream)| tokio::spawn(connection(stream, i as u64, start, stop, request)))
            .collect();
        let mut run = TimedRun {
            start,
            duration,
            samples: Vec::new(),
            errors: 0,
            failed: Vec::new(),
        };
        for task in tasks {
            let (samples, failed, errors) = task.await.context("a load task panicked")?;
            run.samples.extend(samples);
            run.failed.extend(failed);
            run.errors += errors;
        }
        Ok(run)
    })
}

/// One connection's loop until `stop`: its samples, its failed requests
/// and its error count. An I/O error or a timeout ends the connection (one
/// error); another status is one error and the loop goes on.
async fn connection(
    mut stream: TcpStream,
    id: u64,
    start: Instant,
    stop: Instant,
    kind: Request,
) -> (Vec<Sample>, Vec<Sample>, u64) {
    let tail = match kind {
        Request::Get => " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_owned(),
        Request::Put => format!(
            " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {VALUE_BYTES}\r\n\r\n{}",
            "x".repeat(VALUE_BYTES)
        ),
    };
    let method = match kind {
        Request::Get => "GET",
        Request::Put => "PUT",
    };
    let mut request = format!("{method} /api/cache/{}{tail}", key(0)).into_bytes();
    let digits = method.len() + " /api/cache/key:".len();
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::with_capacity(4096);
    let (mut samples, mut failed, mut errors) = (Vec::with_capacity(1 << 16), Vec::new(), 0);
    while Instant::now() < stop {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let k = (rng >> 33) as u32 % KEYSPACE;
        request[digits..digits + 12].copy_from_slice(format!("{k:012}").as_bytes());
        let sent = Instant::now();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            stream.write_all(&request).await?;
            read_status(&mut stream, &mut buf).await
        })
        .await;
        let sample = Sample {
            sent_ns: (sent - start).as_nanos() as u64,
            latency_ns: sent.elapsed().as_nanos() as u64,
        };
        match answer {
            Ok(Ok(200)) => samples.push(sample),
            Ok(Ok(_)) => {
                errors += 1;
                failed.push(sample);
            }
            Ok(Err(_)) | Err(_) => {
                failed.push(sample);
                return (samples, failed, errors + 1);
            }
        }
    }
    (samples, failed, errors)
}

/// Reads one whole answer (head and `Content-Length` body) and returns its
/// status; bytes past it stay in `buf` (there are none: one request at a time).
pub(crate) async fn read_status(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let (status, length) = parse_head(&buf[..head_end])
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response head"))?;
            let total = head_end + 4 + length;
            while buf.len() < total {
                read_more(stream, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The status and `Content-Length` of a response head (the handler always
/// sends a length; anything else is an error here).
fn parse_head(head: &[u8]) -> Option<(u16, usize)> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())?;
    Some((status, length))
}

/// Latency statistics of a set of requests, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// How many requests.
    pub requests: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile (the latency 99% of requests were at or under), ms.
    pub p99_ms: f64,
    /// The slowest request, ms.
    pub max_ms: f64,
}

impl Latency {
    /// The statistics of `samples`; all zero when there are none.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Latency {
        let mut ns: Vec<u64> = samples.into_iter().map(|s| s.latency_ns).collect();
        if ns.is_empty() {
            return Latency::default();
        }
        ns.sort_unstable();
        let at = |q: f64| ns[((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1] as f64 / 1e6;
        Latency {
            requests: ns.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Checks that `run` answered something and failed nothing.
pub fn ensure_clean(run: &TimedRun, what: &str) -> anyhow::Result<()> {
    ensure!(
        run.errors == 0 && !run.samples.is_empty(),
        "{what}: {} failed requests, {} answered 200",
        run.errors,
        run.samples.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(latency_ms: u64) -> Sample {
        Sample {
            sent_ns: 0,
            latency_ns: latency_ms * 1_000_000,
        }
    }

    /// Percentiles are nearest-rank: p99 of 1..=100 ms is 99 ms, of 1..=200
    /// is 198 ms; the max is the slowest; nothing gives zeros.
    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<Sample> = (1..=100).map(sample).collect();
        let l = Latency::of(&hundred);
        assert_eq!((l.requests, l.p50_ms, l.p99_ms, l.max_ms), (100, 50.0, 99.0, 100.0));
        let two_hundred: Vec<Sample> = (1..=200).rev().map(sample).collect();
        assert_eq!(Latency::of(&two_hundred).p99_ms, 198.0);
        assert_eq!(Latency::of(&[]).requests, 0);
    }

    /// Status and length come from the head, the header name in any case.
    #[test]
    fn response_heads() {
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nCONTENT-LENGTH: 42"),
            Some((200, 42))
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0"),
            Some((404, 0))
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"), None);
    }
}
