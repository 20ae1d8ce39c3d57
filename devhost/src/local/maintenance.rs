//! `devhost maintenance restart|failover|moving`: Azure's routine
//! maintenance played against a running `devhost start`, so a developer can
//! watch the app ride through it (the invocation log keeps printing 200s,
//! a little slower during the event).
//!
//! Follows docs/azure.md "Maintenance, failover and notifications", with
//! Microsoft's timeline compressed from minutes to seconds:
//!
//! - **restart** (one server): `AzureRedisEvents` announces
//!   `NodeMaintenanceStarting` (a start time a few seconds ahead), then
//!   `NodeMaintenanceStart`; the node goes down and comes back 2 s later (a
//!   patch's reboot, the keys gone as in the stand-in); then
//!   `NodeMaintenanceFailoverComplete` and `NodeMaintenanceEnded`. On the
//!   cluster: a master is killed, its replica elected, and the old master
//!   started again as a replica.
//! - **failover** (one server): the same notifications around the front end
//!   closing every connection, as a failover to the replica does. On the
//!   cluster: `CLUSTER FAILOVER` of a master (planned).
//! - **moving** (one server): Redis's handoff push `MOVING` names a second
//!   front end; the old one closes its connections once the handoff time
//!   is up, refuses new ones for the rest of the handoff, then serves
//!   again (locally, the configured address cannot change).
//!
//! Each play returns its steps with their times, for `devhost maintenance`
//! to print.

use super::stack::{LocalCache, LocalRedis};
use crate::gateway::{resp::encode_push, Gateway};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Which maintenance to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Play {
    /// A node patched: it restarts (one server), or a master is killed and
    /// replaced by its replica (cluster).
    Restart,
    /// A failover to the replica.
    Failover,
    /// The endpoint moves (Redis's `MOVING` handoff; one server only).
    Moving,
}

impl Play {
    /// The play named `name` (`restart`, `failover`, `moving`).
    pub fn parse(name: &str) -> Option<Play> {
        match name {
            "restart" => Some(Play::Restart),
            "failover" => Some(Play::Failover),
            "moving" => Some(Play::Moving),
            _ => None,
        }
    }
}

/// One step of a play, and when it was done (ms from the play's start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Milliseconds since the play started.
    pub at_ms: u64,
    /// What was done.
    pub what: String,
}

/// The steps of a play as they are done.
struct Steps {
    start: Instant,
    done: Vec<Step>,
}

impl Steps {
    fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        println!("  maintenance  {what}");
        self.done.push(Step {
            at_ms: self.start.elapsed().as_millis() as u64,
            what,
        });
    }
}

/// How long the node is down in a restart.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// The `MOVING` handoff's time, in seconds.
const HANDOFF_S: u64 = 5;

/// Plays `play` against the built-in cache.
pub async fn play(cache: &LocalCache, play: Play) -> anyhow::Result<Vec<Step>> {
    let mut steps = Steps {
        start: Instant::now(),
        done: Vec::new(),
    };
    match (&cache.redis, play) {
        (LocalRedis::Single(redis), Play::Restart) => {
            let front = front(cache)?;
            announce(front, &mut steps, "NodeMaintenanceStarting").await?;
            announce(front, &mut steps, "NodeMaintenanceStart").await?;
            redis.stop();
            steps.note(format!("redis-server stopped (down for {DOWN_FOR:?})"));
            tokio::time::sleep(DOWN_FOR).await;
            redis.start_again().await?;
            steps.note("redis-server started again (its keys are gone, as after a stand-in's restart)");
            subscribed(front, &mut steps).await;
            announce(front, &mut steps, "NodeMaintenanceFailoverComplete").await?;
            announce(front, &mut steps, "NodeMaintenanceEnded").await?;
        }
        (LocalRedis::Single(_), Play::Failover) => {
            let front = front(cache)?;
            announce(front, &mut steps, "NodeMaintenanceStarting").await?;
            announce(front, &mut steps, "NodeMaintenanceStart").await?;
            front.close_all();
            steps.note("the front end closed every connection (a failover to the replica)");
            subscribed(front, &mut steps).await;
            announce(front, &mut steps, "NodeMaintenanceFailoverComplete").await?;
            announce(front, &mut steps, "NodeMaintenanceEnded").await?;
        }
        (LocalRedis::Single(redis), Play::Moving) => {
            let front = front(cache)?;
            let config = front.config().clone();
            let new = Gateway::start_with(config).await?;
            steps.note(format!("a second front end listens on 127.0.0.1:{}", new.port()));
            let to = format!("127.0.0.1:{}", new.port());
            let push = encode_push(&[b"MOVING", b"1", HANDOFF_S.to_string().as_bytes(), to.as_bytes()]);
            let sent = front.inject(&push);
            steps.note(format!("MOVING 1 {HANDOFF_S} {to} pushed on {sent} connection(s)"));
            tokio::time::sleep(Duration::from_secs(HANDOFF_S)).await;
            front.set_refuse(true);
            front.close_all();
            steps.note("the old front end closed its connections and refuses new ones");
            tokio::time::sleep(Duration::from_secs(HANDOFF_S)).await;
            front.set_refuse(false);
            steps.note("the old front end serves again (the handoff is over)");
            cache.keep(new);
            let _ = redis;
        }
        (LocalRedis::Cluster(cluster), Play::Restart) => {
            let master = first_master(cluster).await?;
            steps.note(format!("killing master node {master}"));
            let replica = cluster.kill_master(master).await?;
            steps.note(format!("node {replica} elected master in its place"));
            cluster.restart(&[master]).await?;
            steps.note(format!("node {master} started again, a replica now"));
        }
        (LocalRedis::Cluster(cluster), Play::Failover) => {
            let master = first_master(cluster).await?;
            steps.note(format!("CLUSTER FAILOVER of master node {master}"));
            let replica = cluster.failover(master).await?;
            steps.note(format!("node {replica} is the master now, node {master} its replica"));
        }
        (LocalRedis::Cluster(_), Play::Moving) => {
            anyhow::bail!("moving is played on one server; run `devhost start` without --cluster")
        }
    }
    steps.note("done");
    Ok(steps.done)
}

/// The front end in front of the single server.
fn front(cache: &LocalCache) -> anyhow::Result<&Gateway> {
    cache
        .front
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the local cache has no front end"))
}

/// Publishes one `AzureRedisEvents` message about the front end's node,
/// then lets a second pass (Microsoft's notices come seconds apart).
async fn announce(front: &Gateway, steps: &mut Steps, kind: &str) -> anyhow::Result<()> {
    // Azure's times are UTC without a zone: "2020-10-14T16:26:10".
    let start = (time::OffsetDateTime::now_utc() + time::Duration::seconds(3))
        .replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let start = start.trim_end_matches('Z');
    let message = format!(
        "NotificationType|{kind}|StartTimeInUTC|{start}|IsReplica|False|IPAddress|127.0.0.1|SSLPort|{}|NonSSLPort|0",
        front.port()
    );
    let heard = front.publish("AzureRedisEvents", &message).await?;
    steps.note(format!("AzureRedisEvents: {kind} ({heard} subscriber(s))"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Waits (up to 15 s) until a client has subscribed to `AzureRedisEvents`
/// again on the node (the handler does after it reconnects, which it does
/// at its next invocation), so the next notices are heard.
async fn subscribed(front: &Gateway, steps: &mut Steps) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if front.subscribers("AzureRedisEvents").await.unwrap_or(0) > 0 {
            steps.note("a client subscribed to AzureRedisEvents again");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    steps.note("no client subscribed to AzureRedisEvents again within 15 s (no invocation came?)");
}

/// The master that owns slot 0.
async fn first_master(cluster: &crate::redis_cluster::RedisCluster) -> anyhow::Result<usize> {
    Ok(cluster.master_of_slot(0).await?.index)
}
