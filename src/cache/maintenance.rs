//! Maintenance notifications: what the cache announces before it fails
//! over, patches or moves a node, and what the connections do about it.
//!
//! Two kinds, chosen by `Redis__maintenanceNotifications` (`auto`, `on`,
//! `off`; `auto` picks by host name):
//!
//! - **`AzureRedisEvents`** (Azure Cache for Redis: Basic, Standard,
//!   Premium, every shard of a clustered Premium cache): pub/sub messages on
//!   that channel, `key|value` pairs separated by `|`
//!   (`NotificationType|NodeMaintenanceStarting|StartTimeInUTC|...`).
//!   Each connection subscribes on RESP3, on the same multiplexed
//!   connection, and again after every reconnect; a refused `SUBSCRIBE`
//!   (a Data Reader access policy has no `@pubsub`) is logged once and
//!   changes nothing else. `NodeMaintenanceStarting`/`Start` relax the
//!   command deadline of the node named (by its port on a clustered cache),
//!   as redis-py and Jedis do; `NodeMaintenanceFailoverComplete` checks the
//!   connection and reads the topology again; `NodeMaintenanceEnded`
//!   restores the deadline. Parsing is lenient: unknown keys are skipped,
//!   values may be empty, times have no zone.
//! - **Redis's maintenance notifications** ("smart client handoffs", Redis
//!   Software 8.0.2+, Redis Cloud; Azure Managed Redis by host name): the
//!   connection asks with `CLIENT MAINT_NOTIFICATIONS ON
//!   moving-endpoint-type ...`; a server that does not know the command
//!   (redis 7) answers an error, logged once. RESP3 pushes then announce
//!   `MOVING` (connect to the new endpoint, move the traffic, then let the
//!   old connection close), `MIGRATING`/`FAILING_OVER` (relax) and
//!   `MIGRATED`/`FAILED_OVER` (restore), and on a cluster
//!   `SMIGRATING`/`SMIGRATED` (read the topology again).
//!
//! Each notification is logged once (a clustered cache relays every
//! `AzureRedisEvents` message to every shard), and the latest shows in
//! Health as `maintenance` until it ends.

use crate::settings::NotificationSetting;
use redis::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The channel Azure Cache for Redis publishes maintenance on.
pub(crate) const AZURE_CHANNEL: &str = "AzureRedisEvents";

/// How long a command may take on a node in maintenance (a handoff, a
/// failover or a migration announced by the cache), as redis-py, go-redis
/// and Jedis relax theirs.
pub(super) const RELAXED_COMMAND: Duration = Duration::from_secs(10);

/// The command deadline `command`, relaxed to [`RELAXED_COMMAND`] when the
/// cache announced maintenance.
pub(super) fn command_deadline(command: Duration, relaxed: bool) -> Duration {
    match relaxed {
        true => command.max(RELAXED_COMMAND),
        false => command,
    }
}

/// How long a node stays relaxed after `NodeMaintenanceStarting`/`Start`
/// when no `NodeMaintenanceEnded` comes (Microsoft: Ended about 3 minutes
/// after the node is back).
pub(super) const AZURE_RELAX_CAP: Duration = Duration::from_secs(300);

/// How long a notification stays in Health when nothing ends it.
const SHOWN_FOR: Duration = Duration::from_secs(600);

/// How long a notification's text is remembered, so the same message
/// relayed by every shard is logged once.
const REMEMBERED_FOR: Duration = Duration::from_secs(300);

/// Which notifications the connections ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Kinds {
    /// Subscribe to `AzureRedisEvents`.
    pub(crate) azure_events: bool,
    /// Send `CLIENT MAINT_NOTIFICATIONS ON`.
    pub(crate) handoffs: bool,
}

impl Kinds {
    /// What `Redis__maintenanceNotifications` = `wanted` means for a cache at `host`.
    pub(crate) fn for_host(wanted: NotificationSetting, host: &str) -> Kinds {
        let host = host.to_ascii_lowercase();
        match wanted {
            NotificationSetting::Off => Kinds::default(),
            NotificationSetting::On => Kinds {
                azure_events: true,
                handoffs: true,
            },
            NotificationSetting::Auto => Kinds {
                azure_events: host.ends_with(".redis.cache.windows.net"),
                handoffs: host.ends_with(".redis.azure.net"),
            },
        }
    }
}

/// A notification as Health shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Notice {
    /// `NodeMaintenanceStarting`, `MOVING`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The node it is about, as the cache named it, or the connection's.
    pub node: String,
    /// When the maintenance starts (`StartTimeInUTC`), if said.
    pub start_time: Option<String>,
    /// When it arrived (RFC 3339, UTC).
    pub received_at: String,
    #[serde(skip)]
    received: Option<Instant>,
}

/// What the connections were told, and the notifications asked for.
#[derive(Debug, Default)]
pub(crate) struct Maintenance {
    kinds: Kinds,
    current: Mutex<Option<Notice>>,
    /// Texts of recent notifications, to log each once.
    seen: Mutex<VecDeque<(Instant, String)>>,
    subscribe_refused: AtomicBool,
    handoffs_answered: AtomicBool,
    /// Until when (ms since the context's epoch) each relaxed node, by
    /// address, has the relaxed deadline.
    relaxed: Mutex<HashMap<String, u64>>,
    /// The latest of those instants; 0 when no node is relaxed. Read by
    /// every new call, so an atomic.
    relaxed_until: AtomicU64,
}

impl Maintenance {
    pub(crate) fn new(kinds: Kinds) -> Self {
        Self {
            kinds,
            ..Self::default()
        }
    }

    /// Which notifications the connections ask for.
    pub(super) fn kinds(&self) -> Kinds {
        self.kinds
    }

    /// Whether this is the first refused `SUBSCRIBE` (to log it once).
    pub(super) fn first_refusal_of_subscribe(&self) -> bool {
        !self.subscribe_refused.swap(true, Ordering::Relaxed)
    }

    /// Whether this is the first answer to `CLIENT MAINT_NOTIFICATIONS` (to
    /// log it once).
    pub(super) fn first_handoff_answer(&self) -> bool {
        !self.handoffs_answered.swap(true, Ordering::Relaxed)
    }

    /// Whether connections speak RESP3 with a push sender.
    pub(super) fn wants_pushes(&self) -> bool {
        self.kinds.azure_events || self.kinds.handoffs
    }

    /// The latest notification still in force, for Health.
    pub(crate) fn current(&self) -> Option<Notice> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current
            .as_ref()
            .and_then(|n| n.received)
            .is_some_and(|at| at.elapsed() > SHOWN_FOR)
        {
            *current = None;
        }
        current.clone()
    }

    /// Whether some node has the relaxed deadline at `now_ms` (ms since
    /// the context's epoch): new calls then get the longer deadline too.
    pub(super) fn any_relaxed(&self, now_ms: u64) -> bool {
        now_ms < self.relaxed_until.load(Ordering::Relaxed)
    }

    /// The node at `node` has the relaxed deadline until `until_ms` (ms
    /// since the context's epoch), or no longer (`0`).
    pub(super) fn relaxed_changed(&self, node: &str, until_ms: u64) {
        let mut relaxed = self.relaxed.lock().unwrap_or_else(|p| p.into_inner());
        match until_ms {
            0 => relaxed.remove(node),
            until => relaxed.insert(node.to_owned(), until),
        };
        let latest = relaxed.values().max().copied().unwrap_or(0);
        self.relaxed_until.store(latest, Ordering::Relaxed);
    }

    /// Whether `text` is new (not seen in the last few minutes); remembers it.
    pub(super) fn first_time(&self, text: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|(at, _)| at.elapsed() < REMEMBERED_FOR);
        if seen.iter().any(|(_, t)| t == text) {
            return false;
        }
        if seen.len() >= 64 {
            seen.pop_front();
        }
        seen.push_back((Instant::now(), text.to_owned()));
        true
    }

    pub(super) fn show(&self, kind: &str, node: &str, start_time: Option<String>) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Notice {
            kind: kind.to_owned(),
            node: node.to_owned(),
            start_time,
            received_at: crate::clock::now_rfc3339(),
            received: Some(Instant::now()),
        });
    }

    pub(super) fn clear(&self) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Clears the notice shown if it is `kind` about `node`: a handoff that
    /// is over.
    pub(super) fn done(&self, kind: &str, node: &str) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|n| n.kind == kind && n.node == node) {
            *current = None;
        }
    }
}

/// A push element as text, whatever RESP type carries it.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// One `AzureRedisEvents` message, leniently parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct AzureEvent {
    /// `NotificationType`.
    pub(super) kind: String,
    /// `StartTimeInUTC` (no zone).
    pub(super) start: Option<String>,
    /// `IsReplica`.
    pub(super) is_replica: Option<bool>,
    /// `IPAddress`.
    pub(super) ip: Option<String>,
    /// `SSLPort`.
    pub(super) ssl_port: Option<u16>,
    /// `NonSSLPort`.
    pub(super) non_ssl_port: Option<u16>,
}

/// Parses `Key|value|Key|value...`: keys in any case and order, unknown
/// ones skipped, empty values absent. `None` without a `NotificationType`.
pub(super) fn parse_azure_event(message: &str) -> Option<AzureEvent> {
    let parts: Vec<&str> = message.split('|').map(str::trim).collect();
    let mut event = AzureEvent::default();
    for pair in parts.chunks(2) {
        let [key, value] = pair else { continue };
        if value.is_empty() {
            continue;
        }
        match key.to_ascii_lowercase().as_str() {
            "notificationtype" => event.kind = (*value).to_owned(),
            "starttimeinutc" => event.start = Some((*value).to_owned()),
            "isreplica" => {
                event.is_replica = value.parse::<bool>().ok().or(match *value {
                    "True" => Some(true),
                    "False" => Some(false),
                    _ => None,
                })
            }
            "ipaddress" => event.ip = Some((*value).to_owned()),
            "sslport" => event.ssl_port = value.parse().ok(),
            "nonsslport" => event.non_ssl_port = value.parse().ok(),
            _ => {}
        }
    }
    (!event.kind.is_empty()).then_some(event)
}

/// What an `AzureRedisEvents` type asks the connections to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AzureAction {
    /// Nothing but a log line (`NodeMaintenanceScheduled`, unknown types).
    Note,
    /// Relax the deadline of the node named (`...Starting`, `...Start`).
    Relax,
    /// Check the connection, read the topology (`...FailoverComplete`,
    /// the older `...Failover`).
    Recheck,
    /// Read the topology (`NodeMaintenanceScaleComplete`).
    Reshape,
    /// Restore the deadline (`NodeMaintenanceEnded`).
    End,
}

pub(super) fn azure_action(kind: &str) -> AzureAction {
    match kind {
        "NodeMaintenanceStarting" | "NodeMaintenanceStart" => AzureAction::Relax,
        "NodeMaintenanceFailoverComplete" | "NodeMaintenanceFailover" => AzureAction::Recheck,
        "NodeMaintenanceScaleComplete" => AzureAction::Reshape,
        "NodeMaintenanceEnded" => AzureAction::End,
        _ => AzureAction::Note,
    }
}

/// A Redis maintenance push ("smart client handoffs"). Each carries the
/// server's sequence number `seq`, by which a repeat is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Handoff {
    /// The endpoint moves: connect to `to` (or the same name after half of
    /// `time` when `None`) before the old connection closes after `time`.
    Moving {
        seq: i64,
        /// Seconds until the old connection closes.
        time: Duration,
        /// The new endpoint.
        to: Option<(String, u16)>,
    },
    /// Slots are migrating off this node for about `time`.
    Migrating { seq: i64, time: Duration },
    /// The migration is done.
    Migrated { seq: i64 },
    /// This node is failing over for about `time`.
    FailingOver { seq: i64, time: Duration },
    /// The failover is done.
    FailedOver { seq: i64 },
    /// On a cluster: slots are moving.
    SMigrating { seq: i64 },
    /// On a cluster: slots moved.
    SMigrated { seq: i64 },
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.trim().parse().ok(),
    }
}

/// `host:port` (IPv6 in brackets) as an endpoint; `None` for "null", nil or
/// anything else.
fn endpoint(v: &Value) -> Option<(String, u16)> {
    let s = text(v)?;
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host == "null" {
        return None;
    }
    Some((host.to_owned(), port.parse().ok()?))
}

/// Parses a push by position (`MOVING <seq> <time> <endpoint>`, ...);
/// trailing fields may be missing or extra. `None` for other pushes.
pub(super) fn parse_handoff(kind: &str, data: &[Value]) -> Option<Handoff> {
    let seq = || data.first().and_then(int);
    let secs = || data.get(1).and_then(int).map(|s| Duration::from_secs(s.max(0) as u64));
    Some(match kind.to_ascii_uppercase().as_str() {
        "MOVING" => Handoff::Moving {
            seq: seq()?,
            time: secs()?,
            to: data.get(2).and_then(endpoint),
        },
        "MIGRATING" => Handoff::Migrating {
            seq: seq()?,
            time: secs().unwrap_or(RELAXED_COMMAND),
        },
        "MIGRATED" => Handoff::Migrated { seq: seq()? },
        "FAILING_OVER" => Handoff::FailingOver {
            seq: seq()?,
            time: secs().unwrap_or(RELAXED_COMMAND),
        },
        "FAILED_OVER" => Handoff::FailedOver { seq: seq()? },
        "SMIGRATING" => Handoff::SMigrating { seq: seq()? },
        "SMIGRATED" => Handoff::SMigrated { seq: seq()? },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// New calls are relaxed while any node is: until the last relaxed
    /// node is restored, or its relaxed time has passed.
    #[test]
    fn relaxed_while_any_node_is() {
        let m = Maintenance::default();
        assert!(!m.any_relaxed(0));
        m.relaxed_changed("a:1", 1_000);
        m.relaxed_changed("b:1", 5_000);
        m.relaxed_changed("b:1", 0);
        assert!(m.any_relaxed(500), "a is still relaxed");
        assert!(!m.any_relaxed(1_000), "a's relaxed time is over");
        m.relaxed_changed("a:1", 0);
        assert!(!m.any_relaxed(500));
        assert_eq!(command_deadline(Duration::from_secs(3), true), RELAXED_COMMAND);
        assert_eq!(command_deadline(Duration::from_secs(30), true), Duration::from_secs(30));
        assert_eq!(command_deadline(Duration::from_secs(3), false), Duration::from_secs(3));
    }

    /// Microsoft's example message, and the leniency the docs promise:
    /// keys in another order and case, empty values, unknown keys, a
    /// trailing key without a value, no `NotificationType`.
    #[test]
    fn parses_azure_events_leniently() {
        let sample = "NotificationType|NodeMaintenanceStarting|StartTimeInUTC|2020-10-14T16:26:10|IsReplica|False|IPAddress|52.158.249.185|SSLPort|15001|NonSSLPort|13001";
        assert_eq!(
            parse_azure_event(sample),
            Some(AzureEvent {
                kind: "NodeMaintenanceStarting".into(),
                start: Some("2020-10-14T16:26:10".into()),
                is_replica: Some(false),
                ip: Some("52.158.249.185".into()),
                ssl_port: Some(15001),
                non_ssl_port: Some(13001),
            })
        );
        let odd =
            "sslport|15002|NewKey|whatever|notificationtype|NodeMaintenanceEnded|IPAddress||IsReplica|true|Trailing";
        let event = parse_azure_event(odd).unwrap();
        assert_eq!(event.kind, "NodeMaintenanceEnded");
        assert_eq!(event.ssl_port, Some(15002));
        assert_eq!(event.ip, None);
        assert_eq!(event.is_replica, Some(true));
        assert_eq!(parse_azure_event("StartTimeInUTC|2020-10-14T16:26:10"), None);
        assert_eq!(parse_azure_event(""), None);
        assert_eq!(parse_azure_event("|||"), None);
    }

    /// What each type asks for, the older names included.
    #[test]
    fn azure_actions() {
        assert_eq!(azure_action("NodeMaintenanceScheduled"), AzureAction::Note);
        assert_eq!(azure_action("NodeMaintenanceStarting"), AzureAction::Relax);
        assert_eq!(azure_action("NodeMaintenanceStart"), AzureAction::Relax);
        assert_eq!(azure_action("NodeMaintenanceFailoverComplete"), AzureAction::Recheck);
        assert_eq!(azure_action("NodeMaintenanceFailover"), AzureAction::Recheck);
        assert_eq!(azure_action("NodeMaintenanceScaleComplete"), AzureAction::Reshape);
        assert_eq!(azure_action("NodeMaintenanceEnded"), AzureAction::End);
        assert_eq!(azure_action("SomethingNew"), AzureAction::Note);
    }

    /// Pushes parsed by position from their wire form, with optional and
    /// extra trailing fields; other pushes are not handoffs.
    #[test]
    fn parses_handoff_pushes() {
        let push = |wire: &str| match redis::parse_redis_value(wire.as_bytes()).unwrap() {
            Value::Push { kind, data } => (kind.to_string(), data),
            other => panic!("{other:?}"),
        };
        let (kind, data) = push(">4\r\n$6\r\nMOVING\r\n:17\r\n:15\r\n$19\r\n54.78.247.156:12075\r\n");
        assert_eq!(
            parse_handoff(&kind, &data),
            Some(Handoff::Moving {
                seq: 17,
                time: Duration::from_secs(15),
                to: Some(("54.78.247.156".into(), 12075)),
            })
        );
        let (kind, data) = push(">4\r\n$6\r\nMOVING\r\n:18\r\n:8\r\n_\r\n");
        assert_eq!(
            parse_handoff(&kind, &data),
            Some(Handoff::Moving {
                seq: 18,
                time: Duration::from_secs(8),
                to: None
            })
        );
        let (kind, data) = push(">4\r\n$6\r\nMOVING\r\n:19\r\n:8\r\n$4\r\nnull\r\n");
        assert!(matches!(
            parse_handoff(&kind, &data),
            Some(Handoff::Moving { to: None, .. })
        ));
        let (kind, data) = push(">4\r\n$9\r\nMIGRATING\r\n:3\r\n:10\r\n*1\r\n$1\r\n1\r\n");
        assert_eq!(
            parse_handoff(&kind, &data),
            Some(Handoff::Migrating {
                seq: 3,
                time: Duration::from_secs(10)
            })
        );
        let (kind, data) = push(">2\r\n$8\r\nMIGRATED\r\n:3\r\n");
        assert_eq!(parse_handoff(&kind, &data), Some(Handoff::Migrated { seq: 3 }));
        let (kind, data) = push(">3\r\n$12\r\nFAILING_OVER\r\n:4\r\n:2\r\n");
        assert_eq!(
            parse_handoff(&kind, &data),
            Some(Handoff::FailingOver {
                seq: 4,
                time: Duration::from_secs(2)
            })
        );
        let (kind, data) = push(">2\r\n$11\r\nFAILED_OVER\r\n:4\r\n");
        assert_eq!(parse_handoff(&kind, &data), Some(Handoff::FailedOver { seq: 4 }));
        let (kind, data) = push(">3\r\n$10\r\nSMIGRATING\r\n:5\r\n$9\r\n1000-2000\r\n");
        assert_eq!(parse_handoff(&kind, &data), Some(Handoff::SMigrating { seq: 5 }));
        assert_eq!(
            parse_handoff("SMIGRATED", &[Value::Int(6)]),
            Some(Handoff::SMigrated { seq: 6 })
        );
        assert_eq!(parse_handoff("MOVING", &[]), None);
        assert_eq!(parse_handoff("invalidate", &[Value::Int(1)]), None);
    }

    /// `auto` picks by host name; `on` and `off` do not look.
    #[test]
    fn kinds_by_setting_and_host() {
        let auto = |h| Kinds::for_host(NotificationSetting::Auto, h);
        assert_eq!(
            auto("contoso.redis.cache.windows.net"),
            Kinds {
                azure_events: true,
                handoffs: false
            }
        );
        assert_eq!(
            auto("Contoso.WestEurope.Redis.Azure.Net"),
            Kinds {
                azure_events: false,
                handoffs: true
            }
        );
        assert_eq!(auto("127.0.0.1"), Kinds::default());
        assert_eq!(
            Kinds::for_host(NotificationSetting::On, "127.0.0.1"),
            Kinds {
                azure_events: true,
                handoffs: true
            }
        );
        assert_eq!(
            Kinds::for_host(NotificationSetting::Off, "x.redis.cache.windows.net"),
            Kinds::default()
        );
    }
}
