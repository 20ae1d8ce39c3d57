//! The telemetry export scenario (`-- --telemetry`): what exporting spans
//! over OTLP/HTTP costs the handler, and whether one is lost at a steady
//! rate.
//!
//! Three handlers side by side on the rig take turns under GET at full
//! speed (`wrk`), each run timed with the handler's CPU: one with export
//! off (no `OTEL_*` variable), one exporting to a receiver that checks and
//! counts every span without building anything of it (the handler's own
//! cost, which the target is read against), and one exporting the same way
//! to `devhost`'s OTLP receiver, which decodes and keeps every span on the
//! same cores (what a working collector beside the handler adds). Health's `telemetry` counters say how many spans went
//! out and how many the bounded queue dropped. Then a fresh exporting
//! handler, against a fresh receiver so that the count starts from
//! nothing, gets invocations at a fixed rate, each with its own invocation
//! id, and the bench waits for the receiver to hold the server span of
//! every one.
//!
//! # Layout
//!
//! - `collector`: the two receivers, and the runtime they run on.
//! - `full_speed`: the three handlers in turns under `wrk`, with their CPU.
//! - `delivery`: the paced run and the count of the spans that arrived;
//!   `paced` the open-loop generator it uses.
//! - `report`: the "Telemetry export" section.

mod collector;
mod delivery;
mod full_speed;
mod paced;
mod report;

pub use delivery::Paced;
pub use full_speed::{measure, Run};

use crate::rig::{Program, Rig, Server};
use crate::scenarios::{health, Timing};
use anyhow::ensure;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

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

/// Where a handler's spans go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// Nowhere: no `OTEL_*` variable.
    Off,
    /// A receiver that checks and counts every span.
    Counter,
    /// `devhost`'s receiver, which decodes and keeps every span.
    Receiver,
}

impl Export {
    /// Its name in tables and on stderr.
    pub fn label(self) -> &'static str {
        match self {
            Export::Off => "off",
            Export::Counter => "on, to a counting receiver",
            Export::Receiver => "on, to devhost's receiver",
        }
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

/// What the scenario measured, and what it ran.
#[derive(Debug, Clone, Default)]
pub struct TelemetryResults {
    /// The plan it ran.
    pub plan: Option<TelemetryPlan>,
    /// Full-speed runs with export off, one per round.
    pub off: Vec<Run>,
    /// Full-speed runs exporting to the counting receiver, one per round.
    pub counter: Vec<Run>,
    /// Full-speed runs exporting to devhost's receiver, one per round.
    pub receiver: Vec<Run>,
    /// Health's counters of the handler exporting to the counting receiver,
    /// from before its first full-speed run to after its last.
    pub counter_full_speed: SpanCounts,
    /// The same for the handler exporting to devhost's receiver.
    pub receiver_full_speed: SpanCounts,
    /// Spans the counting receiver counted, over all its runs (warm-up
    /// included) and the time it took to empty the queue after them.
    pub counted: u64,
    /// Export requests the counting receiver refused as malformed.
    pub refused: u64,
    /// Health's `exported` of the handler exporting to the counting
    /// receiver at the time [`Self::counted`] was read.
    pub counter_exported: u64,
    /// The paced run.
    pub paced: Paced,
    /// The commit measured.
    pub commit: String,
    /// `(name, value)` lines about the machine and tools.
    pub machine: Vec<(&'static str, String)>,
    /// The command that produced these numbers.
    pub command: String,
}

/// The rig's settings, and the OTLP endpoint when there is one.
fn settings(rig: &Rig, endpoint: Option<&str>) -> Vec<(String, String)> {
    let mut env = rig.app_settings(&rig.identity, 300);
    if let Some(endpoint) = endpoint {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.to_owned()));
    }
    env
}

/// Runs the full-speed rounds, then the paced run.
pub fn run(rig: &Rig, lua: &Path, handler: &Program, plan: &TelemetryPlan) -> anyhow::Result<TelemetryResults> {
    let mut out = TelemetryResults {
        plan: Some(plan.clone()),
        ..TelemetryResults::default()
    };
    full_speed::run(rig, lua, handler, plan, &mut out)?;
    out.paced = delivery::run(rig, handler, plan)?;
    Ok(out)
}

/// Health's span counters (`None`: export off).
fn counts(server: &Server) -> anyhow::Result<Option<SpanCounts>> {
    Ok(SpanCounts::of(&health(server.port)?))
}

impl TelemetryResults {
    /// The full-speed runs of one handler.
    pub fn runs(&self, export: Export) -> &[Run] {
        match export {
            Export::Off => &self.off,
            Export::Counter => &self.counter,
            Export::Receiver => &self.receiver,
        }
    }

    /// What must hold: every request answered; with export on, spans went
    /// out; in the paced run every request sent and answered, and (when
    /// the plan asks) a server span received for each.
    pub fn check(&self) -> anyhow::Result<()> {
        for export in [Export::Off, Export::Counter, Export::Receiver] {
            for r in self.runs(export) {
                ensure!(
                    r.load.errors == 0 && r.load.rps > 0.0,
                    "telemetry, export {}: {} errors, {:.0} req/s",
                    export.label(),
                    r.load.errors,
                    r.load.rps
                );
            }
        }
        ensure!(
            self.counter.is_empty() || (self.refused == 0 && self.counted == self.counter_exported),
            "telemetry: the counting receiver counted {} spans and refused {} exports; the handler says {} were \
             exported",
            self.counted,
            self.refused,
            self.counter_exported
        );
        for (export, f) in [
            (Export::Counter, self.counter_full_speed),
            (Export::Receiver, self.receiver_full_speed),
        ] {
            ensure!(
                self.runs(export).is_empty() || (f.exported > 0 && f.failed == 0),
                "telemetry: export {} at full speed: {f:?}",
                export.label()
            );
        }
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
