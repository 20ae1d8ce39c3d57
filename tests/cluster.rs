//! The handler against a real Redis Cluster presented as Azure presents a
//! clustered cache (`support::cluster`): every node behind its own
//! Entra-enforcing gateway, announced by IP on a per-shard port, with a
//! certificate naming only the host name.

mod support;

use redis::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use support::cluster::{key_in_slot, ClusterAppOptions, ClusterRig};

/// Runs a test body with a deadline, so a hang fails instead of stalling.
async fn bounded<T>(limit: Duration, body: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, body)
        .await
        .expect("test ran past its time limit")
}

/// The `(ip, port, id)` of every node in a `CLUSTER SLOTS` reply.
fn slot_endpoints(reply: &Value) -> Vec<(String, u16, String)> {
    let Value::Array(ranges) = reply else {
        panic!("{reply:?}")
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            panic!("{range:?}")
        };
        for node in &fields[2..] {
            let Value::Array(f) = node else { panic!("{node:?}") };
            match (&f[0], &f[1], &f[2]) {
                (Value::BulkString(ip), Value::Int(port), Value::BulkString(id)) => out.push((
                    String::from_utf8_lossy(ip).into(),
                    *port as u16,
                    String::from_utf8_lossy(id).into(),
                )),
                other => panic!("{other:?}"),
            }
        }
    }
    out
}

/// The rig itself: through any node's gateway, `CLUSTER SLOTS` names every
/// node as `127.0.0.1:<its gateway's port>` and `MOVED` names the owner's
/// gateway, while a TLS client of a node's own TLS port, the cluster bus and
/// replication still use the TLS ports; the gateway accepts the identity's
/// tokens, and `CLIENT LIST` on the node tells its connections apart.
/// (Checked broken: without `announce_client_ports`, the ports named are the
/// nodes' plain ports and this fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rig_announces_every_node_on_its_gateway_port() {
    bounded(Duration::from_secs(60), async {
        let rig = ClusterRig::start(&ClusterAppOptions::default()).await;
        let c = &rig.cluster;
        let token = rig.fetch_token().await;
        let mut conn = rig.gateway_conn(0, &token).await;
        let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap();
        let named = slot_endpoints(&reply);
        assert_eq!(named.len(), c.len(), "{named:?}");
        for (ip, port, id) in &named {
            assert_eq!(ip, "127.0.0.1");
            let node = c.index_of(id).unwrap();
            assert_eq!(*port, rig.gateway(node).port(), "node {node}");
        }
        let ids: BTreeSet<&str> = named.iter().map(|n| n.2.as_str()).collect();
        assert_eq!(ids.len(), c.len());

        // A key owned by another master: MOVED names that master's gateway.
        let masters = c.masters().await.unwrap();
        let other = masters.iter().find(|m| m.index != 0).unwrap();
        let slot = *other.slots[0].start() + 7;
        let key = key_in_slot(slot, "moved");
        let err = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .query_async::<()>(&mut conn)
            .await
            .unwrap_err();
        let text = format!("{err} {:?}", err.detail());
        assert!(text.contains(&format!("{slot}")), "{text}");
        assert!(text.contains(&rig.announced_addr(other.index)), "{text}");

        // The node's TLS port still tells TLS clients the TLS ports.
        let tls_reply = tls_cluster_slots(&rig, 0).await;
        for (_, port, id) in slot_endpoints(&tls_reply) {
            let node = c.index_of(&id).unwrap();
            assert_eq!(port, c.node(node).tls_port(), "node {node} over TLS");
        }
        // Bus and replication: settled means every bus link is up and every
        // replica in sync with its master.
        c.wait_settled(Duration::from_secs(10)).await.unwrap();

        assert_eq!(
            rig.gateway(0)
                .stats()
                .auth_accepted
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        let clients = rig.gateway_clients(0).await;
        assert_eq!(clients.len(), 1, "{clients:?}");
        assert!(clients[0].cmd.starts_with("set"), "{clients:?}");
        for i in 1..c.len() {
            assert!(rig.gateway_clients(i).await.is_empty(), "node {i}");
        }
    })
    .await;
}

/// `CLUSTER SLOTS` asked on node `i`'s own TLS port, as `default`.
async fn tls_cluster_slots(rig: &ClusterRig, i: usize) -> Value {
    let node = rig.cluster.node(i);
    let url = format!("rediss://{}:{}/", support::cluster::HOST, node.tls_port());
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(rig.pki.ca_pem.clone().into_bytes()),
    };
    let mut conn = redis::Client::build_with_tls(url.as_str(), certs)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("AUTH")
        .arg("default")
        .arg(node.admin_password())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap()
}
