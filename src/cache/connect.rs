//! Opening a connection: to the configured endpoint through the redis
//! crate's client, and to a cluster node announced by IP address with our
//! own TCP and TLS, verified against the configured host name.

use super::error::{classify, CacheError};
use super::node::AbortOnDrop;
use super::Target;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};
use std::sync::Arc;
use std::time::Duration;

/// A new connection and, when we spawned it, the task doing its I/O.
pub(super) struct Connection {
    pub(super) conn: MultiplexedConnection,
    pub(super) driver: Option<AbortOnDrop>,
}

/// Opens a connection to `host:port` with `target`'s TLS settings.
///
/// The configured endpoint goes through the redis crate, as it always has.
/// A cluster node is announced by IP address (Azure Managed Redis on 85xx
/// ports, clustered Premium on 1500N) while its certificate names the
/// cache's host name, so the crate's client, which verifies the host it
/// connects to, cannot be used: we connect to the address and verify the
/// certificate against `Redis__redisHostName`, as StackExchange.Redis
/// (`SslHost`) and go-redis (`TLSConfig.ServerName`) do. Verification stays
/// on.
pub(super) async fn open_node_connection(
    target: &Target,
    host: &str,
    port: u16,
    user: Option<&str>,
    password: &str,
    budget: Duration,
) -> Result<Connection, CacheError> {
    if host == target.host && port == target.port {
        let conn = open_connection(target, user, password, budget).await?;
        return Ok(Connection { conn, driver: None });
    }
    let unavailable =
        |what: &str, e: &dyn std::fmt::Display| CacheError::Unavailable(format!("{what} {host}:{port}: {e}"));
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| unavailable("cannot connect to", &e))?;
    let _ = tcp.set_nodelay(true);
    let mut redis_info = RedisConnectionInfo::default().set_password(password);
    if let Some(user) = user {
        redis_info = redis_info.set_username(user);
    }
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(target.deadlines.command));
    let made = if target.tls {
        let tls = crate::tls::redis_client_config(target.extra_roots.as_deref());
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| unavailable("bad TLS server name for", &e))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| unavailable("TLS handshake failed with", &e))?;
        MultiplexedConnection::new_with_config(&redis_info, stream, config)
            .await
            .map(|(conn, driver)| (conn, tokio::spawn(driver)))
    } else {
        MultiplexedConnection::new_with_config(&redis_info, tcp, config)
            .await
            .map(|(conn, driver)| (conn, tokio::spawn(driver)))
    };
    let (conn, driver) = made.map_err(|e| match classify(&e) {
        CacheError::Command(msg) => CacheError::Unavailable(msg),
        other => other,
    })?;
    Ok(Connection {
        conn,
        driver: Some(AbortOnDrop(driver)),
    })
}

/// Opens one multiplexed connection to `target`: TCP, TLS (verified against
/// the target's host name, with `SSL_CERT_FILE`'s extra roots), and `AUTH`
/// with `user`/`password` in the handshake, within `budget`.
pub(crate) async fn open_connection(
    target: &Target,
    user: Option<&str>,
    password: &str,
    budget: Duration,
) -> Result<MultiplexedConnection, CacheError> {
    let addr = if target.tls {
        ConnectionAddr::TcpTls {
            host: target.host.clone(),
            port: target.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(target.host.clone(), target.port)
    };
    let mut redis_info = RedisConnectionInfo::default().set_password(password);
    if let Some(user) = user {
        redis_info = redis_info.set_username(user);
    }
    let info = addr
        .into_connection_info()
        .map_err(|e| classify(&e))?
        .set_redis_settings(redis_info);
    let client = match &target.extra_roots {
        Some(pem) if target.tls => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(crate::tls::with_system_roots(pem)),
            },
        ),
        _ => Client::open(info),
    }
    .map_err(|e| classify(&e))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(budget))
        .set_response_timeout(Some(target.deadlines.command));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| match classify(&e) {
            CacheError::Command(msg) => CacheError::Unavailable(msg),
            other => other,
        })
}
