//! Binding, serving and graceful shutdown.
//!
//! On SIGTERM or SIGINT the server stops accepting, lets in-flight
//! invocations finish for at most the drain time, then returns so the
//! process exits 0: the host does not restart a handler that exits 0, and an
//! invocation cut off mid-way would fail anyway.

use crate::router::Fast;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Binds `127.0.0.1:port`, never a wider address: only the host should reach it.
pub(crate) async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await
}

/// Serves `app` until a signal, then drains for at most `drain`.
///
/// The accept loop and the connections are hyper's own, as the floor's
/// are, rather than `axum::serve`'s: that one polls a shutdown channel
/// beside the connection on every wake-up of a connection's task (two
/// futures of a `select!`, and `tokio::sync::Notify`'s registration), and
/// hands each request to the service through `tower`'s `Oneshot`, which
/// together cost about 2% of the CPU of a GET (`perf record` at 64
/// connections). Here a connection checks one flag when it wakes, and is
/// woken once, when the signal comes.
pub(crate) async fn serve(listener: TcpListener, app: Fast, drain: Duration) {
    let app = Arc::new(app);
    let stop = Arc::new(Stop::default());
    // Every connection holds a sender; `recv` ends when the last is gone.
    let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    'accept: loop {
        let accepted = tokio::select! {
            biased;
            () = &mut signal => break 'accept,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => {
                tokio::spawn(connection(tcp, app.clone(), stop.clone(), open.clone()));
            }
            // The peer gave up before its connection was accepted.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of file descriptors, say: waiting lets some close.
                tracing::error!(error = %e, "accepting a connection failed; trying again in a second");
                tokio::select! {
                    () = &mut signal => break 'accept,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(listener);
    tracing::info!(
        drain_s = drain.as_secs_f64(),
        "shutting down: finishing in-flight invocations"
    );
    stop.now();
    drop(open);
    if tokio::time::timeout(drain, all_closed.recv()).await.is_err() {
        tracing::warn!("drain time over; exiting with invocations still in flight");
    }
}

/// Whether accepting failed for the connection's sake only.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one HTTP/1.1 connection until it closes, or until shutdown
/// lets its in-flight request finish; `_open` says it is still open.
async fn connection(tcp: TcpStream, app: Arc<Fast>, stop: Arc<Stop>, _open: tokio::sync::mpsc::Sender<()>) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| app.answer(request));
    // `half_close`: no read for an end of stream while an invocation is in
    // flight. hyper's default tries one after each request, and first
    // reserves 8 KiB of read buffer for it: a new buffer, since the request
    // in flight still holds slices of the old one (its URI, its headers,
    // its body). So each request allocated one, and each connection with
    // an invocation in flight held two: with 256 connections, a peak RSS of
    // 14.6-14.9 MiB against 12.2-12.6 without (`wrk` runs, GET then PUT;
    // paired runs at 64 connections put req/s and CPU per GET within the
    // noise, 0.99x and 1.01x). An invocation whose caller closes the
    // connection now runs to its end (its work has deadlines) and logs its
    // line, instead of being dropped wherever it was; the answer goes to a
    // caller that only closed its sending side.
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    let mut watch = Watch::new(stop);
    let mut stopping = false;
    // An error ends this connection only.
    let _ = std::future::poll_fn(|cx| {
        if !stopping && watch.stopped(cx) {
            stopping = true;
            // Ends the connection once the request in flight, if any, is
            // answered; an idle one at once.
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await;
}

/// The shutdown, as connections see it: a flag, and the wakers of the
/// connections to wake when it is set.
#[derive(Default)]
struct Stop {
    stopped: AtomicBool,
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    next: u64,
    by_connection: HashMap<u64, Waker>,
}

impl Stop {
    /// Sets the flag and wakes every connection.
    fn now(&self) {
        self.stopped.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut self.lock().by_connection);
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Wakers> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One connection's watch on [`Stop`]: its waker, registered when it
/// changes (a task's waker seldom does), and taken out when it is dropped.
struct Watch {
    stop: Arc<Stop>,
    registered: Option<(u64, Waker)>,
}

impl Watch {
    fn new(stop: Arc<Stop>) -> Self {
        Self { stop, registered: None }
    }

    /// Whether shutdown has begun; if not, the task of `cx` is woken when
    /// it does.
    fn stopped(&mut self, cx: &Context<'_>) -> bool {
        if self.stop.stopped.load(Ordering::Acquire) {
            return true;
        }
        if self.registered.as_ref().is_some_and(|(_, w)| w.will_wake(cx.waker())) {
            return false;
        }
        {
            let mut wakers = self.stop.lock();
            let key = match &self.registered {
                Some((key, _)) => *key,
                None => {
                    wakers.next += 1;
                    wakers.next
                }
            };
            wakers.by_connection.insert(key, cx.waker().clone());
            self.registered = Some((key, cx.waker().clone()));
        }
        // Set before `now` took the lock, and so seen here, or this waker
        // was among those it woke.
        self.stop.stopped.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            self.stop.lock().by_connection.remove(&key);
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
