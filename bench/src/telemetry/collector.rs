//! What the telemetry scenario's handlers export to, and the runtime those
//! run on: `devhost`'s OTLP receiver, which decodes every export and keeps
//! every span (a collector that does real work, and the one that can say
//! which spans arrived), and a sink that reads each request and answers
//! 200 without decoding it (a collector that costs next to nothing). The
//! handler does the same work for both; the difference between the two is
//! the collector's share of the machine.

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
    /// The sink.
    pub sink: Sink,
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
        let sink = rt.block_on(Sink::start())?;
        Ok(Collectors { receiver, sink, rt })
    }
}

/// An OTLP/HTTP endpoint that reads every request (HTTP/1.1 with a
/// `Content-Length` body, as the handler's exporter sends) and answers 200
/// with an empty body: an empty `Export…ServiceResponse` is zero bytes of
/// protobuf, and the exporter looks only at the status. Dropping it closes
/// every connection.
pub struct Sink {
    endpoint: String,
    requests: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Sink {
    async fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicU64::default());
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            // Held here so that aborting this task closes the connections.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, counter.clone()));
            }
        });
        Ok(Sink {
            endpoint,
            requests,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: requests read and answered until it closes or sends
/// something this sink does not read (then it is closed, and the handler
/// counts that export as failed, which the scenario's check catches).
async fn serve(mut stream: TcpStream, requests: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let Ok(body) = body_length(&mut stream, &mut buf).await else {
            return;
        };
        while buf.len() < body {
            if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
        }
        buf.drain(..body);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads a request head into `buf`, takes it out, and gives its body's
/// `Content-Length`.
async fn body_length(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return head
                .split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .context("a request without Content-Length");
        }
        if stream.read_buf(buf).await? == 0 {
            anyhow::bail!("closed");
        }
    }
}
