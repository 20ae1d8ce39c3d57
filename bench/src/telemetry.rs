//! The telemetry export scenario (`-- --telemetry`): what exporting spans
//! over OTLP/HTTP costs the handler, and whether one is lost at a steady
//! rate.
//!
//! Two handlers side by side on the rig, one with export off (no `OTEL_*`
//! variable) and one exporting to `devhost`'s OTLP receiver with every
//! other setting at its default, take turns under GET at full speed
//! (`wrk`), each run timed with the handler's CPU; Health's `telemetry`
//! counters say how many spans went out and how many the bounded queue
//! dropped. Then a fresh exporting handler, against a fresh receiver so
//! that the count starts from nothing, gets invocations at a fixed rate
//! ([`crate::paced`]), each with its own invocation id, and the bench waits
//! for the receiver to hold the server span of every one. The report is in
//! `telemetry_report`.

use crate::load::{self, LoadResult};
use crate::paced::{self, PacedRun};
use crate::quota::process_cpu;
use crate::rig::{Program, Rig, Server};
use crate::scenarios::{health, print_point, Op, Timing};
use anyhow::{ensure, Context};
use devhost::otlp::{Behaviour, Receiver, SpanKind};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Keep-alive connections of the paced run: at 1,000/s each has 16 ms to
/// be answered before its next instant, against well under 1 ms needed.
pub(crate) const PACED_CONNS: u32 = 16;
/// The invocation ids of the paced run are this and the request's number.
const PACED_ID: &str = "rate-";

/// How the scenario runs.
#[derive(Debug, Clone)]
pub struct TelemetryPlan {
    /// Connections of the full-speed GET runs.
    pub conns: u32,
    /// Full-speed rounds: one run per handler each, the order alternating.
    pub rounds: usize,
    /// Warm-up of each handler (none when zero), then each run's length.
    pub timing: Timing,
    /// Invocations a second of the paced run.
    pub rate: u32,
    /// How long the paced run sends.
    pub paced: Duration,
    /// The longest wait after the paced run for its spans (a batch waits
    /// up to 5 s, `OTEL_BSP_SCHEDULE_DELAY`, before it is sent).
    pub span_wait: Duration,
    /// Whether one span lost in the paced run fails the run; the smoke run
    /// only checks that spans arrive.
    pub every_span: bool,
}

/// One full-speed run of one handler.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// What `wrk` measured.
    pub load: LoadResult,
    /// The handler's CPU time over the run.
    pub handler_cpu: Duration,
    /// The bench process's CPU time over the run: the receiver, and the
    /// reading of the handlers' log lines.
    pub bench_cpu: Duration,
    /// Requests answered (req/s × the run's length).
    pub requests: f64,
}

impl Run {
    /// The handler's CPU per request, µs.
    pub fn handler_us(&self) -> f64 {
        self.handler_cpu.as_secs_f64() * 1e6 / self.requests.max(1.0)
    }

    /// The bench process's CPU per request, µs.
    pub fn bench_us(&self) -> f64 {
        self.bench_cpu.as_secs_f64() * 1e6 / self.requests.max(1.0)
    }
}

/// Health's `telemetry` object: the span queue's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    /// Spans waiting in the queue at the time.
    pub queued: u64,
    /// The queue's bound (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: u64,
    /// Spans the collector took, since start.
    pub exported: u64,
    /// Spans in export requests that failed, since start.
    pub failed: u64,
    /// Spans dropped on a full queue, since start.
    pub dropped: u64,
}

impl SpanCounts {
    /// The counters of a Health answer; `None` when export is off (`null`).
    pub fn of(health: &Value) -> Option<SpanCounts> {
        let t = health.get("telemetry").filter(|t| !t.is_null())?;
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        Some(SpanCounts {
            queued: n("queued"),
            max_queue: n("max_queue"),
            exported: n("exported"),
            failed: n("failed"),
            dropped: n("dropped"),
        })
    }

    /// What happened between `before` and these: the three totals as
    /// differences, the queue as it is now.
    pub fn since(&self, before: &SpanCounts) -> SpanCounts {
        SpanCounts {
            exported: self.exported.saturating_sub(before.exported),
            failed: self.failed.saturating_sub(before.failed),
            dropped: self.dropped.saturating_sub(before.dropped),
            ..*self
        }
    }
}

/// The paced run and what arrived of it.
#[derive(Debug, Clone, Default)]
pub struct Paced {
    /// What the generator did.
    pub run: PacedRun,
    /// Distinct invocation ids among the server spans received.
    pub spans: u64,
    /// From the last answer until every span was there (or the wait ended).
    pub waited: Duration,
    /// The exporting handler's counters over the run, read after the wait.
    pub counts: SpanCounts,
}

/// What the scenario measured, and what it ran.
#[derive(Debug, Clone, Default)]
pub struct TelemetryResults {
    /// The plan it ran.
    pub plan: Option<TelemetryPlan>,
    /// Full-speed runs with export off, one per round.
    pub off: Vec<Run>,
    /// Full-speed runs with export on, one per round.
    pub on: Vec<Run>,
    /// The exporting handler's counters over its measured runs.
    pub full_speed: SpanCounts,
    /// The paced run.
    pub paced: Paced,
    /// The commit measured.
    pub commit: String,
    /// `(name, value)` lines about the machine and tools.
    pub machine: Vec<(&'static str, String)>,
    /// The command that produced these numbers.
    pub command: String,
}

/// The receiver and the runtime it (and the paced load) runs on, owned by
/// the scenario so that the receiver's work is on threads of its own.
struct Collector {
    receiver: Receiver,
    /// Last, so it outlives the receiver's tasks.
    rt: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> anyhow::Result<Collector> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(crate::machine::cores() as usize)
            .enable_all()
            .build()?;
        let receiver = rt.block_on(Receiver::start(Behaviour::Accept))?;
        Ok(Collector { receiver, rt })
    }

    /// The rig's settings plus the receiver as the OTLP endpoint.
    fn settings(&self, rig: &Rig) -> Vec<(String, String)> {
        let mut env = rig.app_settings(&rig.identity, 300);
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), self.receiver.endpoint()));
        env
    }
}

/// Runs the full-speed rounds, then the paced run.
pub fn run(rig: &Rig, lua: &Path, handler: &Program, plan: &TelemetryPlan) -> anyhow::Result<TelemetryResults> {
    let mut out = TelemetryResults {
        plan: Some(plan.clone()),
        ..TelemetryResults::default()
    };
    {
        let collector = Collector::start()?;
        let off = Server::start(handler, &rig.root, &rig.app_settings(&rig.identity, 300))?;
        let on = Server::start(handler, &rig.root, &collector.settings(rig))?;
        ensure!(counts(&off)?.is_none(), "the handler without OTEL_* variables exports");
        let before = counts(&on)?.context("the handler given OTEL_EXPORTER_OTLP_ENDPOINT does not export")?;
        if !plan.timing.warm.is_zero() {
            for server in [&off, &on] {
                load::wrk(lua, server.port, "GET", plan.conns, plan.timing.warm)?;
            }
        }
        let before = counts(&on)?.unwrap_or(before);
        for round in 0..plan.rounds {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for export in order {
                let server = if export { &on } else { &off };
                let r = measure(lua, server, plan.conns, plan.timing.measure)?;
                let what = if export { "export on" } else { "export off" };
                print_point(what, Op::Get, plan.conns, &r.load);
                if export { &mut out.on } else { &mut out.off }.push(r);
            }
        }
        out.full_speed = counts(&on)?.unwrap_or_default().since(&before);
        let f = out.full_speed;
        eprintln!(
            "bench: export on at full speed: {} spans exported, {} dropped, {} failed, {} queued",
            f.exported, f.dropped, f.failed, f.queued
        );
    }
    out.paced = paced_run(rig, handler, plan)?;
    Ok(out)
}

/// One `wrk` run, with the handler's and the bench's CPU time around it.
fn measure(lua: &Path, server: &Server, conns: u32, length: Duration) -> anyhow::Result<Run> {
    let (pid, me) = (server.pid(), std::process::id());
    let (h0, b0) = (process_cpu(pid)?, process_cpu(me)?);
    let load = load::wrk(lua, server.port, "GET", conns, length)?;
    let (h1, b1) = (process_cpu(pid)?, process_cpu(me)?);
    Ok(Run {
        load,
        handler_cpu: h1.saturating_sub(h0),
        bench_cpu: b1.saturating_sub(b0),
        requests: load.rps * length.as_secs_f64(),
    })
}

/// A fresh exporting handler and receiver, invocations at the plan's rate,
/// then the wait for their server spans.
fn paced_run(rig: &Rig, handler: &Program, plan: &TelemetryPlan) -> anyhow::Result<Paced> {
    let collector = Collector::start()?;
    let server = Server::start(handler, &rig.root, &collector.settings(rig))?;
    let before = counts(&server)?.context("the paced run's handler does not export")?;
    eprintln!(
        "bench: export on, paced: {} invocations a second for {:?}",
        plan.rate, plan.paced
    );
    let rt = &collector.rt;
    let run = rt.block_on(paced::run(server.port, plan.rate, plan.paced, PACED_CONNS, PACED_ID))?;
    let answered_at = Instant::now();
    let spans = rt.block_on(server_spans(&collector.receiver, run.sent, plan.span_wait));
    let waited = answered_at.elapsed();
    let counts = counts(&server)?.unwrap_or_default().since(&before);
    eprintln!(
        "bench: paced: {} sent ({:.0}/s, latest {:.1} ms after its instant), {} answered, {} failed; \
         {} server spans received after {:.1} s, {} dropped",
        run.sent,
        run.achieved_rate(),
        run.max_late.as_secs_f64() * 1e3,
        run.answered,
        run.failed,
        spans,
        waited.as_secs_f64(),
        counts.dropped
    );
    Ok(Paced {
        run,
        spans,
        waited,
        counts,
    })
}

/// Distinct invocation ids of the paced run among the server spans the
/// receiver got, waiting on each arrival until there are `want` or `wait`
/// has passed.
async fn server_spans(receiver: &Receiver, want: u64, wait: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + wait;
    let (mut seen, mut ids) = (0, HashSet::new());
    while (ids.len() as u64) < want {
        let Ok(spans) = tokio::time::timeout_at(deadline, receiver.next_spans(&mut seen)).await else {
            break;
        };
        let paced = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Server)
            .filter_map(|s| s.attr_str("faas.invocation_id"))
            .filter(|id| id.starts_with(PACED_ID));
        ids.extend(paced.map(str::to_owned));
    }
    ids.len() as u64
}

/// Health's span counters (`None`: export off).
fn counts(server: &Server) -> anyhow::Result<Option<SpanCounts>> {
    Ok(SpanCounts::of(&health(server.port)?))
}

impl TelemetryResults {
    /// What must hold: every request answered; with export on, spans went
    /// out; in the paced run every request sent and answered, and (when
    /// the plan asks) a server span received for each.
    pub fn check(&self) -> anyhow::Result<()> {
        for (what, runs) in [("off", &self.off), ("on", &self.on)] {
            for r in runs {
                ensure!(
                    r.load.errors == 0 && r.load.rps > 0.0,
                    "telemetry, export {what}: {} errors, {:.0} req/s",
                    r.load.errors,
                    r.load.rps
                );
            }
        }
        ensure!(
            self.on.is_empty() || self.full_speed.exported > 0,
            "telemetry: no span exported at full speed ({:?})",
            self.full_speed
        );
        let p = &self.paced;
        ensure!(
            p.run.sent == p.run.planned && p.run.answered == p.run.sent && p.run.failed == 0,
            "telemetry, paced: {} planned, {} sent, {} answered 200, {} failed",
            p.run.planned,
            p.run.sent,
            p.run.answered,
            p.run.failed
        );
        let every = self.plan.as_ref().is_some_and(|plan| plan.every_span);
        ensure!(
            p.spans > 0 && (!every || p.spans == p.run.sent),
            "telemetry, paced: {} invocations sent, {} server spans received within {:.1} s ({} dropped, {} failed \
             to export)",
            p.run.sent,
            p.spans,
            p.waited.as_secs_f64(),
            p.counts.dropped,
            p.counts.failed
        );
        Ok(())
    }
}
