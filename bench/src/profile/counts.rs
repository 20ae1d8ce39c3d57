//! Counting over a `wrk` run: heap allocations (from a `count-allocs`
//! build's own counters), system calls at full speed (`perf stat` on the
//! `raw_syscalls:sys_enter` tracepoint) and by call (`strace -c -f`), and
//! running a tool attached to a server around a run.

use super::ProfilePlan;
use crate::client::Conn;
use crate::load::{self, LoadResult};
use crate::rig::Server;
use crate::scenarios::{print_point, Op};
use anyhow::{bail, ensure, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Heap allocations per request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Allocs {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`, per request.
    pub count: f64,
    /// Bytes those calls asked for, per request.
    pub bytes: f64,
}

/// System calls per request under `strace -c -f`, by call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Strace {
    /// `(call, calls per request)`, the most frequent first.
    pub calls: Vec<(String, f64)>,
    /// All calls per request.
    pub total: f64,
}

/// The run's requests: its rate over its planned length (`wrk` stops on
/// time, so its real length is within a few milliseconds of it).
fn requests(r: &LoadResult, length: Duration) -> f64 {
    (r.rps * length.as_secs_f64()).max(1.0)
}

/// One measured run of `op` at the plan's connections, with the warm-up
/// before it when `warm`, checked to have answered every request.
fn wrk(lua: &Path, server: &Server, op: Op, plan: &ProfilePlan, what: &str) -> anyhow::Result<LoadResult> {
    let method = if op == Op::Get { "GET" } else { "PUT" };
    let r = load::wrk(lua, server.port, method, plan.conns, plan.timing.measure)?;
    print_point(what, op, plan.conns, &r);
    ensure!(r.errors == 0, "{what}: {} failed requests", r.errors);
    Ok(r)
}

/// Allocations per request of a `count-allocs` build serving `op`: its
/// counters before and after a run (after a warm-up run).
pub fn allocs(lua: &Path, server: &Server, op: Op, plan: &ProfilePlan) -> anyhow::Result<Allocs> {
    let method = if op == Op::Get { "GET" } else { "PUT" };
    load::wrk(lua, server.port, method, plan.conns, plan.timing.warm)?;
    let before = alloc_counts(server.port)?;
    let r = wrk(lua, server, op, plan, "count-allocs")?;
    let after = alloc_counts(server.port)?;
    let n = requests(&r, plan.timing.measure);
    Ok(Allocs {
        count: after.0.saturating_sub(before.0) as f64 / n,
        bytes: after.1.saturating_sub(before.1) as f64 / n,
    })
}

/// `GET /api/__allocs`: allocations and bytes so far.
fn alloc_counts(port: u16) -> anyhow::Result<(u64, u64)> {
    let (status, body) = Conn::connect(port)?.request("GET", "/api/__allocs", b"")?;
    let body = String::from_utf8_lossy(&body);
    ensure!(status == 200, "GET /api/__allocs answered {status}: {body}");
    parse_alloc_counts(&body).with_context(|| format!("GET /api/__allocs answered {body:?}"))
}

/// `<allocations> <bytes>`.
fn parse_alloc_counts(body: &str) -> Option<(u64, u64)> {
    let mut it = body.split_whitespace().map(str::parse::<u64>);
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(n)), Some(Ok(bytes)), None) => Some((n, bytes)),
        _ => None,
    }
}

/// System calls per request of `server` serving `op` at full speed: `perf
/// stat` counting the `raw_syscalls:sys_enter` tracepoint of all its
/// threads over a run.
pub fn syscalls(root: &Path, lua: &Path, server: &Server, op: Op, plan: &ProfilePlan) -> anyhow::Result<f64> {
    let out = scratch(root, "perf-stat.csv")?;
    let pid = server.pid().to_string();
    let mut perf = Command::new("perf");
    perf.args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", &pid, "-o"])
        .arg(&out);
    let r = around(root, &mut perf, Duration::from_millis(300), || {
        wrk(lua, server, op, plan, "perf stat")
    })?;
    let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let n = parse_perf_stat(&text).with_context(|| format!("no count in perf stat's output:\n{text}"))?;
    Ok(n as f64 / requests(&r, plan.timing.measure))
}

/// The `raw_syscalls:sys_enter` count of `perf stat -x ,`'s output.
fn parse_perf_stat(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// System calls per request of `server` serving `op`, by call: `strace -c
/// -f` over a run (the server much slowed by it).
pub fn strace(root: &Path, lua: &Path, server: &Server, op: Op, plan: &ProfilePlan) -> anyhow::Result<Strace> {
    let out = scratch(root, "strace.txt")?;
    let pid = server.pid().to_string();
    let mut strace = Command::new("strace");
    strace.args(["-c", "-f", "-p", &pid, "-o"]).arg(&out);
    let r = around(root, &mut strace, Duration::from_millis(500), || {
        wrk(lua, server, op, plan, "strace -c -f")
    })?;
    let text = std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    let counts = parse_strace(&text).with_context(|| format!("cannot read strace -c's output:\n{text}"))?;
    let n = requests(&r, plan.timing.measure);
    Ok(Strace {
        total: counts.iter().map(|(_, c)| *c as f64).sum::<f64>() / n,
        calls: counts.into_iter().map(|(call, c)| (call, c as f64 / n)).collect(),
    })
}

/// `(call, calls)` of `strace -c`'s table, the most frequent first; `None`
/// when it has no row.
fn parse_strace(text: &str) -> Option<Vec<(String, u64)>> {
    let mut rows: Vec<(String, u64)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with(['%', '-']))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (name, numbers) = cols.split_last()?;
            if numbers.iter().any(|n| n.parse::<f64>().is_err()) {
                return None;
            }
            // % time, seconds, usecs/call, calls and errors (when any).
            let calls = match numbers.len() {
                4 | 5 => numbers[3],
                3 => numbers[2],
                _ => return None,
            };
            Some((name.to_string(), calls.parse().ok()?))
        })
        .filter(|(name, _)| name != "total")
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (!rows.is_empty()).then_some(rows)
}

/// `target/profile/<name>`, made empty.
pub(super) fn scratch(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join("target").join("profile");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    Ok(path)
}

/// Starts `tool` (attached to a server), gives it `attach` to attach, runs
/// `run`, then stops it with SIGINT (as Ctrl-C would) and waits for it to
/// write what it counted. Its stderr goes to `target/profile/<tool>.log`,
/// quoted when it fails.
pub(super) fn around<T>(
    root: &Path,
    tool: &mut Command,
    attach: Duration,
    run: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let name = tool.get_program().to_string_lossy().into_owned();
    let log = scratch(root, &format!("{name}.log"))?;
    let mut child = tool
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    std::thread::sleep(attach);
    if let Ok(Some(status)) = child.try_wait() {
        bail!(
            "{name} stopped at once ({status}): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let out = run();
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    child.wait().with_context(|| format!("waiting for {name}"))?;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `strace -c`'s table read with and without the errors column, the
    /// total row left out, the most frequent call first.
    #[test]
    fn strace_table() {
        let text = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.040000           4     10000           write
 35.00    0.035000           2     20000      5000 recvfrom
 25.00    0.025000           5      5000           epoll_wait
------ ----------- ----------- --------- --------- ----------------
100.00    0.100000           2     35000      5000 total
";
        let rows = parse_strace(text).unwrap();
        assert_eq!(
            rows,
            vec![
                ("recvfrom".to_owned(), 20000),
                ("write".to_owned(), 10000),
                ("epoll_wait".to_owned(), 5000)
            ]
        );
        assert_eq!(parse_strace("strace: Process 1 attached\n"), None);
    }

    /// `perf stat -x ,`'s line of the tracepoint, and the counters' answer.
    #[test]
    fn perf_stat_and_alloc_counts() {
        let text = "# started on Fri Dec  4 19:00:00 2026\n\n1074637,,raw_syscalls:sys_enter,1007950708,100.00,,\n";
        assert_eq!(parse_perf_stat(text), Some(1_074_637));
        assert_eq!(
            parse_perf_stat("<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n"),
            None
        );
        assert_eq!(parse_alloc_counts("12 3456"), Some((12, 3456)));
        assert_eq!(parse_alloc_counts("12"), None);
        assert_eq!(parse_alloc_counts("12 34 5"), None);
    }
}
