//! `floor`: the least a server can do to answer the handler's hot path, run
//! by the bench beside the handler as the honest floor of issue 19 (what
//! HTTP plus one TLS Redis connection costs on this machine, before any of
//! the handler's own work).
//!
//! `GET /api/cache/{key}` answers 200 with the stored value as it is (no
//! JSON), 404 when the key is absent; `PUT /api/cache/{key}` stores the body
//! with `SET` and answers 204; any other path is 404, any other method 405,
//! and a Redis error 502. hyper 1 (HTTP/1.1) on tokio's multi-thread
//! runtime, every request sharing one `redis::aio::MultiplexedConnection`,
//! made with the handler's settings: the same redis crate and features,
//! TLS by rustls with ring trusting `SSL_CERT_FILE` and checking the
//! certificate against `Redis__redisHostName`, TCP_NODELAY, RESP2, and no
//! response timeout of the crate's (each would arm a timer per command).
//!
//! Built with the `count-allocs` feature (the bench's `--profile` mode
//! only), it also answers `GET /api/__allocs` with its heap allocations
//! so far (`alloc_count`).
//!
//! What it leaves out, on purpose: Entra ID (it authenticates once as a
//! Redis ACL user with a password; the handler's token costs nothing per
//! request while valid), token refresh, reconnection (a lost connection
//! answers 502 until the bench stops it), logging, JSON, routing beyond the
//! path prefix, and key decoding (the bench's keys need none).
//!
//! Settings, from the environment, as the bench's rig starts a handler:
//! `FUNCTIONS_CUSTOMHANDLER_PORT`, `Redis__redisHostName`, `Redis__port`,
//! `SSL_CERT_FILE`, `FLOOR_REDIS_USER` and `FLOOR_REDIS_PASSWORD`.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use redis::aio::MultiplexedConnection;
use redis::io::tcp::TcpSettings;
use redis::{AsyncCommands, AsyncConnectionConfig, Client, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates};
use std::convert::Infallible;
use std::error::Error;
use std::net::Ipv4Addr;
use tokio::net::TcpListener;

#[cfg(feature = "count-allocs")]
mod alloc_count;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redis = connect().await?;
    let port: u16 = var("FUNCTIONS_CUSTOMHANDLER_PORT")?.parse()?;
    // Bound once Redis is connected, so that the first answer to the
    // host's readiness poll (`GET /`) means ready.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let redis = redis.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(redis.clone(), req));
            // An error ends this HTTP connection only.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// The one Redis connection, authenticated as `FLOOR_REDIS_USER`.
async fn connect() -> Result<MultiplexedConnection, Box<dyn Error>> {
    let info = format!("rediss://{}:{}", var("Redis__redisHostName")?, var("Redis__port")?)
        .into_connection_info()?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true))
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(var("FLOOR_REDIS_USER")?)
                .set_password(var("FLOOR_REDIS_PASSWORD")?),
        );
    let roots = std::fs::read(var("SSL_CERT_FILE")?)?;
    let tls = TlsCertificates {
        client_tls: None,
        root_cert: Some(roots),
    };
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(Client::build_with_tls(info, tls)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// One request's answer.
async fn answer(mut redis: MultiplexedConnection, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    #[cfg(feature = "count-allocs")]
    if req.uri().path() == alloc_count::PATH {
        return Ok(Response::new(Full::new(Bytes::from(alloc_count::counts()))));
    }
    let Some(key) = req.uri().path().strip_prefix("/api/cache/") else {
        return Ok(empty(StatusCode::NOT_FOUND));
    };
    if key.is_empty() || key.contains('/') {
        return Ok(empty(StatusCode::NOT_FOUND));
    }
    let key = key.to_owned();
    Ok(match *req.method() {
        Method::GET => match redis.get::<_, Option<Vec<u8>>>(&key).await {
            Ok(Some(value)) => Response::new(Full::new(Bytes::from(value))),
            Ok(None) => empty(StatusCode::NOT_FOUND),
            Err(_) => empty(StatusCode::BAD_GATEWAY),
        },
        Method::PUT => match req.into_body().collect().await {
            Ok(body) => match redis.set::<_, _, ()>(&key, &body.to_bytes()[..]).await {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(_) => empty(StatusCode::BAD_GATEWAY),
            },
            Err(_) => empty(StatusCode::BAD_REQUEST),
        },
        _ => empty(StatusCode::METHOD_NOT_ALLOWED),
    })
}

/// An answer with `status` and no body.
fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}

/// A setting that must be there.
fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("floor: {name} is not set"))
}
