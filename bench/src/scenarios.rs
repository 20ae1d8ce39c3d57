//! The measurements: throughput, latency and CPU per request against
//! concurrency, and the cost of token refresh (cold start and memory are
//! in `start`).

use crate::client::Conn;
use crate::load::{self, LoadResult};
use crate::quota::process_cpu;
use crate::rig::{key, Program, Rig, Server};
use crate::stats::median;
use anyhow::{ensure, Context};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who serves the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The Rust handler, through HTTP.
    Handler,
    /// The floor (`bench/floor`), through HTTP: hyper and one TLS Redis
    /// connection answering the raw value, the least any server can do.
    Floor,
    /// `redis-benchmark` straight at Redis: the ceiling.
    Redis,
    /// The Python peer, through HTTP.
    Python,
}

impl Side {
    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Side::Handler => "handler (Rust)",
            Side::Floor => "floor",
            Side::Redis => "redis-benchmark",
            Side::Python => "Python peer",
        }
    }
}

/// The operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `GET /api/cache/{key}`, or Redis `GET`.
    Get,
    /// `PUT /api/cache/{key}`, or Redis `SET`.
    Put,
}

impl Op {
    /// Its name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Put => "PUT/SET",
        }
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Point {
    /// Who served it.
    pub side: Side,
    /// What was asked.
    pub op: Op,
    /// Concurrent connections.
    pub conns: u32,
    /// What was measured.
    pub result: LoadResult,
    /// The server's CPU time (user and system) per request, µs; `None` for
    /// `redis-benchmark`.
    pub cpu_us: Option<f64>,
    /// Each measured run of this point, in order: one, or one per round
    /// where the handler and the floor took turns (then `result` and
    /// `cpu_us` are the rounds' medians, and the errors their sum).
    pub rounds: Vec<Round>,
}

/// One measured run of a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    /// Completed requests per second.
    pub rps: f64,
    /// The server's CPU time per request, µs.
    pub cpu_us: Option<f64>,
}

impl Point {
    /// A point of one run.
    pub fn single(side: Side, op: Op, conns: u32, result: LoadResult, cpu_us: Option<f64>) -> Point {
        Point {
            side,
            op,
            conns,
            result,
            cpu_us,
            rounds: vec![Round {
                rps: result.rps,
                cpu_us,
            }],
        }
    }

    /// A point of several runs (at least one): the medians of their
    /// req/s, latencies and CPU, the sum of their errors.
    pub(crate) fn of_rounds(side: Side, op: Op, conns: u32, runs: &[(LoadResult, f64)]) -> Point {
        let of = |f: fn(&(LoadResult, f64)) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Point {
            side,
            op,
            conns,
            result: LoadResult {
                rps: of(|r| r.0.rps),
                p50_ms: of(|r| r.0.p50_ms),
                p99_ms: of(|r| r.0.p99_ms),
                errors: runs.iter().map(|r| r.0.errors).sum(),
            },
            cpu_us: Some(of(|r| r.1)),
            rounds: runs
                .iter()
                .map(|(r, cpu)| Round {
                    rps: r.rps,
                    cpu_us: Some(*cpu),
                })
                .collect(),
        }
    }
}

/// The medians of the rounds' own ratios `a` ÷ `b` of req/s and of CPU per
/// request, when the two points have the same number of rounds, at least
/// two (they took turns, so drift in the machine's speed cancels out).
pub fn paired_ratios(a: &Point, b: &Point) -> Option<(f64, Option<f64>)> {
    if a.rounds.len() < 2 || a.rounds.len() != b.rounds.len() {
        return None;
    }
    let rps: Vec<f64> = a.rounds.iter().zip(&b.rounds).map(|(x, y)| x.rps / y.rps).collect();
    let cpu: Option<Vec<f64>> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .map(|(x, y)| Some(x.cpu_us? / y.cpu_us?))
        .collect();
    Some((median(&rps), cpu.map(|c| median(&c))))
}

/// How the handler and the floor take turns at each throughput point.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pairing {
    /// Runs of each at each point, the two alternating (the first of a
    /// round alternating too).
    pub rounds: usize,
    /// The length of each of those runs.
    pub measure: Duration,
}

/// How long each load run lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Warm-up before each measured run (same concurrency, not recorded).
    pub warm: Duration,
    /// The measured run.
    pub measure: Duration,
}

/// The HTTP servers of the throughput runs; the Python peer only when its
/// virtualenv exists.
pub struct Servers<'a> {
    /// The handler.
    pub handler: &'a Server,
    /// The floor.
    pub floor: &'a Server,
    /// The Python peer.
    pub python: Option<&'a Server>,
}

/// Runs GET and PUT at each concurrency against the handler, the floor,
/// the Python peer (when there) and `redis-benchmark`, interleaved so drift
/// hits all alike, with each HTTP server's CPU time per request. The
/// handler and the floor, whose ratio the targets are about, take turns
/// for `pairing.rounds` rounds at each point.
pub fn throughput(
    rig: &Rig,
    lua: &Path,
    servers: &Servers,
    concurrency: &[u32],
    timing: Timing,
    pairing: Pairing,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for (i, &conns) in concurrency.iter().enumerate() {
        for op in [Op::Get, Op::Put] {
            let method = if op == Op::Get { "GET" } else { "PUT" };
            let run = |server: &Server, length: Duration| -> anyhow::Result<(LoadResult, f64)> {
                let before = process_cpu(server.pid())?;
                let result = load::wrk(lua, server.port, method, conns, length)?;
                let cpu = process_cpu(server.pid())?.saturating_sub(before);
                Ok((result, cpu_per_request_us(cpu, result.rps, length)))
            };
            let server_of = |side: Side| {
                if side == Side::Handler {
                    servers.handler
                } else {
                    servers.floor
                }
            };
            let n = i + usize::from(op == Op::Put);
            for side in handler_and_floor(n) {
                load::wrk(lua, server_of(side).port, method, conns, timing.warm)?;
            }
            let mut runs: [Vec<(LoadResult, f64)>; 2] = [Vec::new(), Vec::new()];
            for round in 0..pairing.rounds.max(1) {
                for side in handler_and_floor(n + round) {
                    let r = run(server_of(side), pairing.measure)?;
                    report(side, op, conns, &r.0);
                    runs[usize::from(side == Side::Floor)].push(r);
                }
            }
            points.push(Point::of_rounds(Side::Handler, op, conns, &runs[0]));
            points.push(Point::of_rounds(Side::Floor, op, conns, &runs[1]));
            if let Some(py) = servers.python {
                load::wrk(lua, py.port, method, conns, timing.warm)?;
                let (result, cpu) = run(py, timing.measure)?;
                report(Side::Python, op, conns, &result);
                points.push(Point::single(Side::Python, op, conns, result, Some(cpu)));
            }
            let test = if op == Op::Get { "get" } else { "set" };
            let result = load::redis_benchmark_for(rig, test, conns, timing.measure)?;
            report(Side::Redis, op, conns, &result);
            points.push(Point::single(Side::Redis, op, conns, result, None));
        }
    }
    Ok(points)
}

/// The order of the handler and the floor at the `n`th concurrency plus 1
/// for PUT: each goes first at every other concurrency of each operation,
/// so that neither always runs right after the other.
fn handler_and_floor(n: usize) -> [Side; 2] {
    if n.is_multiple_of(2) {
        [Side::Handler, Side::Floor]
    } else {
        [Side::Floor, Side::Handler]
    }
}

/// CPU time per request in µs, from a run of `length` at `rps`.
fn cpu_per_request_us(cpu: Duration, rps: f64, length: Duration) -> f64 {
    cpu.as_secs_f64() * 1e6 / (rps * length.as_secs_f64()).max(1.0)
}

fn report(side: Side, op: Op, conns: u32, r: &LoadResult) {
    print_point(side.label(), op, conns, r);
}

/// One measured point on stderr, as every scenario prints it.
pub(crate) fn print_point(what: &str, op: Op, conns: u32, r: &LoadResult) {
    eprintln!(
        "bench: {:<16} {:<7} c={:<3} {:>9.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
        what,
        op.label(),
        conns,
        r.rps,
        r.p50_ms,
        r.p99_ms,
        r.errors
    );
}

/// What token refresh costs.
#[derive(Debug, Clone, Default)]
pub struct Refresh {
    /// GET at 64 connections, tokens living 1 h (no refresh), one per round.
    pub steady: Vec<LoadResult>,
    /// The same with tokens living [`Refresh::lifetime_s`] and refreshed
    /// [`Refresh::offset_s`] before expiry.
    pub refreshing: Vec<LoadResult>,
    /// Short token lifetime, s.
    pub lifetime_s: u64,
    /// Refresh offset with short tokens, s.
    pub offset_s: u64,
    /// Seconds of measured load with short tokens.
    pub refreshing_seconds: f64,
    /// Token requests the identity endpoint saw during those seconds.
    pub refreshes_under_load: usize,
    /// Re-AUTHs and connections made by the refreshing handler, from Health.
    pub reauths: u64,
    /// Connections the refreshing handler made in all (1 = never reconnected).
    pub connects: u64,
    /// The burst inside a refresh window.
    pub burst: Burst,
}

/// Concurrent invocations arriving when the token is due.
#[derive(Debug, Clone, Default)]
pub struct Burst {
    /// Invocations sent at once.
    pub invocations: usize,
    /// Of which answered 200.
    pub ok: usize,
    /// Token requests the identity endpoint got meanwhile (must be 1).
    pub token_requests: usize,
    /// Re-AUTHs on the live connection meanwhile (must be 1).
    pub reauths: u64,
    /// New connections meanwhile (must be 0).
    pub reconnects: u64,
    /// How long after the latest instant the token could be due the burst
    /// was sent (it was due).
    pub after_due: Duration,
    /// How long before the token's exact expiry the burst was sent (it was
    /// still valid).
    pub before_expiry: Duration,
}

/// Throughput with and without refreshes (alternating, `rounds` each), then
/// the burst. `short` = (lifetime, offset) of the refreshing tokens.
pub fn refresh(
    rig: &Rig,
    lua: &Path,
    handler: &Program,
    timing: Timing,
    rounds: usize,
    short: (u64, u64),
) -> anyhow::Result<Refresh> {
    let mut out = Refresh {
        lifetime_s: short.0,
        offset_s: short.1,
        ..Refresh::default()
    };
    if rounds > 0 {
        let short_identity = rig.identity_with_lifetime(Duration::from_secs(short.0))?;
        let steady = Server::start(handler, &rig.root, &rig.app_settings(&rig.identity, 300))?;
        let refreshing = Server::start(handler, &rig.root, &rig.app_settings(&short_identity, short.1))?;
        load::wrk(lua, steady.port, "GET", 64, timing.warm)?;
        load::wrk(lua, refreshing.port, "GET", 64, timing.warm)?;
        for round in 0..rounds {
            for which in [round % 2, 1 - round % 2] {
                if which == 0 {
                    let r = load::wrk(lua, steady.port, "GET", 64, timing.measure)?;
                    report(Side::Handler, Op::Get, 64, &r);
                    out.steady.push(r);
                } else {
                    let before = short_identity.requests();
                    let r = load::wrk(lua, refreshing.port, "GET", 64, timing.measure)?;
                    out.refreshes_under_load += short_identity.requests() - before;
                    out.refreshing_seconds += timing.measure.as_secs_f64();
                    eprintln!(
                        "bench: (refreshing every ~{}s: {} token requests so far)",
                        short.0 - short.1,
                        out.refreshes_under_load
                    );
                    report(Side::Handler, Op::Get, 64, &r);
                    out.refreshing.push(r);
                }
            }
        }
        let health = health(refreshing.port)?;
        out.reauths = health["connection"]["reauths"].as_u64().unwrap_or(0);
        out.connects = health["connection"]["connects"].as_u64().unwrap_or(0);
    }
    out.burst = burst(rig, handler, 256, short.0.max(4))?;
    Ok(out)
}

/// Starts a handler with tokens of `lifetime_s` (refresh offset half of it),
/// leaves it idle until its token is due but still valid, then sends `n`
/// invocations at once on connections opened beforehand, and counts the
/// token requests they cause.
fn burst(rig: &Rig, handler: &Program, n: usize, lifetime_s: u64) -> anyhow::Result<Burst> {
    // Sent at least this long before the token's exp, so that the whole
    // burst arrives while the token is valid.
    const MARGIN: Duration = Duration::from_millis(200);
    let identity = rig.identity_with_lifetime(Duration::from_secs(lifetime_s))?;
    let offset = Duration::from_secs(lifetime_s / 2);
    let server = Server::start(handler, &rig.root, &rig.app_settings(&identity, offset.as_secs()))?;
    ensure!(
        identity.requests() == 1,
        "the burst's handler made {} token requests at start-up (want 1)",
        identity.requests()
    );
    // The stand-in's `expires_on` is whole seconds (now rounded down plus
    // the lifetime), so the token lives up to 1 s less than `lifetime_s`:
    // take its exact exp from the token itself. The handler refreshes at
    // exp - offset + jitter, the jitter at most a fifth of the offset (the
    // offset is under both the lifetime and the 60 s cap of the jitter).
    let token = identity
        .last_token()
        .context("the burst's identity endpoint minted no token")?;
    let exp = identity.verify(&token).context("the burst's token")?.exp;
    let expires_at = instant_of_unix(exp)?;
    let due_by = expires_at - offset + offset / 5;
    let send_at = due_by + (expires_at - due_by) / 2;
    ensure!(
        send_at + MARGIN < expires_at,
        "the burst's token (lifetime {lifetime_s} s) leaves no room to be due and still valid"
    );
    let before_health = health(server.port)?;
    let conns: Vec<Conn> = (0..n)
        .map(|_| Conn::connect(server.port))
        .collect::<Result<_, _>>()
        .context("opening the burst's connections")?;
    std::thread::sleep(send_at.saturating_duration_since(Instant::now()));
    let before = identity.requests();
    let gate = Arc::new(Barrier::new(n + 1));
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.wait();
                conn.request("GET", &format!("/api/cache/{}", key(i as u32)), b"")
                    .map(|r| r.0)
            })
        })
        .collect();
    gate.wait();
    let released = Instant::now();
    ensure!(
        released >= due_by && released + MARGIN < expires_at,
        "the burst left {:?} after the token was due and {:?} before it expired: not inside the window",
        released.saturating_duration_since(due_by),
        expires_at.saturating_duration_since(released)
    );
    let ok = workers
        .into_iter()
        .map(|w| w.join().ok().and_then(Result::ok))
        .filter(|s| *s == Some(200))
        .count();
    // A handler that refreshes beside the invocations may answer them all
    // before its fetch is even sent: wait for the re-AUTH before counting.
    let count = |h: &Value, k: &str| h["connection"][k].as_u64().unwrap_or(0);
    let wait_until = Instant::now() + Duration::from_secs(5);
    let mut after_health = health(server.port)?;
    while count(&after_health, "reauths") == count(&before_health, "reauths") && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(10));
        after_health = health(server.port)?;
    }
    let token_requests = identity.requests() - before;
    Ok(Burst {
        invocations: n,
        ok,
        token_requests,
        reauths: count(&after_health, "reauths") - count(&before_health, "reauths"),
        reconnects: count(&after_health, "connects") - count(&before_health, "connects"),
        after_due: released - due_by,
        before_expiry: expires_at - released,
    })
}

/// The instant of `unix_s` (Unix seconds), which must be in the future.
fn instant_of_unix(unix_s: i64) -> anyhow::Result<Instant> {
    let (now, now_unix) = (Instant::now(), SystemTime::now());
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_s)?);
    Ok(now + at.duration_since(now_unix).context("that instant has passed")?)
}

/// `GET /api/health` as JSON.
pub(crate) fn health(port: u16) -> anyhow::Result<Value> {
    let (status, body) = Conn::connect(port)?.request("GET", "/api/health", b"")?;
    ensure!(status == 200, "GET /api/health answered {status}");
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over the concurrencies, the handler and the floor each go first
    /// half the time for GET and half the time for PUT.
    #[test]
    fn handler_and_floor_take_turns_within_each_operation() {
        for put in [0, 1] {
            let firsts: Vec<Side> = (0..4).map(|i| handler_and_floor(i + put)[0]).collect();
            assert_eq!(firsts.iter().filter(|s| **s == Side::Handler).count(), 2, "{firsts:?}");
            assert_ne!(firsts[0], firsts[1]);
        }
    }

    /// A point of rounds is their medians and their errors summed; the
    /// handler and the floor alternate going first from round to round.
    #[test]
    fn rounds_make_a_point() {
        let run = |rps: f64, p50_ms: f64, errors: u64, cpu: f64| {
            let r = LoadResult {
                rps,
                p50_ms,
                p99_ms: 2.0 * p50_ms,
                errors,
            };
            (r, cpu)
        };
        let p = Point::of_rounds(
            Side::Handler,
            Op::Get,
            16,
            &[
                run(300.0, 3.0, 1, 30.0),
                run(100.0, 1.0, 0, 10.0),
                run(200.0, 2.0, 2, 50.0),
            ],
        );
        assert_eq!(p.result.rps, 200.0);
        assert_eq!(p.result.p50_ms, 2.0);
        assert_eq!(p.result.p99_ms, 4.0);
        assert_eq!(p.result.errors, 3);
        assert_eq!(p.cpu_us, Some(30.0));
        assert_eq!(p.rounds.len(), 3);
        assert_eq!(
            p.rounds[1],
            Round {
                rps: 100.0,
                cpu_us: Some(10.0)
            }
        );
        let firsts: Vec<Side> = (0..4).map(|round| handler_and_floor(1 + round)[0]).collect();
        assert_eq!(firsts, [Side::Floor, Side::Handler, Side::Floor, Side::Handler]);
    }

    /// The paired ratios are the medians of the rounds' own ratios, and
    /// there are none for single runs or rounds that do not match.
    #[test]
    fn paired_ratios_of_rounds() {
        let with = |rps: &[f64], cpu: Option<&[f64]>| {
            let mut p = Point::single(Side::Floor, Op::Get, 16, LoadResult::default(), None);
            p.rounds = rps
                .iter()
                .enumerate()
                .map(|(i, &rps)| Round {
                    rps,
                    cpu_us: cpu.map(|c| c[i]),
                })
                .collect();
            p
        };
        let a = with(&[100.0, 90.0, 80.0], Some(&[10.0, 12.0, 20.0]));
        let b = with(&[100.0, 100.0, 70.0], Some(&[10.0, 8.0, 20.0]));
        let (rps, cpu) = paired_ratios(&a, &b).expect("three rounds each");
        assert!((rps - 1.0).abs() < 1e-12, "{rps}");
        assert!((cpu.expect("CPU of every round") - 1.0).abs() < 1e-12);
        let no_cpu = with(&[100.0, 100.0, 70.0], None);
        assert_eq!(paired_ratios(&a, &no_cpu).map(|r| r.1), Some(None));
        assert_eq!(paired_ratios(&a, &with(&[100.0, 100.0], None)), None);
        assert_eq!(paired_ratios(&with(&[1.0], None), &with(&[1.0], None)), None);
    }

    /// CPU per request is the CPU time over the requests of the run, in µs.
    #[test]
    fn cpu_per_request() {
        let us = cpu_per_request_us(Duration::from_millis(1500), 10_000.0, Duration::from_secs(5));
        assert!((us - 30.0).abs() < 1e-9, "{us}");
        assert_eq!(
            cpu_per_request_us(Duration::from_millis(10), 0.0, Duration::from_secs(1)),
            10_000.0
        );
    }
}
