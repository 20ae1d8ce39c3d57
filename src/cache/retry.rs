//! What to do after a try of a command failed, and how long to wait between
//! tries, as pure functions of the failure and the clock.
//!
//! An invocation rides through a lost connection or a cache that is not
//! ready (`LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`)
//! until its ride-through window ends, instead of failing after a fixed
//! number of tries. A command that may have reached Redis before its
//! connection broke is sent again only if sending it twice does what sending
//! it once does ([`super::replay`]). Redirects (`MOVED`, `ASK`) are followed
//! at most [`MAX_REDIRECTS`] times. The node's own waiting for a connection
//! (backoff, fail-fast in a long outage) is in [`super::gate`].

use super::error::CacheError;
use std::time::Duration;
use tokio::time::Instant;

/// Redirects one command may follow (`MOVED`, `ASK`, a node that left the
/// topology while the command waited for it) before giving up.
pub(super) const MAX_REDIRECTS: u32 = 5;

/// The pause after the first "not now" answer (`LOADING`, `TRYAGAIN`, ...);
/// it doubles after each, up to [`NOT_NOW_PAUSE_CAP`].
const NOT_NOW_PAUSE_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between tries of a cache that answers "not now".
const NOT_NOW_PAUSE_CAP: Duration = Duration::from_secs(1);
/// The first wait before re-sending a refused newer token on a live
/// connection; it doubles after each refusal, up to [`REAUTH_CAP`].
const REAUTH_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between re-AUTHs the cache refused.
const REAUTH_CAP: Duration = Duration::from_secs(30);

/// `first` doubled `n` times (at most 2^10), but no more than `cap`.
pub(super) fn doubling(first: Duration, n: u32, cap: Duration) -> Duration {
    (first * (1u32 << n.min(10))).min(cap)
}

/// Pause before the next try after the `n`th "not now" answer in a row:
/// 100 ms, 200 ms, 400 ms, 800 ms, then 1 s.
pub(super) fn not_now_pause(n: u32) -> Duration {
    doubling(NOT_NOW_PAUSE_FIRST, n.saturating_sub(1), NOT_NOW_PAUSE_CAP)
}

/// Wait before re-sending `AUTH` on a live connection after the cache
/// refused a newer token `failures` times in a row: 1 s doubling to 30 s.
/// The connection keeps the identity it has meanwhile.
pub(super) fn reauth_backoff(failures: u32) -> Duration {
    doubling(REAUTH_FIRST, failures.saturating_sub(1), REAUTH_CAP)
}

/// How one try of a command on one node went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// No connection could be had, so nothing was sent: the node gave up
    /// waiting (its backoff reaches past the window, a long outage, refused
    /// credentials, no token, or the deadline).
    NoConnection(CacheError),
    /// The node left the cluster's topology while the command waited for
    /// it; nothing was sent: route the command again.
    Retired,
    /// The connection broke after the command was written: it may have been
    /// applied.
    Lost(CacheError),
    /// No answer within the command deadline. `abandoned`: nothing came
    /// back on the connection for half that deadline, so it was taken for
    /// dead and dropped (the command may have been applied); otherwise the
    /// command itself is slow.
    TimedOut {
        /// The command deadline that passed.
        budget: Duration,
        /// Whether the connection went silent and was dropped.
        abandoned: bool,
    },
    /// `MOVED slot addr`: the slot lives on another master now.
    Moved {
        slot: u16,
        /// The master that owns it, `host:port`.
        addr: String,
    },
    /// `ASK slot addr`: the slot is migrating; ask that node, once, with `ASKING`.
    Ask {
        /// The node importing the slot, `host:port`.
        addr: String,
    },
    /// The cache did not run the command and said to come back later
    /// (`LOADING`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`).
    NotNow(String),
    /// An error answer that trying again will not change.
    Reply(CacheError),
}

impl Failure {
    /// What a caller is told when this failure ends the command.
    pub(super) fn into_cache_error(self) -> CacheError {
        match self {
            Self::NoConnection(e) | Self::Reply(e) => e,
            Self::Lost(e) => e,
            Self::Retired => CacheError::Unavailable("the node left the cluster while the command waited".into()),
            Self::TimedOut { budget, .. } => CacheError::Timeout(budget),
            Self::Moved { slot, addr } => CacheError::Command(format!("MOVED {slot} {addr}")),
            Self::Ask { addr } => CacheError::Command(format!("ASK {addr}")),
            Self::NotNow(msg) => CacheError::Unavailable(msg),
        }
    }

    /// Its class (`error.type` in telemetry) and a sentence, for the
    /// try's span.
    pub(super) fn telemetry(&self) -> (&'static str, String) {
        match self {
            Self::NoConnection(e) => (e.kind(), e.to_string()),
            Self::Retired => (
                "node_retired",
                "the node left the cluster while the command waited".into(),
            ),
            Self::Lost(e) => ("connection_lost", e.to_string()),
            Self::TimedOut { budget, abandoned } => (
                "timeout",
                format!(
                    "no answer within {budget:?}{}",
                    if *abandoned {
                        "; the connection was silent and dropped"
                    } else {
                        ""
                    }
                ),
            ),
            Self::Moved { slot, addr } => ("MOVED", format!("MOVED slot {slot} to {addr}")),
            Self::Ask { addr } => ("ASK", format!("ASK to {addr}")),
            Self::NotNow(msg) => ("not_now", msg.clone()),
            Self::Reply(e) => (e.kind(), e.to_string()),
        }
    }
}

/// What one command has been through so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tried {
    /// `MOVED`, `ASK` and re-routes followed.
    pub(super) redirects: u32,
    /// "Not now" answers in a row.
    pub(super) not_now: u32,
}

/// Where the command runs, for [`decide`]: redirects only mean something on
/// a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Routing {
    /// The one endpoint.
    Standalone,
    /// A cluster, routed by the key's slot.
    Cluster,
    /// A cluster, pinned to one master (a command about that master).
    Pinned,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// Send again now: the node's connection rides through (it waits for
    /// the node to come back, within the window).
    Retry,
    /// Patch `slot` to `addr` and send to the new owner.
    FollowMoved {
        /// The slot that moved.
        slot: u16,
        /// Its new owner.
        addr: String,
    },
    /// Send once to `addr`, preceded by `ASKING`.
    FollowAsk {
        /// The importing node.
        addr: String,
    },
    /// Wait, then send again; on one endpoint answering `READONLY` (a
    /// replica now), drop the connection first so the next one reaches the
    /// new primary.
    Pause {
        /// How long.
        pause: Duration,
        /// Drop the connection first (`READONLY` on one endpoint).
        reconnect: bool,
        /// Read the cluster's topology meanwhile (a failover, a reshard, a
        /// slot with no master yet).
        reread: bool,
    },
    /// Answer this error.
    GiveUp(CacheError),
}

/// After a try failed with `failure` at `now`: what next, given what the
/// command has been through (`tried`, updated here), whether sending it
/// again is safe after it may have been applied (`replay_safe`), and the
/// end of its ride-through window (`wait_until`).
pub(super) fn decide(
    failure: Failure,
    tried: &mut Tried,
    routing: Routing,
    replay_safe: bool,
    now: Instant,
    wait_until: Instant,
) -> Next {
    let riding = now < wait_until;
    match failure {
        Failure::NoConnection(e) | Failure::Reply(e) => Next::GiveUp(e),
        Failure::Retired if routing == Routing::Cluster && tried.redirects < MAX_REDIRECTS => {
            tried.redirects += 1;
            Next::Retry
        }
        Failure::Retired => Next::GiveUp(Failure::Retired.into_cache_error()),
        Failure::Lost(e) if !replay_safe => Next::GiveUp(CacheError::Unavailable(format!(
            "the connection broke after the command was sent, so it may or may not have been applied; \
             it is not sent twice ({e})"
        ))),
        Failure::Lost(e) => match riding {
            true => Next::Retry,
            false => Next::GiveUp(e),
        },
        Failure::TimedOut { budget, abandoned } => match abandoned && replay_safe && riding {
            true => Next::Retry,
            false => Next::GiveUp(CacheError::Timeout(budget)),
        },
        Failure::Moved { slot, addr } if routing != Routing::Cluster => {
            Next::GiveUp(Failure::Moved { slot, addr }.into_cache_error())
        }
        Failure::Ask { addr } if routing != Routing::Cluster => Next::GiveUp(Failure::Ask { addr }.into_cache_error()),
        Failure::Moved { slot, addr } => match tried.redirects < MAX_REDIRECTS {
            true => {
                tried.redirects += 1;
                Next::FollowMoved { slot, addr }
            }
            false => Next::GiveUp(CacheError::Unavailable(format!(
                "slot {slot} keeps moving (last MOVED to {addr})"
            ))),
        },
        Failure::Ask { addr } => match tried.redirects < MAX_REDIRECTS {
            true => {
                tried.redirects += 1;
                Next::FollowAsk { addr }
            }
            false => Next::GiveUp(CacheError::Unavailable(format!(
                "a slot keeps moving (last ASK to {addr})"
            ))),
        },
        Failure::NotNow(msg) => {
            tried.not_now += 1;
            let pause = not_now_pause(tried.not_now);
            if now + pause >= wait_until {
                return Next::GiveUp(CacheError::Unavailable(msg));
            }
            let reconnect = routing == Routing::Standalone && msg.starts_with("READONLY");
            let reread = routing != Routing::Standalone;
            Next::Pause {
                pause,
                reconnect,
                reread,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The schedules the README gives: 100 ms doubling to 1 s between tries
    /// of a cache that says "not now"; 1 s doubling to 30 s for a refused
    /// re-AUTH.
    #[test]
    fn schedules() {
        let not_now: Vec<_> = (1..=6).map(not_now_pause).collect();
        assert_eq!(not_now, [100, 200, 400, 800, 1000, 1000].map(ms));
        let reauth: Vec<_> = (1..=7).map(reauth_backoff).collect();
        assert_eq!(reauth, [1, 2, 4, 8, 16, 30, 30].map(Duration::from_secs));
        assert_eq!(reauth_backoff(u32::MAX), Duration::from_secs(30));
    }

    fn unavailable() -> CacheError {
        CacheError::Unavailable("connection reset".into())
    }

    /// One case of the table: the failure, the routing, whether the command
    /// is safe to send twice, ms left in the window, redirects already
    /// followed, and what must come next.
    struct Case {
        failure: Failure,
        routing: Routing,
        replay_safe: bool,
        left_ms: u64,
        redirects: u32,
        next: Next,
    }

    /// Every failure, routed every way: a lost connection rides through
    /// only for a command safe to send twice; a silent connection likewise,
    /// a slow command never; MOVED (patch the slot) and ASK (the importing
    /// node, once) are followed 5 times on a cluster and refused elsewhere;
    /// "not now" pauses within the window, reading the topology again on a
    /// cluster (a standalone READONLY reconnects); final answers end it.
    #[tokio::test(start_paused = true)]
    async fn decisions() {
        use Failure as F;
        use Routing::{Cluster, Pinned, Standalone};
        let moved = || F::Moved {
            slot: 7,
            addr: "10.0.0.2:8501".into(),
        };
        let cases = vec![
            // A lost connection: again, if safe, within the window.
            Case {
                failure: F::Lost(unavailable()),
                routing: Standalone,
                replay_safe: true,
                left_ms: 5000,
                redirects: 0,
                next: Next::Retry,
            },
            Case {
                failure: F::Lost(unavailable()),
                routing: Cluster,
                replay_safe: true,
                left_ms: 1,
                redirects: 0,
                next: Next::Retry,
            },
            Case {
                failure: F::Lost(unavailable()),
                routing: Standalone,
                replay_safe: true,
                left_ms: 0,
                redirects: 0,
                next: Next::GiveUp(unavailable()),
            },
            // A silent connection: dropped, and the command sent again if safe.
            Case {
                failure: F::TimedOut {
                    budget: ms(5000),
                    abandoned: true,
                },
                routing: Cluster,
                replay_safe: true,
                left_ms: 4000,
                redirects: 0,
                next: Next::Retry,
            },
            Case {
                failure: F::TimedOut {
                    budget: ms(5000),
                    abandoned: true,
                },
                routing: Cluster,
                replay_safe: false,
                left_ms: 4000,
                redirects: 0,
                next: Next::GiveUp(CacheError::Timeout(ms(5000))),
            },
            Case {
                failure: F::TimedOut {
                    budget: ms(5000),
                    abandoned: true,
                },
                routing: Standalone,
                replay_safe: true,
                left_ms: 0,
                redirects: 0,
                next: Next::GiveUp(CacheError::Timeout(ms(5000))),
            },
            // A slow command on a live connection: 504, never again.
            Case {
                failure: F::TimedOut {
                    budget: ms(5000),
                    abandoned: false,
                },
                routing: Standalone,
                replay_safe: true,
                left_ms: 4000,
                redirects: 0,
                next: Next::GiveUp(CacheError::Timeout(ms(5000))),
            },
            // MOVED: followed on a cluster, 5 times at most; an error elsewhere.
            Case {
                failure: moved(),
                routing: Cluster,
                replay_safe: false,
                left_ms: 100,
                redirects: 0,
                next: Next::FollowMoved {
                    slot: 7,
                    addr: "10.0.0.2:8501".into(),
                },
            },
            Case {
                failure: moved(),
                routing: Cluster,
                replay_safe: false,
                left_ms: 100,
                redirects: 4,
                next: Next::FollowMoved {
                    slot: 7,
                    addr: "10.0.0.2:8501".into(),
                },
            },
            Case {
                failure: moved(),
                routing: Cluster,
                replay_safe: true,
                left_ms: 100,
                redirects: 5,
                next: Next::GiveUp(CacheError::Unavailable(
                    "slot 7 keeps moving (last MOVED to 10.0.0.2:8501)".into(),
                )),
            },
            Case {
                failure: moved(),
                routing: Standalone,
                replay_safe: true,
                left_ms: 100,
                redirects: 0,
                next: Next::GiveUp(CacheError::Command("MOVED 7 10.0.0.2:8501".into())),
            },
            Case {
                failure: moved(),
                routing: Pinned,
                replay_safe: true,
                left_ms: 100,
                redirects: 0,
                next: Next::GiveUp(CacheError::Command("MOVED 7 10.0.0.2:8501".into())),
            },
            // ASK: to the importing node, on a cluster only.
            Case {
                failure: F::Ask {
                    addr: "10.0.0.3:8502".into(),
                },
                routing: Cluster,
                replay_safe: false,
                left_ms: 100,
                redirects: 1,
                next: Next::FollowAsk {
                    addr: "10.0.0.3:8502".into(),
                },
            },
            Case {
                failure: F::Ask {
                    addr: "10.0.0.3:8502".into(),
                },
                routing: Cluster,
                replay_safe: false,
                left_ms: 100,
                redirects: 5,
                next: Next::GiveUp(CacheError::Unavailable(
                    "a slot keeps moving (last ASK to 10.0.0.3:8502)".into(),
                )),
            },
            // A node that left the topology: route again, on a cluster.
            Case {
                failure: F::Retired,
                routing: Cluster,
                replay_safe: false,
                left_ms: 100,
                redirects: 0,
                next: Next::Retry,
            },
            Case {
                failure: F::Retired,
                routing: Pinned,
                replay_safe: true,
                left_ms: 100,
                redirects: 0,
                next: Next::GiveUp(F::Retired.into_cache_error()),
            },
            // "Not now": a pause that ends inside the window, whatever the command.
            Case {
                failure: F::NotNow("LOADING Redis is loading the dataset in memory".into()),
                routing: Standalone,
                replay_safe: false,
                left_ms: 5000,
                redirects: 0,
                next: Next::Pause {
                    pause: ms(100),
                    reconnect: false,
                    reread: false,
                },
            },
            Case {
                failure: F::NotNow("READONLY You can't write against a read only replica.".into()),
                routing: Standalone,
                replay_safe: false,
                left_ms: 5000,
                redirects: 0,
                next: Next::Pause {
                    pause: ms(100),
                    reconnect: true,
                    reread: false,
                },
            },
            Case {
                failure: F::NotNow("READONLY You can't write against a read only replica.".into()),
                routing: Cluster,
                replay_safe: false,
                left_ms: 5000,
                redirects: 0,
                next: Next::Pause {
                    pause: ms(100),
                    reconnect: false,
                    reread: true,
                },
            },
            Case {
                failure: F::NotNow("TRYAGAIN Multiple keys request during rehashing of slot".into()),
                routing: Cluster,
                replay_safe: false,
                left_ms: 5000,
                redirects: 0,
                next: Next::Pause {
                    pause: ms(100),
                    reconnect: false,
                    reread: true,
                },
            },
            Case {
                failure: F::NotNow("CLUSTERDOWN The cluster is down".into()),
                routing: Cluster,
                replay_safe: true,
                left_ms: 100,
                redirects: 0,
                next: Next::GiveUp(CacheError::Unavailable("CLUSTERDOWN The cluster is down".into())),
            },
            // Final answers.
            Case {
                failure: F::Reply(CacheError::WrongType("WRONGTYPE".into())),
                routing: Cluster,
                replay_safe: true,
                left_ms: 5000,
                redirects: 0,
                next: Next::GiveUp(CacheError::WrongType("WRONGTYPE".into())),
            },
            Case {
                failure: F::NoConnection(CacheError::Auth("WRONGPASS".into())),
                routing: Standalone,
                replay_safe: true,
                left_ms: 5000,
                redirects: 0,
                next: Next::GiveUp(CacheError::Auth("WRONGPASS".into())),
            },
        ];
        let now = Instant::now();
        for (i, case) in cases.into_iter().enumerate() {
            let mut tried = Tried {
                redirects: case.redirects,
                not_now: 0,
            };
            let next = decide(
                case.failure.clone(),
                &mut tried,
                case.routing,
                case.replay_safe,
                now,
                now + ms(case.left_ms),
            );
            assert_eq!(next, case.next, "case {i}: {:?} on {:?}", case.failure, case.routing);
        }
    }

    /// A lost connection whose command is not safe to send twice is never
    /// sent again, and the caller is told it may have been applied.
    #[tokio::test(start_paused = true)]
    async fn an_unsafe_command_is_not_replayed() {
        let now = Instant::now();
        let next = decide(
            Failure::Lost(unavailable()),
            &mut Tried::default(),
            Routing::Standalone,
            false,
            now,
            now + Duration::from_secs(10),
        );
        let Next::GiveUp(CacheError::Unavailable(msg)) = next else {
            panic!("{next:?}")
        };
        assert!(msg.contains("may or may not have been applied"), "{msg}");
    }

    /// A cache answering "not now" is asked again at 0, 0.1, 0.3, 0.7, 1.5
    /// and 2.5 s of a 3 s window, and then given up on.
    #[tokio::test(start_paused = true)]
    async fn not_now_until_the_window_ends() {
        let start = Instant::now();
        let wait_until = start + Duration::from_secs(3);
        let mut tried = Tried::default();
        let mut at = Vec::new();
        loop {
            at.push(start.elapsed().as_millis());
            let next = decide(
                Failure::NotNow("TRYAGAIN".into()),
                &mut tried,
                Routing::Cluster,
                false,
                Instant::now(),
                wait_until,
            );
            match next {
                Next::Pause { pause, .. } => tokio::time::sleep(pause).await,
                Next::GiveUp(e) => {
                    assert_eq!(e, CacheError::Unavailable("TRYAGAIN".into()));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(at, [0, 100, 300, 700, 1500, 2500]);
    }
}
