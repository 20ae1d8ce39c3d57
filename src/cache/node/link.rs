//! Waiting for a node's connection, and the attempts to make one: one at a
//! time, in a task of its own, through the node's [`Gate`].

use super::{Change, Live, Node, Waiting};
use crate::cache::connect::{self, Handshake, Opened};
use crate::cache::context::{Call, Credentials};
use crate::cache::error::CacheError;
use crate::cache::gate::{Admit, Gate};
use crate::cache::retry::Failure;
use crate::cache::together::credentials_first;
use crate::otel;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

impl Node {
    /// The live connection, or one made or waited for within the call's
    /// window (see [`super::gate`]).
    pub(super) async fn connection(self: &Arc<Self>, call: &Call) -> Result<Arc<Live>, Failure> {
        if let Some(live) = self.live.load_full() {
            return Ok(live);
        }
        self.wait_for_connection(call).await
    }

    pub(super) async fn wait_for_connection(self: &Arc<Self>, call: &Call) -> Result<Arc<Live>, Failure> {
        let mut changes = self.changed.subscribe();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        loop {
            if let Some(live) = self.live.load_full() {
                return Ok(live);
            }
            if self.retired.load(Ordering::Acquire) {
                return Err(Failure::Retired);
            }
            let now = Instant::now();
            let admit = self
                .lock_gate()
                .admit(now, call.started, self.ctx.target.deadlines.ride_through);
            let until = match admit {
                Admit::Attempt => {
                    self.start_attempt();
                    call.deadline
                }
                Admit::Wait => call.deadline,
                Admit::WaitUntil(at) if at < call.wait_until => at,
                Admit::WaitUntil(_) => return Err(Failure::NoConnection(self.last_error())),
                Admit::Fail(e) => return Err(Failure::NoConnection(e)),
            };
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(Failure::NoConnection(self.last_error()));
                    }
                    if let Change::NoToken(e) = &*changes.borrow_and_update() {
                        return Err(Failure::NoConnection(e.clone()));
                    }
                }
                () = tokio::time::sleep_until(until) => {}
            }
            if Instant::now() >= call.deadline {
                return Err(Failure::NoConnection(self.last_error()));
            }
        }
    }

    pub(super) fn lock_gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What an invocation that gives up waiting is told.
    pub(super) fn last_error(&self) -> CacheError {
        self.lock_gate()
            .last_error()
            .cloned()
            .unwrap_or_else(|| CacheError::Unavailable(format!("no connection to {} could be made in time", self.addr)))
    }

    /// Makes one connection attempt in a task of its own (not tied to the
    /// invocation that asked, which may give up first), within the connect
    /// deadline.
    pub(super) fn start_attempt(self: &Arc<Self>) {
        let node = self.clone();
        // In the current span: an invocation waiting for this connection
        // shows the attempt in its trace.
        otel::spawn(async move { node.attempt().await });
    }

    pub(super) async fn attempt(self: Arc<Self>) {
        let mut span = otel::Span::start("connect", otel::Kind::Client);
        if span.is_recording() {
            span.set("server.address", self.host.clone());
            span.set("server.port", i64::from(self.port));
            span.set("azure_redis.tls", self.ctx.target.tls);
        }
        let made = span.scope(self.connect_in_time(None)).await;
        match &made {
            Ok(live) => {
                span.set("azure_redis.connection", live.number as i64);
                if live.number > 1 {
                    otel::count(otel::RECONNECTS, || self.metric_attributes([]));
                }
            }
            Err(e) => span.fail(e.kind(), &e.to_string()),
        }
        drop(span);
        match made {
            Ok(live) if self.retired.load(Ordering::Acquire) => {
                drop(live);
                self.lock_gate().abandoned();
                self.changed.send_replace(Change::Retired);
            }
            Ok(live) => {
                self.put_in_place(&live);
                tracing::info!(connection = live.number, node = %self.addr, "connected to the cache");
                self.after_connect(&live).await;
            }
            Err(e @ CacheError::Token(_)) => {
                self.lock_gate().abandoned();
                self.changed.send_replace(Change::NoToken(e));
            }
            Err(e) => {
                {
                    let mut gate = self.lock_gate();
                    let backoff = gate.failed(&e, Instant::now());
                    tracing::warn!(error = %e, node = %self.addr, failures = gate.failures,
                        retry_in_ms = backoff.as_millis() as u64, "could not connect to the cache");
                }
                self.changed.send_replace(Change::Failed);
                // A node that cannot be reached may have moved or been
                // replaced: the cluster reads its topology again.
                self.ctx.want_topology();
            }
        }
    }

    /// [`Node::connect_once`] within the connect deadline.
    pub(super) async fn connect_in_time(self: &Arc<Self>, to: Option<(&str, u16)>) -> Result<Arc<Live>, CacheError> {
        let budget = self.ctx.target.deadlines.connect;
        match tokio::time::timeout(budget, self.connect_once(to)).await {
            Ok(made) => made,
            Err(_) => {
                let addr = to.map_or_else(|| self.addr.clone(), |(host, port)| format!("{host}:{port}"));
                Err(CacheError::Unavailable(format!(
                    "connecting to {addr} took longer than {budget:?}"
                )))
            }
        }
    }

    /// Makes `live` the node's connection, opens the gate and tells the
    /// waiting invocations.
    pub(super) fn put_in_place(&self, live: &Arc<Live>) {
        self.install(live.clone());
        self.lock_gate().connected();
        self.changed.send_replace(Change::Connected);
    }

    /// A new connection with the newest credentials, to `to` or else to
    /// where this node's traffic goes now.
    ///
    /// TCP and the TLS handshake are made while the credentials are awaited
    /// (on a cold start, while the first token is fetched), and AUTH is sent
    /// once both are there ([`credentials_first`]: a token that cannot be
    /// had closes the new connection, or opens none when it is refused at
    /// once, and is the error when both fail).
    pub(super) async fn connect_once(self: &Arc<Self>, to: Option<(&str, u16)>) -> Result<Arc<Live>, CacheError> {
        let moved = self.moved_to();
        let (host, port) = to
            .or(moved.as_ref().map(|(h, p)| (h.as_str(), *p)))
            .unwrap_or((&self.host, self.port));
        let (creds, transport) = credentials_first(
            self.ctx.connect_credentials(),
            connect::transport(&self.ctx.target, host, port),
        )
        .await?;
        let owner = Arc::new(Mutex::new(Arc::downgrade(self)));
        let pushes = self.ctx.maintenance.wants_pushes().then(|| {
            let owner = owner.clone();
            move |push: redis::PushInfo| {
                let node = owner.lock().unwrap_or_else(|p| p.into_inner()).upgrade();
                if let Some(node) = node {
                    node.on_push(push);
                }
                Ok::<(), ()>(())
            }
        });
        let handshake = Handshake {
            user: creds.user(),
            password: creds.password(),
            pushes,
        };
        let Opened {
            conn,
            driver,
            last_read,
            in_flight,
        } = connect::authenticate(transport, host, port, handshake).await?;
        let number = self.stats.connects.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(Live {
            conn,
            number,
            authed_generation: AtomicU64::new(creds.generation()),
            reauth_after: Mutex::new(None),
            served: AtomicBool::new(false),
            last_read,
            in_flight,
            owner,
            driver,
        }))
    }

    /// Where new connections go while a handoff lasts.
    pub(super) fn moved_to(&self) -> Option<(String, u16)> {
        let mut moved = self.moved_to.lock().unwrap_or_else(|p| p.into_inner());
        match &*moved {
            Some((host, port, until)) if Instant::now() < *until => Some((host.clone(), *port)),
            Some(_) => {
                *moved = None;
                None
            }
            None => None,
        }
    }

    /// After a connection is in place: catch it up with a token that came
    /// while it was being made (so an idle node is not left on the old
    /// one), and ask for maintenance notifications on it.
    pub(super) async fn after_connect(&self, live: &Arc<Live>) {
        if let Some(newest) = self.ctx.tokens().and_then(|t| t.newest()) {
            if newest.generation > live.authed_generation.load(Ordering::Acquire) {
                let _one_at_a_time = self.reauth.lock().await;
                let call = Call::no_wait(&self.ctx);
                let _ = self.send_auth(live, &Credentials::Token(newest), false, &call).await;
            }
        }
        self.subscribe(live.conn.clone()).await;
    }
}
