//! An HTTPS listener for axum: TLS with the [`Pki`]'s server certificate
//! (`localhost`, `127.0.0.1`), each handshake in a task of its own so a
//! client that stalls holds up no one else.

use crate::pki::Pki;
use anyhow::Context;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// Hands axum the connections whose handshake succeeded.
pub(crate) struct HttpsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

/// Binds 127.0.0.1 on a free port; the returned task accepts and shakes
/// hands until it is aborted.
pub(crate) async fn bind(pki: &Pki) -> anyhow::Result<(HttpsListener, JoinHandle<()>)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert_path)
        .context("reading the server certificate")?
        .collect::<Result<_, _>>()
        .context("parsing the server certificate")?;
    let key = PrivateKeyDer::from_pem_file(&pki.key_path).context("reading the server key")?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let tcp = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = tcp.local_addr()?;
    let (tx, ready) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        while let Ok((stream, peer)) = tcp.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await {
                    let _ = tx.send((tls, peer)).await;
                }
            });
        }
    });
    Ok((HttpsListener { addr, ready }, task))
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task is gone (the endpoint is being dropped): nothing
            // more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
