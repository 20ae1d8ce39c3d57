//! The full-speed part: the three handlers (export off, to the counting
//! receiver, to devhost's receiver) in turns under GET with `wrk`, each run with the handler's
//! CPU time and the bench's, and Health's span counters around them all.

use super::collector::Collectors;
use super::{counts, settings, Export, SpanCounts, TelemetryPlan, TelemetryResults};
use crate::load::{self, LoadResult};
use crate::quota::process_cpu;
use crate::rig::{Program, Rig, Server};
use crate::scenarios::{print_point, Op};
use anyhow::ensure;
use std::path::Path;
use std::time::Duration;

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

/// The three handlers in turns at full speed, into `out`.
pub(super) fn run(
    rig: &Rig,
    lua: &Path,
    handler: &Program,
    plan: &TelemetryPlan,
    out: &mut TelemetryResults,
) -> anyhow::Result<()> {
    let collectors = Collectors::start()?;
    let receiver = collectors.receiver.endpoint();
    let mut servers = Vec::new();
    for (export, endpoint) in [
        (Export::Off, None),
        (Export::Counter, Some(collectors.counter.endpoint())),
        (Export::Receiver, Some(receiver.as_str())),
    ] {
        let server = Server::start(handler, &rig.root, &settings(rig, endpoint))?;
        ensure!(
            counts(&server)?.is_some() == endpoint.is_some(),
            "the handler with export {} says otherwise on Health",
            export.label()
        );
        if !plan.timing.warm.is_zero() {
            load::wrk(lua, server.port, "GET", plan.conns, plan.timing.warm)?;
        }
        servers.push((export, server));
    }
    let before: Vec<SpanCounts> = servers
        .iter()
        .map(|(_, s)| Ok(counts(s)?.unwrap_or_default()))
        .collect::<anyhow::Result<_>>()?;
    for round in 0..plan.rounds {
        // Each handler goes first, second and third in turn.
        for k in 0..servers.len() {
            let (export, server) = &servers[(round + k) % servers.len()];
            let r = measure(lua, server, plan.conns, plan.timing.measure)?;
            print_point(&format!("export {}", export.label()), Op::Get, plan.conns, &r.load);
            match export {
                Export::Off => &mut out.off,
                Export::Counter => &mut out.counter,
                Export::Receiver => &mut out.receiver,
            }
            .push(r);
        }
    }
    for ((export, server), before) in servers.iter().zip(&before) {
        let f = counts(server)?.unwrap_or_default().since(before);
        match export {
            Export::Off => continue,
            Export::Counter => out.counter_full_speed = f,
            Export::Receiver => out.receiver_full_speed = f,
        }
        eprintln!(
            "bench: export {} at full speed: {} spans exported, {} dropped, {} failed, {} queued",
            export.label(),
            f.exported,
            f.dropped,
            f.failed,
            f.queued
        );
    }
    if let Some((_, server)) = servers.iter().find(|(e, _)| *e == Export::Counter) {
        (out.counted, out.counter_exported) = settle(server, &collectors.counter)?;
        out.refused = collectors.counter.refused();
        eprintln!(
            "bench: the counting receiver counted {} spans in {} exports ({} refused); the handler says {} exported",
            out.counted,
            collectors.counter.requests(),
            out.refused,
            out.counter_exported
        );
    }
    Ok(())
}

/// The spans the counting receiver counted and the handler's own count of
/// spans exported, once the two agree (an export in flight is counted by
/// the receiver before the handler has its answer) or 10 s have passed.
fn settle(server: &Server, counter: &super::collector::Counter) -> anyhow::Result<(u64, u64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exported = counts(server)?.unwrap_or_default().exported;
        let counted = counter.spans();
        if counted == exported || std::time::Instant::now() >= deadline {
            return Ok((counted, exported));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `wrk` run of GET, with the handler's and the bench's CPU time
/// around it.
pub fn measure(lua: &Path, server: &Server, conns: u32, length: Duration) -> anyhow::Result<Run> {
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
