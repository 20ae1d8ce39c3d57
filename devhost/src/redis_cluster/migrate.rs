//! Moving a slot range with its keys from one master to another, the way
//! Redis Cluster resharding does it, one step at a time so a test can hold
//! the migration half-way while load runs.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis": while a slot migrates,
//! a key already moved answers `ASK` (the source marks the slot MIGRATING,
//! the target IMPORTING); once the target owns the slot, the source answers
//! `MOVED` naming the target's announced `127.0.0.1:<tls port>`.

use super::topology::admin_conn;
use super::{MasterInfo, RedisCluster};
use anyhow::Context;
use std::ops::RangeInclusive;

/// Keys per `MIGRATE` call.
const BATCH: usize = 100;

/// How long one `MIGRATE` may take, in milliseconds.
const MIGRATE_TIMEOUT_MS: u64 = 5000;

/// A slot range half-way between two masters: from
/// [`RedisCluster::start_migration`] until [`SlotMigration::finish`].
///
/// Meanwhile the source answers `ASK` for keys it no longer has (moved, or
/// new), and the target serves them to clients that send `ASKING`. Dropping
/// it unfinished leaves the slots in that state.
///
/// `ASKING` holds for the next command on its connection only: a client
/// that sends it as a request of its own on a shared multiplexed connection
/// (redis 1.8.1's cluster client does) can lose it to a concurrent command
/// and be sent back with `MOVED`.
#[derive(Debug)]
pub struct SlotMigration<'a> {
    cluster: &'a RedisCluster,
    slots: RangeInclusive<u16>,
    from: usize,
    to: usize,
}

impl RedisCluster {
    /// Starts moving `slots`, all owned by one master, to master `to`:
    /// `CLUSTER SETSLOT IMPORTING` on the target, then `MIGRATING` on the
    /// source, each answered before this returns. No key moves yet.
    pub async fn start_migration(&self, slots: RangeInclusive<u16>, to: usize) -> anyhow::Result<SlotMigration<'_>> {
        let masters = self.masters().await?;
        let owner = |slot: u16| masters.iter().find(|m| m.slots.iter().any(|r| r.contains(&slot)));
        let from: &MasterInfo = owner(*slots.start()).context("the first slot has no owner")?;
        anyhow::ensure!(
            slots.clone().all(|s| owner(s).is_some_and(|m| m.index == from.index)),
            "slots {slots:?} are not all owned by node {}",
            from.index
        );
        anyhow::ensure!(
            masters.iter().any(|m| m.index == to) && to != from.index,
            "node {to} is not another master"
        );
        let (from, from_id, to_id) = (from.index, self.ids[from.index].clone(), &self.ids[to]);
        // Target first: a source sending ASK to a target not yet importing
        // would bounce the client back.
        self.setslot_all(to, &slots, &["IMPORTING", &from_id]).await?;
        self.setslot_all(from, &slots, &["MIGRATING", to_id]).await?;
        Ok(SlotMigration {
            cluster: self,
            slots,
            from,
            to,
        })
    }

    /// Moves `slots` to master `to` in one go: [`RedisCluster::start_migration`]
    /// then [`SlotMigration::finish`].
    pub async fn migrate_slots(&self, slots: RangeInclusive<u16>, to: usize) -> anyhow::Result<()> {
        self.start_migration(slots, to).await?.finish().await
    }

    /// `CLUSTER SETSLOT <slot> <args…>` for every slot of `slots` on node
    /// `node`, pipelined.
    async fn setslot_all(&self, node: usize, slots: &RangeInclusive<u16>, args: &[&str]) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        for slot in slots.clone() {
            pipe.cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(args).ignore();
        }
        let mut conn = admin_conn(&self.admin.nodes()[node]).await?;
        pipe.query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("CLUSTER SETSLOT {} on node {node}", args[0]))
    }
}

impl SlotMigration<'_> {
    /// The source master's index.
    pub fn from(&self) -> usize {
        self.from
    }

    /// The target master's index.
    pub fn to(&self) -> usize {
        self.to
    }

    /// The slots being moved.
    pub fn slots(&self) -> RangeInclusive<u16> {
        self.slots.clone()
    }

    /// How many keys of the range the source still holds.
    pub async fn keys_left(&self) -> anyhow::Result<usize> {
        let mut conn = admin_conn(&self.cluster.admin.nodes()[self.from]).await?;
        let mut pipe = redis::pipe();
        for slot in self.slots.clone() {
            pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot);
        }
        let counts: Vec<usize> = pipe.query_async(&mut conn).await.context("CLUSTER COUNTKEYSINSLOT")?;
        Ok(counts.iter().sum())
    }

    /// Moves up to `limit` keys of the range from the source to the target
    /// (`MIGRATE` in batches of 100, lowest slots first); returns how many
    /// moved, 0 when none is left. The source reaches the target over TLS
    /// (`tls-cluster yes`), so `MIGRATE` names its TLS port.
    pub async fn move_keys(&self, limit: usize) -> anyhow::Result<usize> {
        let admins = self.cluster.admin.nodes();
        let mut conn = admin_conn(&admins[self.from]).await?;
        let target_port = self.cluster.nodes[self.to].tls_port();
        let mut moved = 0;
        for slot in self.slots.clone() {
            while moved < limit {
                let want = BATCH.min(limit - moved);
                let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(want)
                    .query_async(&mut conn)
                    .await
                    .context("CLUSTER GETKEYSINSLOT")?;
                if keys.is_empty() {
                    break;
                }
                let mut migrate = redis::cmd("MIGRATE");
                migrate
                    .arg("127.0.0.1")
                    .arg(target_port)
                    .arg("")
                    .arg(0)
                    .arg(MIGRATE_TIMEOUT_MS);
                migrate.arg("AUTH2").arg("default").arg(admins[self.to].password());
                migrate.arg("KEYS").arg(&keys);
                migrate
                    .query_async::<()>(&mut conn)
                    .await
                    .with_context(|| format!("MIGRATE of {} keys of slot {slot}", keys.len()))?;
                moved += keys.len();
            }
        }
        Ok(moved)
    }

    /// Moves the remaining keys, then gives the slots to the target with
    /// `CLUSTER SETSLOT NODE` on the target, the source and the other
    /// masters, and waits until every node reports the target as their
    /// owner with no migration left. From then on the source answers
    /// `MOVED`.
    pub async fn finish(self) -> anyhow::Result<()> {
        while self.move_keys(usize::MAX).await? > 0 {}
        let c = self.cluster;
        let to_id = c.ids[self.to].clone();
        let masters = c.masters().await?;
        let others = masters.iter().filter(|m| !m.failed).map(|m| m.index);
        let order = [self.to, self.from]
            .into_iter()
            .chain(others.filter(|&i| i != self.to && i != self.from));
        for node in order {
            c.setslot_all(node, &self.slots, &["NODE", &to_id]).await?;
        }
        let (first, to_id) = (*self.slots.start(), &to_id);
        c.wait_settled_and(
            "the migrated slots' new owner spreading",
            c.settle_timeout(),
            |reports| {
                let owner = reports[0]
                    .nodes
                    .iter()
                    .find(|n| n.slots.iter().any(|r| r.contains(&first)));
                (owner.map(|n| &n.id) != Some(to_id)).then(|| format!("slot {first} is not yet the target's"))
            },
        )
        .await
    }
}
