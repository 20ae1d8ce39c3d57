//! ACL users on every node of the cluster at once.
//!
//! Follows docs/azure.md "Entra ID and Azure Redis": the Redis user is the
//! identity's object id and its password the access token, and every shard
//! connection needs its own AUTH. Redis keeps ACL users per node (a cluster
//! does not replicate them), so a user the identity endpoint registers has
//! to be set on each node, replicas included, to be accepted wherever a
//! client connects.

use crate::redis_server::RedisAdmin;
use std::future::Future;

/// A cheap, cloneable handle running [`RedisAdmin`]'s ACL changes on every
/// node of a [`super::RedisCluster`] (give it to
/// [`crate::identity::IdentityConfig::redis_cluster`]).
///
/// Each change is tried on every node even when one fails (a stopped node),
/// and the first error is returned afterwards; each node saves its users
/// (`ACL SAVE`), so a node keeps those it had when it stopped, and repeating
/// a change once it runs again brings it up to date.
#[derive(Debug, Clone)]
pub struct ClusterAdmin {
    nodes: Vec<RedisAdmin>,
}

impl ClusterAdmin {
    pub(super) fn new(nodes: Vec<RedisAdmin>) -> Self {
        ClusterAdmin { nodes }
    }

    /// One admin handle per node, in node order.
    pub fn nodes(&self) -> &[RedisAdmin] {
        &self.nodes
    }

    /// [`RedisAdmin::acl_add_password`] on every node.
    pub async fn acl_add_password(&self, user: &str, password: &str) -> anyhow::Result<()> {
        self.on_every_node(|n| n.acl_add_password(user, password)).await?;
        Ok(())
    }

    /// [`RedisAdmin::acl_remove_password`] on every node; `Ok(true)` when
    /// any node had the password.
    pub async fn acl_remove_password(&self, user: &str, password: &str) -> anyhow::Result<bool> {
        let had = self.on_every_node(|n| n.acl_remove_password(user, password)).await?;
        Ok(had.contains(&true))
    }

    /// [`RedisAdmin::acl_disable_user`] on every node.
    pub async fn acl_disable_user(&self, user: &str) -> anyhow::Result<()> {
        self.on_every_node(|n| n.acl_disable_user(user)).await?;
        Ok(())
    }

    /// [`RedisAdmin::acl_enable_user`] on every node.
    pub async fn acl_enable_user(&self, user: &str) -> anyhow::Result<()> {
        self.on_every_node(|n| n.acl_enable_user(user)).await?;
        Ok(())
    }

    /// Runs `change` on each node in turn, all of them whatever fails; the
    /// results, or the first error (naming its node).
    async fn on_every_node<'a, T, F, Fut>(&'a self, mut change: F) -> anyhow::Result<Vec<T>>
    where
        F: FnMut(&'a RedisAdmin) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut results = Vec::with_capacity(self.nodes.len());
        let mut first_err = None;
        for node in &self.nodes {
            match change(node).await {
                Ok(v) => results.push(v),
                Err(e) => {
                    first_err.get_or_insert(e.context(format!("on the node with admin port {}", node.port())));
                }
            }
        }
        first_err.map_or(Ok(results), Err)
    }
}

/// Where a token stand-in turns tokens into passwords: one server, or
/// every node of a cluster.
#[derive(Debug, Clone)]
pub(crate) enum AclTarget {
    /// A single `redis-server`.
    Server(RedisAdmin),
    /// Every node of a [`super::RedisCluster`].
    Cluster(ClusterAdmin),
}

impl AclTarget {
    /// Adds `password` to `user` (creating the user) on the target.
    pub(crate) async fn acl_add_password(&self, user: &str, password: &str) -> anyhow::Result<()> {
        match self {
            AclTarget::Server(a) => a.acl_add_password(user, password).await,
            AclTarget::Cluster(a) => a.acl_add_password(user, password).await,
        }
    }

    /// Removes `password` from `user` on the target; `Ok(false)` when it
    /// was not there.
    pub(crate) async fn acl_remove_password(&self, user: &str, password: &str) -> anyhow::Result<bool> {
        match self {
            AclTarget::Server(a) => a.acl_remove_password(user, password).await,
            AclTarget::Cluster(a) => a.acl_remove_password(user, password).await,
        }
    }
}
