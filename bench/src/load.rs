//! The load generators: `wrk` against the HTTP servers, `redis-benchmark`
//! straight at the TLS Redis (the ceiling).

use crate::rig::{Rig, BENCH_USER, KEYSPACE, VALUE_BYTES};
use anyhow::{bail, Context};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one load run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadResult {
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Socket errors, timeouts and non-2xx/3xx answers.
    pub errors: u64,
}

/// `wrk` threads for `conns` connections: at most the machine's cores.
fn threads(conns: u32) -> u32 {
    conns.min(crate::machine::cores())
}

/// Runs `wrk --latency` with `bench/lua/cache.lua` (`method` = GET or PUT)
/// for `duration` against `127.0.0.1:port`.
pub fn wrk(lua: &Path, port: u16, method: &str, conns: u32, duration: Duration) -> anyhow::Result<LoadResult> {
    let out = Command::new("wrk")
        .arg("-t")
        .arg(threads(conns).to_string())
        .arg("-c")
        .arg(conns.to_string())
        .arg("-d")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(lua)
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--", method, &KEYSPACE.to_string(), &VALUE_BYTES.to_string()])
        .output()
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("no BENCH line in wrk's output:\n{stdout}"))?;
    let v: Value = serde_json::from_str(line)?;
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let errors = [
        "connect_errors",
        "read_errors",
        "write_errors",
        "status_errors",
        "timeouts",
    ]
    .iter()
    .map(|k| n(k))
    .sum::<f64>() as u64;
    Ok(LoadResult {
        rps: n("requests") / (n("duration_us") / 1e6),
        p50_ms: n("p50_us") / 1000.0,
        p99_ms: n("p99_us") / 1000.0,
        errors,
    })
}

/// Where `redis-benchmark` connects and how.
pub struct BenchTarget<'a> {
    /// `-h`.
    pub host: &'a str,
    /// `-p`, a TLS port.
    pub port: u16,
    /// `--cacert`.
    pub ca: &'a Path,
    /// The password of [`BENCH_USER`].
    pub password: &'a str,
    /// Options after the TLS ones and before `--user` (`--sni`, `--cluster`).
    pub extra: &'a [&'a str],
}

impl<'a> BenchTarget<'a> {
    /// The rig's single TLS `redis-server`.
    pub fn single(rig: &'a Rig) -> BenchTarget<'a> {
        BenchTarget {
            host: "127.0.0.1",
            port: rig.redis.tls_port(),
            ca: &rig.pki.ca_path,
            password: &rig.bench_password,
            extra: &[],
        }
    }
}

/// Runs `redis-benchmark` over TLS as the ACL user against `target`: `test`
/// is `get` or `set`, over the same key space and value size as the HTTP runs.
pub fn redis_benchmark_at(target: &BenchTarget, test: &str, conns: u32, requests: u64) -> anyhow::Result<LoadResult> {
    // Single-threaded (its default): on 2 cores that gives the higher ceiling.
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", target.host, "-p", &target.port.to_string(), "--tls", "--cacert"])
        .arg(target.ca)
        .args(target.extra)
        .args(["--user", BENCH_USER, "-a", target.password])
        .args(["-c", &conns.to_string(), "-n", &requests.to_string(), "-t", test])
        .args(["-r", &KEYSPACE.to_string(), "-d", &VALUE_BYTES.to_string(), "--csv"]);
    let out = cmd.output().context("running redis-benchmark")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "redis-benchmark failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = stdout
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with(&format!("\"{test}\"")))
        .with_context(|| format!("no {test} row in redis-benchmark's output:\n{stdout}"))?;
    let cols: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    if cols.len() < 6 || cols.iter().any(|c| c.is_nan()) {
        bail!("cannot read redis-benchmark's row {row:?}");
    }
    Ok(LoadResult {
        rps: cols[0],
        p50_ms: cols[3],
        p99_ms: cols[5],
        errors: 0,
    })
}

/// `redis-benchmark` for about `duration`: a short run to warm up and
/// estimate the rate, then one sized to last `duration`.
pub fn redis_benchmark_for(rig: &Rig, test: &str, conns: u32, duration: Duration) -> anyhow::Result<LoadResult> {
    redis_benchmark_for_at(&BenchTarget::single(rig), test, conns, duration)
}

/// [`redis_benchmark_for`] against `target`.
pub fn redis_benchmark_for_at(
    target: &BenchTarget,
    test: &str,
    conns: u32,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let warm = redis_benchmark_at(target, test, conns, 20_000.max(u64::from(conns) * 100))?;
    let n = (warm.rps * duration.as_secs_f64()) as u64;
    redis_benchmark_at(target, test, conns, n.clamp(20_000, 5_000_000))
}
