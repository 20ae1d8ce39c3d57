//! An open-loop paced load: request `n` is due at `start + n / rate`,
//! whatever became of the ones before, so the rate is the plan's and not
//! the server's (`wrk`'s closed loop sends as fast as it is answered).
//! Each request carries its own invocation id
//! (`x-azure-functions-invocationid: <prefix><n>`), as the Functions host
//! sends one, so that what it caused can be counted at the other end.
//!
//! HTTP/1.1 without pipelining has one request in flight per connection,
//! so the schedule is dealt round-robin over a few keep-alive connections:
//! each has `conns / rate` of slack before its next instant. A connection
//! still waiting for an answer at its next instant sends late; the run
//! keeps how late and the rate it achieved rather than falling behind
//! silently.

use crate::rig::{key, KEYSPACE};
use crate::timed::{read_status, Latency, Sample};
use anyhow::Context;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longest a request may take before it counts as failed, as `wrk --timeout 10s`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a paced run did.
#[derive(Debug, Clone, Default)]
pub struct PacedRun {
    /// Requests the schedule held (rate × duration).
    pub planned: u64,
    /// Requests sent (fewer than planned only if a connection broke and
    /// could not be opened again).
    pub sent: u64,
    /// Requests answered 200.
    pub answered: u64,
    /// Requests that failed: another status, a broken connection, a timeout.
    pub failed: u64,
    /// From the first send to the last.
    pub sending: Duration,
    /// The latest any request left after its instant (the timer's 1 ms
    /// granularity is in it).
    pub max_late: Duration,
    /// Latency of the requests answered 200.
    pub latency: Latency,
}

impl PacedRun {
    /// Requests sent per second, from the first send to the last.
    pub fn achieved_rate(&self) -> f64 {
        if self.sent < 2 {
            return 0.0;
        }
        (self.sent - 1) as f64 / self.sending.as_secs_f64().max(1e-9)
    }
}

/// What one connection did.
#[derive(Default)]
struct Part {
    sent: u64,
    failed: u64,
    samples: Vec<Sample>,
    first: Option<Instant>,
    last: Option<Instant>,
    max_late: Duration,
}

/// Sends `GET /api/cache/{key}` to `127.0.0.1:port` at `rate` a second for
/// `duration` over `conns` keep-alive connections, request `n` with the
/// invocation id `<id_prefix><n>`.
pub async fn run(port: u16, rate: u32, duration: Duration, conns: u32, id_prefix: &str) -> anyhow::Result<PacedRun> {
    let planned = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut streams = Vec::new();
    for _ in 0..conns {
        streams.push(connect(addr).await.context("connecting the paced load")?);
    }
    // A little ahead, so that no connection starts late for being spawned last.
    let start = Instant::now() + Duration::from_millis(20);
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let schedule = (i as u64..planned).step_by(conns as usize);
            let prefix = id_prefix.to_owned();
            tokio::spawn(connection(stream, addr, schedule, start, rate, prefix))
        })
        .collect();
    let mut run = PacedRun {
        planned,
        ..PacedRun::default()
    };
    let (mut first, mut last, mut samples) = (None::<Instant>, None::<Instant>, Vec::new());
    for task in tasks {
        let part = task.await.context("a paced connection panicked")?;
        run.sent += part.sent;
        run.failed += part.failed;
        run.max_late = run.max_late.max(part.max_late);
        first = first.into_iter().chain(part.first).min();
        last = last.into_iter().chain(part.last).max();
        samples.extend(part.samples);
    }
    run.answered = samples.len() as u64;
    run.latency = Latency::of(&samples);
    run.sending = match (first, last) {
        (Some(a), Some(b)) => b - a,
        _ => Duration::ZERO,
    };
    Ok(run)
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection's share of the schedule. A broken connection counts its
/// request as failed and is opened again; if that fails, the rest of its
/// share is never sent (and the run's `sent` says so).
async fn connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    schedule: impl Iterator<Item = u64>,
    start: Instant,
    rate: u32,
    prefix: String,
) -> Part {
    let mut part = Part::default();
    let mut buf = Vec::with_capacity(4096);
    for n in schedule {
        let due = start + Duration::from_nanos(n * 1_000_000_000 / u64::from(rate));
        tokio::time::sleep_until(due.into()).await;
        let request = format!(
            "GET /api/cache/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-azure-functions-invocationid: {prefix}{n}\r\n\r\n",
            key((n % u64::from(KEYSPACE)) as u32)
        );
        let sent = Instant::now();
        part.max_late = part.max_late.max(sent.saturating_duration_since(due));
        part.first.get_or_insert(sent);
        part.last = Some(sent);
        part.sent += 1;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
            stream.write_all(request.as_bytes()).await?;
            read_status(&mut stream, &mut buf).await
        })
        .await;
        match answer {
            Ok(Ok(200)) => part.samples.push(Sample {
                sent_ns: (sent - start).as_nanos() as u64,
                latency_ns: sent.elapsed().as_nanos() as u64,
            }),
            Ok(Ok(_)) => part.failed += 1,
            Ok(Err(_)) | Err(_) => {
                part.failed += 1;
                buf.clear();
                match connect(addr).await {
                    Ok(s) => stream = s,
                    Err(_) => return part,
                }
            }
        }
    }
    part
}
