//! A cache with one endpoint: every command goes to the configured node,
//! riding through a lost connection or a "not now" answer within the call's
//! window ([`super::retry::decide`]).

use super::context::Call;
use super::error::CacheError;
use super::node::Node;
use super::replay::Replay;
use super::retry::{decide, Next, Routing, Tried};
use redis::FromRedisValue;
use std::sync::Arc;
use tokio::time::Instant;

/// Runs `cmd` on `node` within `call`.
pub(super) async fn query<T: FromRedisValue>(
    node: &Arc<Node>,
    call: &Call,
    cmd: &redis::Cmd,
    replay: Replay,
) -> Result<T, CacheError> {
    let mut tried = Tried::default();
    loop {
        let failure = match node.run::<T>(call, cmd, false).await {
            Ok(v) => return Ok(v),
            Err(failure) => failure,
        };
        let next = decide(
            failure,
            &mut tried,
            Routing::Standalone,
            replay.allows(cmd),
            Instant::now(),
            call.wait_until,
        );
        match next {
            Next::Retry => tracing::debug!(node = %node.addr, "trying again after a lost connection"),
            Next::Pause { pause, reconnect, .. } => {
                if reconnect {
                    node.reconnect("the endpoint answered READONLY: it is a replica now");
                }
                tracing::debug!(node = %node.addr, pause_ms = pause.as_millis() as u64, "the cache is not ready; trying again");
                tokio::time::sleep(pause).await;
            }
            Next::GiveUp(e) => return Err(e),
            // `decide` follows no redirect on one endpoint.
            Next::FollowMoved { .. } | Next::FollowAsk { .. } => {
                return Err(CacheError::Command("a redirect from a standalone cache".into()))
            }
        }
    }
}
