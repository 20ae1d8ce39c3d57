//! A delay line in front of Redis, for a cache that answers slowly: a TCP
//! relay on loopback that passes the client's bytes on at once and holds
//! every chunk of the server's answer for a fixed time before passing it
//! on, while it keeps reading. So every answer is late by the same delay,
//! however many are in flight (a slower network, not a slower server), and
//! TLS goes through untouched: the client still talks to, and verifies,
//! the real server.
//!
//! devhost's gateway can slow replies too (`Gateway::set_reply_delay`), but
//! it sleeps before each write with the next read waiting, so answers that
//! arrive meanwhile wait up to twice the delay, in batches; and it
//! terminates TLS itself.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running delay line; stops accepting when dropped (its open
/// connections end with the runtime).
pub struct DelayLine {
    /// The loopback port clients connect to.
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelayLine {
    /// Listens on a free loopback port and relays each connection to
    /// `127.0.0.1:upstream`, every answer held for `delay`.
    pub fn start(rt: &tokio::runtime::Runtime, upstream: u16, delay: Duration) -> anyhow::Result<DelayLine> {
        let listener = rt.block_on(TcpListener::bind(("127.0.0.1", 0)))?;
        let port = listener.local_addr()?.port();
        let task = rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = relay(client, upstream, delay).await;
                });
            }
        });
        Ok(DelayLine { port, task })
    }
}

async fn relay(client: TcpStream, upstream: u16, delay: Duration) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        tokio::io::copy(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_answers = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 || tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let write_answers = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            client_write.write_all(&bytes).await?;
        }
        client_write.shutdown().await
    };
    tokio::try_join!(up, read_answers, write_answers)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the line answers no sooner than the delay, and
    /// two writes in a row come back in order, each late by about the delay,
    /// not by twice it.
    #[test]
    fn answers_late_by_the_delay() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let echo = rt.block_on(TcpListener::bind(("127.0.0.1", 0))).unwrap();
        let upstream = echo.local_addr().unwrap().port();
        rt.spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let delay = Duration::from_millis(50);
        let line = DelayLine::start(&rt, upstream, delay).unwrap();
        rt.block_on(async {
            let mut c = TcpStream::connect(("127.0.0.1", line.port)).await.unwrap();
            let start = Instant::now();
            c.write_all(b"a").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(b"b").await.unwrap();
            let mut got = [0u8; 1];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"a");
            assert!(start.elapsed() >= delay);
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"b");
            let both = start.elapsed();
            assert!(both >= delay + Duration::from_millis(20), "{both:?}");
            assert!(both < 2 * delay + Duration::from_millis(20), "{both:?}");
        });
    }
}
