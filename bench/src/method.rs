//! The report's "Method" section, written from the plans the bench runs, so
//! that the durations, counts and token settings it states are the ones
//! used.

use crate::rig::{KEYSPACE, VALUE_BYTES};
use crate::stats::group;
use crate::Plan;

/// The Method section for a report of `full` (the full run), describing
/// `smoke` and `--refresh` (`refresh_only_rounds` rounds) too.
pub fn markdown(full: &Plan, smoke: &Plan, refresh_only_rounds: usize) -> String {
    let secs = |d: std::time::Duration| format!("{} s", d.as_secs_f64());
    let list = |c: &[u32]| c.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let conns = |p: &Plan| list(&p.concurrency);
    let (life, off) = full.short_tokens;
    let burst_life = life.max(4);
    let slow = &full.slow;
    format!(
        "## Method

- One command, `cargo run --release -p bench`: it checks for `wrk`, `redis-benchmark`, `redis-server` and
  `python3 -m venv` (and prints the `apt-get install` line for what is missing; it installs nothing),
  builds `target/release/handler`, makes the Python peer's virtualenv in `target/bench-venv` from
  `bench/python_peer/requirements.txt`, starts a `redis-server` with TLS and ACL users and the App Service
  identity endpoint (both from `devhost`), and starts each server under test the way the Functions host
  does (`FUNCTIONS_CUSTOMHANDLER_PORT`, worker id, app root as working directory, stdout and stderr read
  through pipes). The handler runs with its defaults (`RUST_LOG=info`: one log line per invocation).
- The Python peer (`bench/python_peer/app.py`) does the job the way Microsoft's Python quickstart does:
  `DefaultAzureCredential` (which finds the same local identity endpoint through `IDENTITY_ENDPOINT`),
  the user name from the token's `oid`, redis-py over TLS with the token as password, the
  `expires_on - now < 300` check before each command with a new token and `AUTH` when due, 3 tries with
  a new client on a lost connection; in aiohttp with `redis.asyncio`. It is given the benefit of every
  doubt: no access log, single-flight refresh, a warm-up at start-up like the handler's.
- `redis-benchmark` runs single-threaded (its default; on 2 cores that gives the higher ceiling) over
  TLS as an ACL user with the same rules as the identity's user, `-r {keys} -d {value}`: the same keys and
  value size as the HTTP runs.
- Every number is from the same run on the same machine; ratios compare numbers of that run. Load
  generator, Redis and the server under test share the cores, as they would on one small instance.
- The refresh cost compares two handlers, one with 1 h tokens and one whose tokens live {life} s and are
  refreshed {off} s before expiry, GET at 64 connections, {rounds} rounds of {refresh_run} runs (after {refresh_warm}
  of warm-up) back to back in alternating order; the loss is the median of the per-round ratios. Single
  runs on a shared VM vary by much more than 5% (the spread is given with the result), so a single pair
  of runs says nothing about a 5% effect; the paired median does.
- The burst: a handler whose tokens live {burst_life} s, refreshed {burst_off} s before expiry, is left idle until
  half-way between the latest instant its token can be due (expiry less the offset plus the largest
  jitter, a fifth of the offset) and the token's exact expiry, read from the token's `exp` (the
  stand-in's `expires_on` is whole seconds, so a token lives up to 1 s less than its nominal lifetime);
  the bench checks that the burst left inside that window.
- The refresh with a slow identity endpoint: every token answer takes {slow_delay}, tokens live {slow_life} s,
  offset {slow_off} s, GET at {slow_conns} connections; details in its section.
- The cluster: the handler in cluster mode on a local TLS Redis Cluster of 3 masters with a replica each,
  against `redis-benchmark --cluster` on the same cluster, GET and PUT at {cl_conns} connections, {cl_rounds} runs of
  {cl_run} per side at each point, medians; details in its section. `-- --cluster` runs only this and
  rewrites only that section of `BENCHMARKS.md`.
- `cargo run --release -p bench -- --smoke` (what CI runs) does {smoke_run} of each part at {smoke_conns}
  connections, {smoke_cold} cold starts, {smoke_mem} requests for memory, the refresh burst, and the slow
  identity refresh with a {smoke_delay} answer, {smoke_slow_life} s tokens and offset {smoke_slow_off} s for {smoke_slow_run}, and
  the cluster at {smoke_cl_conns} connections ({smoke_cl_run}, one run per side); it checks
  that no request failed, that the burst caused one token request and that a fetch was in flight during
  the slow-identity run, and writes nothing. `-- --refresh` measures only the refresh cost, in
  {refresh_only_rounds} rounds; `-- --slow-identity` only the refresh with a slow identity endpoint. Both
  print their report and write nothing. `-- --rig` only starts Redis and the identity endpoint and
  prints the settings, for profiling a handler by hand (`perf record -g -p <pid>`, `valgrind
  --tool=massif`).
- Throughput points: {conns_full} connections, {run} per point after {warm} of warm-up; cold starts: {cold}
  of each server; memory: {mem} requests.
",
        keys = KEYSPACE,
        value = VALUE_BYTES,
        rounds = full.refresh_rounds,
        refresh_run = secs(full.refresh_timing.measure),
        refresh_warm = secs(full.refresh_timing.warm),
        burst_off = burst_life / 2,
        slow_delay = secs(slow.delay),
        slow_life = slow.lifetime_s,
        slow_off = slow.offset_s,
        slow_conns = slow.conns,
        cl_conns = list(&full.cluster.concurrency),
        cl_rounds = full.cluster.rounds,
        cl_run = secs(full.cluster.timing.measure),
        smoke_cl_conns = list(&smoke.cluster.concurrency),
        smoke_cl_run = secs(smoke.cluster.timing.measure),
        smoke_run = secs(smoke.timing.measure),
        smoke_conns = conns(smoke),
        smoke_cold = smoke.cold_starts,
        smoke_mem = group(smoke.memory_requests),
        smoke_delay = secs(smoke.slow.delay),
        smoke_slow_life = smoke.slow.lifetime_s,
        smoke_slow_off = smoke.slow.offset_s,
        smoke_slow_run = secs(smoke.slow.refreshing),
        conns_full = conns(full),
        run = secs(full.timing.measure),
        warm = secs(full.timing.warm),
        cold = full.cold_starts,
        mem = group(full.memory_requests),
    )
}
