//! What Health and the timer show of the connections: each node's state
//! and counters, and the masters of a cluster.

/// A snapshot of one connection (or, summed, of a cluster's) for Health.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct CacheStatus {
    /// Whether a connection is up now.
    pub connected: bool,
    /// Which connection of this node (1 = the first).
    pub connection_number: Option<u64>,
    /// Connections made.
    pub connects: u64,
    /// Connections dropped because they broke or went silent.
    pub drops: u64,
    /// Re-AUTHs on a live connection.
    pub reauths: u64,
}

impl CacheStatus {
    /// Several connections as one: connected when all are, counters summed.
    pub(super) fn sum(all: &[CacheStatus]) -> CacheStatus {
        CacheStatus {
            connected: !all.is_empty() && all.iter().all(|s| s.connected),
            connection_number: None,
            connects: all.iter().map(|s| s.connects).sum(),
            drops: all.iter().map(|s| s.drops).sum(),
            reauths: all.iter().map(|s| s.reauths).sum(),
        }
    }
}

/// One master of a cluster, for the functions that visit every master.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ShardInfo {
    /// The master's address as the cluster announces it (`ip:port`).
    pub node: String,
    /// The slot ranges it owns (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// Its connection.
    #[serde(flatten)]
    pub status: CacheStatus,
    /// A hash tag (`{n}`) whose keys land on this master.
    #[serde(skip)]
    pub tag: String,
}
