//! The local Redis Cluster stand-in (`devhost::redis_cluster`) driven by the
//! real `redis` crate's cluster client over TLS, the way Azure presents a
//! clustered cache: nodes announced by IP, a certificate naming only the
//! host name, ACL users on every node.

use devhost::identity::{IdentityConfig, IdentityEndpoint};
use devhost::pki::Pki;
use devhost::redis_cluster::{key_slot, slot_tag, ClusterOptions, MasterInfo, RedisCluster, SLOTS};
use redis::cluster::{ClusterClientBuilder, NodeAddress};
use redis::cluster_async::ClusterConnection;

use redis::{AsyncCommands, TlsCertificates, Value};
use std::future::Future;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// The only name on the nodes' certificate.
const HOST: &str = "localhost";

/// A cluster of 3 masters with a replica each, and the CA that signed its
/// host-name-only certificate.
struct Rig {
    pki: Pki,
    cluster: RedisCluster,
}

async fn rig() -> Rig {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = Pki::generate_for_hosts(&[HOST]).unwrap();
    let cluster = RedisCluster::start(&pki, ClusterOptions::default()).await.unwrap();
    Rig { pki, cluster }
}

/// Runs a test body with a deadline, so a hang fails instead of stalling.
async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, body)
        .await
        .expect("test ran past its time limit")
}

impl Rig {
    fn certs(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: None,
            root_cert: Some(self.pki.ca_pem.clone().into_bytes()),
        }
    }

    /// A cluster client seeded with the masters at `seed_host`, as `user`,
    /// with few retries so a failure shows quickly, and the contract's 5 s
    /// per command and connection (2 s timed out under a loaded machine).
    fn builder(&self, seed_host: &str, user: &str, password: &str) -> ClusterClientBuilder {
        let seeds = (0..3).map(|i| format!("rediss://{seed_host}:{}/", self.cluster.node(i).tls_port()));
        ClusterClientBuilder::new(seeds.collect::<Vec<_>>())
            .username(user)
            .password(password)
            .certs(self.certs())
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(5))
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(200)
    }

    /// The cluster's announced `127.0.0.1:<tls port>` addresses mapped to
    /// the host name, so each node is verified against the host name.
    fn mapped(&self, builder: ClusterClientBuilder) -> ClusterClientBuilder {
        let map = self.cluster.tls_address_map().into_iter().map(|(ip, host)| {
            (
                NodeAddress::try_from(ip.as_str()).unwrap(),
                NodeAddress::try_from(host.as_str()).unwrap(),
            )
        });
        builder.node_address_map(map.collect())
    }

    /// A connection as `default`, verifying every node against the host name.
    async fn client(&self) -> ClusterConnection {
        let password = self.cluster.node(0).admin().password().to_string();
        let builder = self.mapped(self.builder(HOST, "default", &password));
        builder.build().unwrap().get_async_connection().await.unwrap()
    }

    /// A single-node TLS connection to node `i` by host name, not yet
    /// authenticated.
    async fn node_conn(&self, i: usize) -> redis::aio::MultiplexedConnection {
        let url = format!("rediss://{HOST}:{}/", self.cluster.node(i).tls_port());
        redis::Client::build_with_tls(url.as_str(), self.certs())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// `AUTH user password` on node `i` over TLS.
    async fn auth_on(&self, i: usize, user: &str, password: &str) -> redis::RedisResult<()> {
        let mut conn = self.node_conn(i).await;
        redis::cmd("AUTH").arg(user).arg(password).query_async(&mut conn).await
    }
}

/// A key in each slot of `slots`, `per_slot` per slot.
fn keys_in(slots: RangeInclusive<u16>, per_slot: usize) -> Vec<String> {
    slots
        .flat_map(|s| (0..per_slot).map(move |k| format!("{}k{k}", slot_tag(s))))
        .collect()
}

/// SETs each key to itself, 16 at a time.
async fn write_all(conn: &ClusterConnection, keys: &[String]) {
    write_with(conn, keys, 16).await;
}

/// SETs each key to itself, `parallel` at a time.
async fn write_with(conn: &ClusterConnection, keys: &[String], parallel: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in keys.chunks(keys.len().div_ceil(parallel)) {
        let (mut conn, chunk) = (conn.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for k in chunk {
                let () = conn.set(&k, &k).await.unwrap_or_else(|e| panic!("SET {k}: {e}"));
            }
        });
    }
    tasks.join_all().await;
}

/// Reads every key back, 16 at a time, and checks it holds its own name.
async fn check_all(conn: &ClusterConnection, keys: &[String]) {
    check_with(conn, keys, 16).await;
}

/// Reads every key back, `parallel` at a time, and checks it holds its own
/// name.
async fn check_with(conn: &ClusterConnection, keys: &[String], parallel: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in keys.chunks(keys.len().div_ceil(parallel)) {
        let (mut conn, chunk) = (conn.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for k in chunk {
                let v: Option<String> = conn.get(&k).await.unwrap_or_else(|e| panic!("GET {k}: {e}"));
                assert_eq!(v.as_deref(), Some(k.as_str()), "value of {k}");
            }
        });
    }
    tasks.join_all().await;
}

/// The first `n` slots of a master.
fn first_slots(m: &MasterInfo, n: u16) -> RangeInclusive<u16> {
    let lo = *m.slots[0].start();
    lo..=lo + n - 1
}

/// The `(ip, port)` of every node in a `CLUSTER SLOTS` reply.
fn slot_endpoints(reply: &[Vec<Value>]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for range in reply {
        for node in &range[2..] {
            let Value::Array(fields) = node else { panic!("{node:?}") };
            match (&fields[0], &fields[1]) {
                (Value::BulkString(ip), Value::Int(port)) => out.push((String::from_utf8_lossy(ip).into(), *port)),
                other => panic!("{other:?}"),
            }
        }
    }
    out
}

/// The cluster comes up with 3 masters sharing all 16384 slots, each with
/// one replica replicating over TLS, and tells a TLS client every node as
/// `127.0.0.1:<tls port>` (announced by IP, as Azure does).
#[tokio::test]
async fn comes_up_with_three_masters_and_a_replica_each() {
    bounded(Duration::from_secs(45), async {
        let rig = rig().await;
        let c = &rig.cluster;
        assert_eq!(c.len(), 6);
        let masters = c.masters().await.unwrap();
        assert_eq!(masters.len(), 3, "{masters:?}");
        let mut next = 0u32;
        for m in &masters {
            assert!(!m.failed);
            assert_eq!(m.replicas.len(), 1, "{m:?}");
            for r in &m.slots {
                assert_eq!(u32::from(*r.start()), next, "{masters:?}");
                next = u32::from(*r.end()) + 1;
            }
        }
        assert_eq!(next, u32::from(SLOTS));

        let mut conn = rig.node_conn(0).await;
        let () = redis::cmd("AUTH")
            .arg("default")
            .arg(c.node(0).admin().password())
            .query_async(&mut conn)
            .await
            .unwrap();
        let reply: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await.unwrap();
        let endpoints = slot_endpoints(&reply);
        assert_eq!(endpoints.len(), 6, "{endpoints:?}");
        let tls_ports: Vec<i64> = (0..6).map(|i| i64::from(c.node(i).tls_port())).collect();
        for (ip, port) in &endpoints {
            assert_eq!(ip, "127.0.0.1");
            assert!(tls_ports.contains(port), "{port} is not a TLS port: {endpoints:?}");
        }

        // Each replica's link shows on its master's TLS port, flag S.
        for (i, clients) in c.client_lists().await.unwrap() {
            let Some(m) = masters.iter().find(|m| m.index == i) else {
                continue;
            };
            let laddr = format!("127.0.0.1:{}", m.tls_port);
            let links = clients.iter().filter(|cl| cl.fields["flags"].contains('S'));
            assert_eq!(links.filter(|cl| cl.laddr == laddr).count(), 1, "{clients:?}");
        }
    })
    .await;
}

/// TLS against the cluster as Azure presents it: mapping each announced
/// `127.0.0.1:<port>` to the host name, every node verifies; verifying
/// against the IP fails, whether the IP is the seed or comes from
/// `CLUSTER SLOTS` (the certificate carries no IP address).
#[tokio::test]
async fn tls_verifies_against_the_host_name_and_fails_against_the_ip() {
    bounded(Duration::from_secs(45), async {
        let rig = rig().await;
        let password = rig.cluster.node(0).admin().password().to_string();
        let mut conn = rig.client().await;
        for m in rig.cluster.masters().await.unwrap() {
            let key = format!("{}tls", slot_tag(*m.slots[0].start()));
            let () = conn.set(&key, "v").await.unwrap();
            assert_eq!(conn.get::<_, String>(&key).await.unwrap(), "v");
        }

        let by_ip = rig.builder("127.0.0.1", "default", &password).build().unwrap();
        let err = by_ip
            .get_async_connection()
            .await
            .err()
            .expect("a seed verified by IP must fail");
        assert!(format!("{err}").contains("certificate"), "{err}");

        // Seeded by host name but without the map: CLUSTER SLOTS names IPs,
        // and no node verifies (the client reports that as a time-out).
        let unmapped = rig.builder(HOST, "default", &password).build().unwrap();
        if let Ok(mut conn) = unmapped.get_async_connection().await {
            let err = conn
                .set::<_, _, ()>("{0}k", "v")
                .await
                .expect_err("a node verified by IP must fail");
            assert!(!format!("{err}").is_empty());
        }
    })
    .await;
}

/// ACL users reach every node: a password added through the cluster API,
/// and each token the identity endpoint mints, authenticate on all six
/// nodes over TLS (a cluster client as that user works on every shard), and
/// are refused on all of them once removed or expired.
#[tokio::test]
async fn acl_users_and_tokens_authenticate_on_every_node() {
    bounded(Duration::from_secs(45), async {
        let rig = rig().await;
        let c = &rig.cluster;
        c.admin().acl_add_password("oid-a", "pw-a").await.unwrap();
        for i in 0..c.len() {
            rig.auth_on(i, "oid-a", "pw-a").await.unwrap();
            let wrong = rig.auth_on(i, "oid-a", "pw-b").await.unwrap_err();
            assert_eq!(wrong.code(), Some("WRONGPASS"), "node {i}: {wrong}");
        }
        let client = rig.mapped(rig.builder(HOST, "oid-a", "pw-a")).build().unwrap();
        let mut conn = client.get_async_connection().await.unwrap();
        for m in c.masters().await.unwrap() {
            let key = format!("{}acl", slot_tag(*m.slots[0].start()));
            let () = conn.set(&key, "v").await.unwrap();
        }
        assert!(c.admin().acl_remove_password("oid-a", "pw-a").await.unwrap());
        for i in 0..c.len() {
            let gone = rig.auth_on(i, "oid-a", "pw-a").await.unwrap_err();
            assert_eq!(gone.code(), Some("WRONGPASS"), "node {i}: {gone}");
        }

        let idp = IdentityEndpoint::start(IdentityConfig {
            redis_cluster: Some(c.admin().clone()),
            token_lifetime: Duration::from_secs(4),
            ..IdentityConfig::default()
        })
        .await
        .unwrap();
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "{}?api-version=2019-08-01&resource=https%3A%2F%2Fredis.azure.com",
                idp.endpoint_url()
            ))
            .header("metadata", "true")
            .header("x-identity-header", idp.header_secret())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = answer["access_token"].as_str().unwrap();
        for i in 0..c.len() {
            rig.auth_on(i, idp.oid(), token).await.unwrap();
        }
        // The sweeper removes the expired token's password from every node.
        for i in 0..c.len() {
            while rig.auth_on(i, idp.oid(), token).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let exp = idp.verify(token).map(|_| ()).unwrap_err();
        assert!(matches!(exp, devhost::identity::VerifyError::Expired(_)), "{exp:?}");
    })
    .await;
}

/// One key in every one of the 16384 slots is stored through the cluster
/// client and read back; each master holds exactly one key per slot it
/// owns, and `key_slot` agrees with the server's `CLUSTER KEYSLOT`.
#[tokio::test]
async fn keys_over_all_slots_are_stored_and_read_back() {
    bounded(Duration::from_secs(45), async {
        let rig = rig().await;
        let c = &rig.cluster;
        for slot in (0..SLOTS).step_by(1021) {
            let key = format!("{}x", slot_tag(slot));
            let cmd = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).clone();
            assert_eq!(c.node(0).admin().cmd::<u16>(&cmd).await.unwrap(), slot);
            assert_eq!(key_slot(key.as_bytes()), slot);
        }
        let keys = keys_in(0..=SLOTS - 1, 1);
        let conn = rig.client().await;
        write_all(&conn, &keys).await;
        check_all(&conn, &keys).await;
        for m in c.masters().await.unwrap() {
            let owned: usize = m.slots.iter().map(|r| r.len()).sum();
            let held: usize = c.node(m.index).admin().cmd(&redis::cmd("DBSIZE")).await.unwrap();
            assert_eq!(held, owned, "master {}", m.index);
        }
    })
    .await;
}

/// A planned failover (`CLUSTER FAILOVER` on the replica) and a killed
/// master both hand the shard to its replica with every key intact, the
/// client following the new topology; the killed node comes back as a
/// replica of its successor, in sync.
#[tokio::test]
async fn failover_and_a_killed_master_keep_every_key() {
    bounded(Duration::from_secs(50), async {
        let rig = rig().await;
        let c = &rig.cluster;
        let shard = c.masters().await.unwrap().remove(0);
        let keys = keys_in(first_slots(&shard, 200), 2);
        let conn = rig.client().await;
        write_all(&conn, &keys).await;

        let promoted = c.failover(shard.index).await.unwrap();
        let now = c.master_of_slot(*shard.slots[0].start()).await.unwrap();
        assert_eq!((now.index, now.slots.clone()), (promoted, shard.slots.clone()));
        assert_eq!(now.replicas, [shard.index]);
        check_all(&conn, &keys).await;

        let back = c.kill_master(promoted).await.unwrap();
        assert_eq!(back, shard.index);
        assert!(!c.node(promoted).is_running());
        check_all(&conn, &keys).await;

        c.restart(&[promoted]).await.unwrap();
        let now = c.master_of_slot(*shard.slots[0].start()).await.unwrap();
        assert_eq!((now.index, now.replicas.clone()), (shard.index, vec![promoted]));
        check_all(&conn, &keys).await;
    })
    .await;
}

/// A slot range migrates with its keys under load: held half-way, the
/// source answers `ASK` for a moved key while a reader loops over all the
/// keys and new keys are written; once finished, the source answers
/// `MOVED` naming the target's `127.0.0.1:<tls port>`; no read failed and
/// every value is intact.
#[tokio::test]
async fn slot_migration_asks_then_moves_and_keeps_every_key() {
    bounded(Duration::from_secs(45), async {
        let rig = rig().await;
        let c = &rig.cluster;
        let masters = c.masters().await.unwrap();
        let (from, to) = (&masters[0], &masters[1]);
        let slots = first_slots(from, 100);
        let keys = keys_in(slots.clone(), 4);
        let conn = rig.client().await;
        write_all(&conn, &keys).await;

        // While slots migrate, commands go one at a time per connection:
        // redis 1.8.1's cluster client sends ASKING as a request of its own
        // on the shared connection, so a concurrent command to the same
        // node can take the ASKING flag and bounce the redirected one.
        let (rounds_tx, mut rounds) = tokio::sync::watch::channel(0usize);
        let reader = tokio::spawn({
            let (conn, keys) = (rig.client().await, keys.clone());
            async move {
                while !rounds_tx.is_closed() {
                    check_with(&conn, &keys, 1).await;
                    rounds_tx.send_modify(|r| *r += 1);
                }
            }
        });

        let migration = c.start_migration(slots.clone(), to.index).await.unwrap();
        assert_eq!(migration.from(), from.index);
        let moved = migration.move_keys(keys.len() / 2).await.unwrap();
        assert_eq!(moved, keys.len() / 2);
        assert_eq!(migration.keys_left().await.unwrap(), keys.len() - moved);

        let mut source = rig.node_conn(from.index).await;
        let () = redis::cmd("AUTH")
            .arg("default")
            .arg(c.node(0).admin().password())
            .query_async(&mut source)
            .await
            .unwrap();
        let ask = source.get::<_, String>(&keys[0]).await.unwrap_err();
        assert_eq!(ask.code(), Some("ASK"), "{ask}");
        assert!(
            format!("{ask}").contains(&format!("127.0.0.1:{}", to.tls_port)),
            "{ask}"
        );
        let fresh = keys_in(slots.clone(), 5).split_off(keys.len());
        write_with(&conn, &fresh, 1).await;
        let seen = *rounds.borrow_and_update();
        rounds.wait_for(|r| *r > seen).await.unwrap();

        migration.finish().await.unwrap();
        let moved = source.get::<_, String>(&keys[0]).await.unwrap_err();
        assert_eq!(moved.code(), Some("MOVED"), "{moved}");
        assert!(
            format!("{moved}").contains(&format!("127.0.0.1:{}", to.tls_port)),
            "{moved}"
        );
        assert_eq!(c.master_of_slot(*slots.end()).await.unwrap().index, to.index);
        let seen = *rounds.borrow_and_update();
        rounds.wait_for(|r| *r > seen).await.unwrap();
        drop(rounds);
        reader.await.unwrap();
        check_all(&conn, &keys).await;
        check_all(&conn, &fresh).await;
    })
    .await;
}

/// A shard that is down (its master and replica stopped) fails only its
/// own keys: the other shards keep serving theirs; once restarted, the
/// cluster settles and the shard takes writes again.
#[tokio::test]
async fn a_stopped_shard_fails_only_its_own_keys() {
    bounded(Duration::from_secs(50), async {
        let rig = rig().await;
        let c = &rig.cluster;
        let masters = c.masters().await.unwrap();
        let conn = rig.client().await;
        let others: Vec<String> = masters[..2]
            .iter()
            .flat_map(|m| keys_in(first_slots(m, 50), 1))
            .collect();
        write_all(&conn, &others).await;

        let stopped = c.stop_shard(masters[2].index).await.unwrap();
        assert_eq!(stopped.len(), 2);
        check_all(&conn, &others).await;
        let down_key = format!("{}down", slot_tag(*masters[2].slots[0].start()));
        let started = Instant::now();
        let mut conn2 = conn.clone();
        assert!(conn2.set::<_, _, ()>(&down_key, "v").await.is_err());
        assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

        c.restart(&stopped).await.unwrap();
        let () = conn2.set(&down_key, "v").await.unwrap();
        check_all(&conn, &others).await;
    })
    .await;
}
