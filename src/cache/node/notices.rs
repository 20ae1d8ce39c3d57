//! What a node does about the maintenance the cache announces (the
//! notifications themselves, and their parsing, are in
//! [`crate::cache::maintenance`]): ask for them on each new connection,
//! relax the command deadline while a node is in maintenance, check the
//! connection after a failover, and follow a handoff (`MOVING`) to the new
//! endpoint.

use super::Node;
use crate::cache::error::classify;
use crate::cache::maintenance::{
    azure_action, parse_azure_event, parse_handoff, text, AzureAction, Handoff, AZURE_CHANNEL, AZURE_RELAX_CAP,
    RELAXED_COMMAND,
};
use crate::otel;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a node stays relaxed after a handoff (`MOVING`): twice the
/// relaxed command deadline, as the smart-client-handoff clients do.
const AFTER_HANDOFF: Duration = Duration::from_secs(20);

impl Node {
    /// Every connection of this node: a live one, PINGed within the command
    /// deadline; one that does not answer is dropped (after a failover the
    /// cache announced, the connection may be to a demoted node).
    pub(in crate::cache) async fn check(&self) {
        let Some(live) = self.live.load_full() else {
            return;
        };
        let mut conn = live.conn.clone();
        let budget = self.ctx.target.deadlines.command;
        let ping = tokio::time::timeout(budget, redis::cmd("PING").query_async::<String>(&mut conn)).await;
        if !matches!(ping, Ok(Ok(_))) {
            self.lost(&live, "no answer to a PING after the cache announced a failover");
        }
    }

    /// Whether commands here get the relaxed deadline now.
    pub(in crate::cache) fn is_relaxed(&self) -> bool {
        let until = self.relaxed_until.load(Ordering::Relaxed);
        until != 0 && self.ctx.millis(Instant::now()) < until
    }

    /// Relaxes the command deadline here for `for_` (maintenance announced),
    /// or restores it (`None`).
    pub(in crate::cache) fn relax(&self, for_: Option<Duration>) {
        let until = for_.map_or(0, |d| self.ctx.millis(Instant::now() + d).max(1));
        self.relaxed_until.store(until, Ordering::Relaxed);
        self.ctx.maintenance.relaxed_changed(&self.addr, until);
    }

    /// A handoff (`MOVING`): connects to `to` (or, when the cache names no
    /// endpoint, to this node's own address after half of `time`), moves
    /// the traffic there, then lets the old connection close once the
    /// commands on it have finished. Reconnects go to `to` while the
    /// handoff lasts (twice `time`).
    pub(in crate::cache) async fn hand_off(self: Arc<Self>, to: Option<(String, u16)>, time: Duration) {
        let old = self.live.load_full();
        self.relax(Some(time + AFTER_HANDOFF));
        let (host, port) = match to {
            Some(to) => to,
            None => {
                tokio::time::sleep(time / 2).await;
                (self.host.clone(), self.port)
            }
        };
        *self.moved_to.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((host.clone(), port, Instant::now() + time * 2));
        match self.connect_in_time(Some((&host, port))).await {
            Ok(live) if !self.is_retired() => {
                self.put_in_place(&live);
                tracing::info!(node = %self.addr, to = %format!("{host}:{port}"), connection = live.number,
                    "handoff: traffic moved to the new endpoint; the old connection closes once its commands finish");
                drop(old);
                self.ctx.maintenance.done("MOVING", &self.addr);
                self.after_connect(&live).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(node = %self.addr, to = %format!("{host}:{port}"), error = %e,
                    "handoff: could not connect to the new endpoint; staying on the current connection until it closes");
            }
        }
    }

    /// Asks a new connection for the notifications the setting names. A
    /// refusal is logged once and changes nothing else.
    pub(in crate::cache) async fn subscribe(&self, mut conn: MultiplexedConnection) {
        let (ctx, addr) = (&self.ctx, &self.addr);
        let m = &ctx.maintenance;
        let budget = ctx.target.deadlines.command;
        if m.kinds().azure_events {
            match tokio::time::timeout(budget, conn.subscribe(AZURE_CHANNEL)).await {
                Ok(Ok(())) => tracing::debug!(node = %addr, "subscribed to {AZURE_CHANNEL}"),
                Ok(Err(e)) => {
                    if m.first_refusal_of_subscribe() {
                        tracing::warn!(node = %addr, error = %classify(&e),
                        "the cache refused SUBSCRIBE {AZURE_CHANNEL} (the access policy may not include @pubsub); \
                         Azure's maintenance notifications are off, nothing else changes");
                    }
                }
                Err(_) => tracing::debug!(node = %addr, "SUBSCRIBE {AZURE_CHANNEL} got no answer in time"),
            }
        }
        if m.kinds().handoffs {
            let endpoint_type = match ctx.target.host.parse::<std::net::IpAddr>() {
                Ok(_) => "external-ip",
                Err(_) => "external-fqdn",
            };
            let mut cmd = redis::cmd("CLIENT");
            cmd.arg("MAINT_NOTIFICATIONS")
                .arg("ON")
                .arg("moving-endpoint-type")
                .arg(endpoint_type);
            let answer = tokio::time::timeout(budget, cmd.query_async::<Value>(&mut conn)).await;
            if m.first_handoff_answer() {
                match answer {
                    Ok(Ok(_)) => tracing::info!(node = %addr, "the cache will announce maintenance handoffs"),
                    Ok(Err(e)) => tracing::info!(node = %addr, reply = %classify(&e),
                    "the cache does not offer maintenance notifications (CLIENT MAINT_NOTIFICATIONS); carrying on without"),
                    Err(_) => {
                        tracing::info!(node = %addr, "CLIENT MAINT_NOTIFICATIONS got no answer in time; carrying on without")
                    }
                }
            }
        }
    }

    /// A push message on one of this node's connections (called by the
    /// connection's I/O task: it never blocks, and spawns what takes time).
    pub(in crate::cache) fn on_push(self: &Arc<Self>, push: PushInfo) {
        let node = self;
        match &push.kind {
            PushKind::Message | PushKind::SMessage => {
                let channel = push.data.first().and_then(text);
                if channel.as_deref() == Some(AZURE_CHANNEL) {
                    if let Some(message) = push.data.get(1).and_then(text) {
                        node.on_azure_event(&message);
                    }
                }
            }
            PushKind::Other(kind) => {
                if let Some(handoff) = parse_handoff(kind, &push.data) {
                    node.on_handoff(handoff);
                }
            }
            _ => {}
        }
    }

    /// An `AzureRedisEvents` message.
    pub(super) fn on_azure_event(self: &Arc<Self>, message: &str) {
        let node = self;
        let ctx = &self.ctx;
        let m = &ctx.maintenance;
        let Some(event) = parse_azure_event(message) else {
            if m.first_time(message) {
                tracing::info!(node = %node.addr, "an {AZURE_CHANNEL} message without a NotificationType; ignored");
            }
            return;
        };
        let cluster = ctx.cluster.load(Ordering::Relaxed);
        let about_this_node = !cluster || event.ssl_port == Some(node.port) || event.non_ssl_port == Some(node.port);
        let named = match (&event.ip, event.ssl_port) {
            (Some(ip), Some(port)) => format!("{ip}:{port}"),
            (Some(ip), None) => ip.clone(),
            _ => node.addr.clone(),
        };
        // One span per notification (every connection of a cluster hears
        // it): it lasts as long as what the handler does about it.
        let mut span = otel::Span::none();
        if m.first_time(message) {
            tracing::info!(kind = %event.kind, node = %named, start = event.start.as_deref().unwrap_or(""),
            is_replica = event.is_replica.unwrap_or(false), "maintenance notification from the cache ({AZURE_CHANNEL})");
            m.show(&event.kind, &named, event.start.clone());
            span = notification_span(AZURE_CHANNEL, event.kind.clone(), &named);
        }
        match azure_action(&event.kind) {
            AzureAction::Note => {}
            AzureAction::Relax if about_this_node => node.relax(Some(AZURE_RELAX_CAP)),
            AzureAction::Relax => {}
            AzureAction::Recheck => {
                let node = node.clone();
                tokio::spawn(async move {
                    let span = span;
                    span.scope(node.check()).await;
                });
                ctx.want_topology();
            }
            AzureAction::Reshape => ctx.want_topology(),
            AzureAction::End => {
                if about_this_node {
                    node.relax(None);
                }
                m.clear();
            }
        }
    }

    /// A Redis handoff push.
    pub(super) fn on_handoff(self: &Arc<Self>, handoff: Handoff) {
        let node = self;
        let ctx = &self.ctx;
        let m = &ctx.maintenance;
        let (kind, seq) = match &handoff {
            Handoff::Moving { seq, .. } => ("MOVING", seq),
            Handoff::Migrating { seq, .. } => ("MIGRATING", seq),
            Handoff::Migrated { seq } => ("MIGRATED", seq),
            Handoff::FailingOver { seq, .. } => ("FAILING_OVER", seq),
            Handoff::FailedOver { seq } => ("FAILED_OVER", seq),
            Handoff::SMigrating { seq } => ("SMIGRATING", seq),
            Handoff::SMigrated { seq } => ("SMIGRATED", seq),
        };
        let mut span = otel::Span::none();
        if m.first_time(&format!("{kind} {seq} {}", node.addr)) {
            tracing::info!(kind = %kind, seq, node = %node.addr, "maintenance notification from the cache (handoff)");
            span = notification_span("handoff", kind.to_owned(), &node.addr);
        }
        match handoff {
            Handoff::Moving { time, to, .. } => {
                m.show(kind, &node.addr, None);
                let node = node.clone();
                tokio::spawn(async move {
                    let span = span;
                    span.scope(node.hand_off(to, time)).await;
                });
            }
            Handoff::Migrating { time, .. } | Handoff::FailingOver { time, .. } => {
                m.show(kind, &node.addr, None);
                node.relax(Some((time * 2).max(RELAXED_COMMAND)));
            }
            Handoff::Migrated { .. } | Handoff::FailedOver { .. } => {
                node.relax(None);
                m.clear();
            }
            Handoff::SMigrating { .. } => m.show(kind, &node.addr, None),
            Handoff::SMigrated { .. } => {
                ctx.want_topology();
                m.clear();
            }
        }
    }
}

/// The root span of a maintenance notification (`source`: the channel, or
/// `handoff` for Redis's own pushes), about the node `node` names.
fn notification_span(source: &'static str, kind: String, node: &str) -> otel::Span {
    let mut span = otel::detached(|| otel::Span::start("maintenance notification", otel::Kind::Internal));
    if span.is_recording() {
        span.set("azure_redis.notification.source", source);
        span.set("azure_redis.notification.kind", kind);
        span.set("azure_redis.node", node.to_owned());
    }
    span
}
