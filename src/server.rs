//! Binding, serving and graceful shutdown.
//!
//! On SIGTERM or SIGINT the server stops accepting, lets in-flight
//! invocations finish for at most the drain time, then returns so the
//! process exits 0: the host does not restart a handler that exits 0, and an
//! invocation cut off mid-way would fail anyway.

use crate::router::Fast;
use std::time::Duration;
use tokio::net::TcpListener;

/// Binds `127.0.0.1:port`, never a wider address: only the host should reach it.
pub(crate) async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).await
}

/// Serves `app` until a signal, then drains for at most `drain`.
pub(crate) async fn serve(listener: TcpListener, app: Fast, drain: Duration) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let signalled = async move {
        shutdown_signal().await;
        tracing::info!(
            drain_s = drain.as_secs_f64(),
            "shutting down: finishing in-flight invocations"
        );
        let _ = tx.send(true);
    };
    let server = axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
    )
    .with_graceful_shutdown(signalled);
    let deadline = async move {
        let _ = rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = server => result,
        () = deadline => {
            tracing::warn!("drain time over; exiting with invocations still in flight");
            Ok(())
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
