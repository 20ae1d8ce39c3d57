//! `devhost start` end to end, as a developer runs it: the built binary
//! builds the repository's handler, starts the local TLS redis-server and
//! identity endpoint, and serves the app on a chosen port. Through that port
//! `/api/quickstart` works against the local cache, and a chunked PUT
//! streams through in the proxying mode host.json picks; a seconds-level timer
//! schedule fires `CacheHealthCheck`; `devhost invoke` reaches the running
//! handler; Ctrl-C (SIGINT) stops everything and no process it started is
//! left, and neither is one when devhost itself is killed with SIGKILL.
//! `devhost start --cluster` does the same against a local TLS Redis Cluster,
//! keys landing on every master.
//! Needs `redis-server` on PATH, as the other stand-in tests do.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every line the child printed (stdout and stderr), in arrival order.
#[derive(Clone, Default)]
pub(crate) struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    pub(crate) fn follow(&self, pipe: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    pub(crate) fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    /// The first line matching `pred`, waiting up to `limit`.
    pub(crate) fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.0.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < limit,
                "no {what} within {limit:?}; output:\n{}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The number after `pid ` on the banner line starting with `name`.
fn banner_pid(lines: &Lines, name: &str) -> i32 {
    let line = lines.wait_for(name, Duration::from_secs(1), |l| l.trim_start().starts_with(name));
    let rest = line
        .split("pid ")
        .nth(1)
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// Whether `pid` is still a live (not zombie) process running `exe`.
fn running(pid: i32, exe: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    state != Some('Z') && String::from_utf8_lossy(&cmdline).contains(exe)
}

pub(crate) fn devhost(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_devhost"));
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// The tests share the repository's `.devhost/run.json`: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts `devhost start --local` on a free port for the repository's app
/// and waits until it is ready (the first run may compile the handler).
fn start(extra: &[&str]) -> (Guard, Lines, u16) {
    let port = free_port();
    let mut child = devhost(&["start", "--local", "--port", &port.to_string()])
        .arg("--app-root")
        .arg(repo_root())
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("devhost starts");
    let lines = Lines::default();
    lines.follow(child.stdout.take().unwrap());
    lines.follow(child.stderr.take().unwrap());
    let child = Guard(child);
    lines.wait_for("Ready", Duration::from_secs(600), |l| l.starts_with("Ready: "));
    (child, lines, port)
}

/// Kills the child if the test fails half-way.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `devhost start --local` serves the app on the chosen port (the banner's
/// URLs, the quickstart, PUT/GET, a chunked PUT streamed through the proxy,
/// 404 for unknown routes), fires a seconds-level `CacheHealthCheck`
/// schedule, answers the admin API and `devhost invoke`; on Ctrl-C it exits 0
/// leaving no redis-server, handler, open port or run file of its own.
#[tokio::test]
async fn start_serves_the_app_fires_timers_and_stops_cleanly() {
    let _serial = SERIAL.lock().await;
    let root = repo_root();
    let (mut child, lines, port) = start(&["--schedule-override", "CacheHealthCheck=*/2 * * * * *"]);
    let started = Instant::now();
    let redis_pid = banner_pid(&lines, "redis-server");
    let handler_pid = banner_pid(&lines, "handler");
    assert!(running(redis_pid, "redis-server") && running(handler_pid, "handler"));
    let out = lines.all();
    for url in ["/api/quickstart", "/api/cache/{key}", "/api/ping"] {
        assert!(
            out.contains(&format!("http://127.0.0.1:{port}{url}")),
            "banner lists {url}:\n{out}"
        );
    }

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let rsp = http.post(format!("{base}/api/quickstart")).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body: Value = rsp.json().await.unwrap();
    assert_eq!(body["ping"]["result"], true, "{body}");
    assert_eq!(body["get"]["result"], body["set"]["value"], "{body}");
    assert!(body["client_list"]["count"].as_u64().unwrap() >= 1, "{body}");
    lines.wait_for("the Quickstart line", Duration::from_secs(5), |l| {
        l.contains("] Quickstart POST /api/quickstart -> 200 (")
    });
    let put = http.put(format!("{base}/api/cache/local-run?ttl=30")).body("v1");
    assert_eq!(put.send().await.unwrap().status(), 200);
    let got: Value = http
        .get(format!("{base}/api/cache/local-run"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["value"], "v1");
    // host.json turns proxying on: a body sent chunked, without a length,
    // streams through to the handler (legacy forwarding would drop it).
    let big: String = "0123456789abcdef".repeat(16 * 1024);
    let chunks: Vec<Result<String, std::io::Error>> = vec![Ok(big[..100_000].into()), Ok(big[100_000..].into())];
    let put = http
        .put(format!("{base}/api/cache/local-run-chunked"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)));
    assert_eq!(put.send().await.unwrap().status(), 200);
    let got: Value = http
        .get(format!("{base}/api/cache/local-run-chunked"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(got["value"] == big.as_str(), "the chunked value came back changed");
    for (method, path) in [("GET", "/api/nope"), ("DELETE", "/api/ping"), ("GET", "/ping")] {
        let rsp = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(rsp.status(), 404, "{method} {path}");
    }

    lines.wait_for("a timer run", Duration::from_secs(5), |l| {
        l.contains("] CacheHealthCheck timer (scheduled ") && l.contains("-> 200 (")
    });

    // The host's admin API, as with `func start`.
    let status: Value = http
        .get(format!("{base}/admin/host/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "Running");
    let admin = http
        .post(format!("{base}/admin/functions/CacheHealthCheck"))
        .body(r#"{"input": ""}"#);
    assert_eq!(admin.send().await.unwrap().status(), 202);
    lines.wait_for("the admin run", Duration::from_secs(5), |l| {
        l.contains("] CacheHealthCheck timer (admin) -> 200 (")
    });

    // By hand: the run file leads `devhost invoke` to the running handler.
    let invoked = devhost(&["invoke", "CacheHealthCheck", "--past-due", "--app-root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(invoked.status.success(), "{}", String::from_utf8_lossy(&invoked.stderr));
    let answer: Value = serde_json::from_slice(&invoked.stdout).expect("the envelope answer");
    assert_eq!(answer["ReturnValue"]["ok"], true, "{answer}");
    assert_eq!(answer["ReturnValue"]["is_past_due"], true, "{answer}");
    let invoked = devhost(&["invoke", "Ping", "--app-root"]).arg(&root).output().unwrap();
    assert!(invoked.status.success(), "{}", String::from_utf8_lossy(&invoked.stderr));
    let pong: Value = serde_json::from_slice(&invoked.stdout).unwrap();
    assert_eq!(pong["pong"], true);

    // Ctrl-C.
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "devhost still running 20 s after Ctrl-C:\n{}",
            lines.all()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status}:\n{}", lines.all());
    lines.wait_for("the stop line", Duration::from_secs(2), |l| {
        l.contains("handler stopped (exit status: 0)")
    });
    assert!(
        !running(redis_pid, "redis-server"),
        "redis-server {redis_pid} left running"
    );
    assert!(!running(handler_pid, "handler"), "handler {handler_pid} left running");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
    let run_file = std::fs::read_to_string(root.join(".devhost/run.json")).unwrap_or_default();
    assert!(
        !run_file.contains(&format!("\"pid\": {}", child.0.id())),
        "run file left behind"
    );
    eprintln!("after start-up: {:?}", started.elapsed());
}

/// A SIGKILLed devhost takes its redis-server and handler with it and frees
/// the port; `devhost invoke` then says the devhost is gone instead of
/// calling a dead handler.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_devhost_takes_its_processes_with_it() {
    let _serial = SERIAL.blocking_lock();
    let (mut child, lines, port) = start(&[]);
    let redis_pid = banner_pid(&lines, "redis-server");
    let handler_pid = banner_pid(&lines, "handler");
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(redis_pid, "redis-server") || running(handler_pid, "handler") {
        assert!(
            Instant::now() < deadline,
            "children of a SIGKILLed devhost still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // A SIGKILLed devhost cannot remove its run file; `devhost invoke` then
    // says the devhost is gone instead of calling a dead handler.
    let out = devhost(&["invoke", "Ping", "--app-root"])
        .arg(repo_root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is gone"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(repo_root().join(".devhost/run.json"));
}

/// A cluster node as the banner shows it.
struct Node {
    pid: i32,
    port: u16,
    /// Its slot ranges when it is a master, else empty.
    slots: Vec<(u16, u16)>,
}

/// The banner lines of the cluster's nodes.
fn cluster_banner(lines: &Lines) -> Vec<Node> {
    lines.wait_for("the cluster banner", Duration::from_secs(1), |l| {
        l.trim_start().starts_with("redis-cluster ")
    });
    let all = lines.all();
    let nodes: Vec<_> = all
        .lines()
        .filter(|l| l.trim_start().starts_with("redis-server "))
        .map(|l| {
            let word_after = |w: &str| {
                l.split(w)
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_else(|| panic!("no {w:?} in {l:?}"))
            };
            let pid = word_after("pid ").parse().unwrap();
            let port = word_after("TLS 127.0.0.1:").parse().unwrap();
            let slots = match l.contains(" master ") {
                true => word_after("slots ")
                    .split(',')
                    .map(|r| {
                        let (a, b) = r.split_once('-').unwrap();
                        (a.parse().unwrap(), b.parse().unwrap())
                    })
                    .collect(),
                false => Vec::new(),
            };
            Node { pid, port, slots }
        })
        .collect();
    assert_eq!(nodes.len(), 6, "3 masters and 3 replicas in the banner:\n{all}");
    nodes
}

/// The first value under `name` anywhere in `v`, depth first.
fn find<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(name).or_else(|| m.values().find_map(|x| find(x, name))),
        Value::Array(a) => a.iter().find_map(|x| find(x, name)),
        _ => None,
    }
}

/// `devhost start --cluster` runs the app against a local 3-master TLS
/// Redis Cluster in one command: the banner shows the 6 nodes with their
/// slots, keys hashing to every master are written and read back through the
/// local host, `/api/health` reports `"mode":"cluster"` with 3 shards (the
/// handler found the cluster from `Redis__redisHostName`/`Redis__port`
/// alone), and Ctrl-C leaves no node running.
#[tokio::test]
async fn start_cluster_serves_keys_on_every_master() {
    let _serial = SERIAL.lock().await;
    let (mut child, lines, port) = start(&["--cluster"]);
    let nodes = cluster_banner(&lines);
    let handler_pid = banner_pid(&lines, "handler");
    for n in &nodes {
        assert!(running(n.pid, "redis-server"), "node {} runs", n.pid);
    }
    let masters: Vec<&Vec<(u16, u16)>> = nodes.iter().map(|n| &n.slots).filter(|s| !s.is_empty()).collect();
    assert_eq!(masters.len(), 3, "{}", lines.all());

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // Two keys (no hash tags) in each master's slots.
    let mut keys = Vec::new();
    for ranges in &masters {
        let mine = (0..).map(|n| format!("local-cluster-{n}")).filter(|k| {
            let slot = devhost::redis_cluster::key_slot(k.as_bytes());
            ranges.iter().any(|&(a, b)| (a..=b).contains(&slot))
        });
        keys.extend(mine.take(2));
    }
    for k in &keys {
        let rsp = http
            .put(format!("{base}/api/cache/{k}?ttl=60"))
            .body(format!("v-{k}"))
            .send()
            .await
            .unwrap();
        let status = rsp.status();
        assert_eq!(status, 200, "PUT {k}: {}", rsp.text().await.unwrap());
    }
    for k in &keys {
        let rsp = http.get(format!("{base}/api/cache/{k}")).send().await.unwrap();
        let status = rsp.status();
        let body = rsp.text().await.unwrap();
        assert_eq!(status, 200, "GET {k}: {body}");
        let got: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got["value"], format!("v-{k}"), "{body}");
    }

    let rsp = http.get(format!("{base}/api/health")).send().await.unwrap();
    let status = rsp.status();
    let health: Value = rsp.json().await.unwrap();
    assert_eq!(status, 200, "{health}");
    assert_eq!(find(&health, "mode"), Some(&Value::from("cluster")), "{health}");
    let shards = find(&health, "shards").unwrap_or_else(|| panic!("no shards in {health}"));
    let count = shards.as_array().map(Vec::len).or(shards.as_u64().map(|n| n as usize));
    assert_eq!(count, Some(3), "3 shards: {health}");

    // Ctrl-C: the handler and all six nodes stop.
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running after Ctrl-C:\n{}",
            lines.all()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status}:\n{}", lines.all());
    assert!(!running(handler_pid, "handler"), "handler {handler_pid} left running");
    for n in &nodes {
        assert!(
            !running(n.pid, "redis-server"),
            "node {} (:{}) left running",
            n.pid,
            n.port
        );
    }
}

/// Without `redis-server` on PATH, `devhost start --local` fails saying how
/// to install it and how to use a real cache instead.
#[test]
fn without_redis_server_it_says_how_to_get_it() {
    let empty = tempfile::tempdir().unwrap();
    let out = devhost(&["start", "--local", "--port", &free_port().to_string()])
        .arg("--app-root")
        .arg(repo_root())
        .arg("--handler")
        .arg(env!("CARGO_BIN_EXE_devhost"))
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs `redis-server`, which is not on PATH"), "{err}");
    assert!(
        err.contains("apt-get install -y redis-server") && err.contains("brew install redis"),
        "{err}"
    );
    assert!(
        err.contains("Redis__redisHostName"),
        "points at the real-cache route too: {err}"
    );
}

/// `devhost maintenance restart|failover|moving` against a running
/// `devhost start`: each play prints its steps and ends, every invocation
/// sent meanwhile answers 200 (the app rides through), and the handler
/// logged the notifications and the handoff.
#[tokio::test]
async fn maintenance_plays_are_ridden_through() {
    let _serial = SERIAL.lock().await;
    let (_child, lines, port) = start(&[]);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let rsp = http.put(format!("{base}/api/cache/m{}", i % 5)).body("v").send().await;
                statuses.push(rsp.map(|r| r.status().as_u16()).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };
    for play in ["restart", "failover", "moving"] {
        let root = repo_root();
        let out = tokio::task::spawn_blocking(move || {
            devhost(&["maintenance", play, "--app-root"])
                .arg(root)
                .output()
                .expect("devhost maintenance runs")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{play}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" done"), "{play}: {stdout}");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = load.await.unwrap();
    let failed = statuses.iter().filter(|s| **s != 200).count();
    println!("maintenance plays: {} invocations, {failed} not 200", statuses.len());
    assert!(statuses.len() > 100, "{} invocations", statuses.len());
    assert_eq!(failed, 0, "{statuses:?}");
    let out = lines.all();
    for needle in [
        "kind=NodeMaintenanceStarting",
        "kind=NodeMaintenanceFailoverComplete",
        "kind=NodeMaintenanceEnded",
        "handoff: traffic moved to the new endpoint",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
}
