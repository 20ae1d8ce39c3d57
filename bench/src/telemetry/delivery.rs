//! The paced part: a fresh handler exporting to a fresh receiver gets
//! invocations at the plan's rate, each with its own invocation id, and
//! the bench waits for the server span of every one.

use super::collector::Collectors;
use super::paced::{self, PacedRun};
use super::{counts, settings, SpanCounts, TelemetryPlan};
use crate::rig::{Program, Rig, Server};
use anyhow::Context;
use devhost::otlp::{Receiver, SpanKind};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Keep-alive connections of the paced run: at 1,000/s each has 16 ms to
/// be answered before its next instant, against well under 1 ms needed.
pub(super) const PACED_CONNS: u32 = 16;
/// The invocation ids of the paced run are this and the request's number.
const PACED_ID: &str = "rate-";

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

/// A fresh exporting handler and receiver, invocations at the plan's rate,
/// then the wait for their server spans.
pub(super) fn run(rig: &Rig, handler: &Program, plan: &TelemetryPlan) -> anyhow::Result<Paced> {
    let collectors = Collectors::start()?;
    let endpoint = collectors.receiver.endpoint();
    let server = Server::start(handler, &rig.root, &settings(rig, Some(&endpoint)))?;
    let before = counts(&server)?.context("the paced run's handler does not export")?;
    eprintln!(
        "bench: export on, paced: {} invocations a second for {:?}",
        plan.rate, plan.paced
    );
    let rt = &collectors.rt;
    let run = rt.block_on(paced::run(server.port, plan.rate, plan.paced, PACED_CONNS, PACED_ID))?;
    let answered_at = Instant::now();
    let spans = rt.block_on(server_spans(&collectors.receiver, run.sent, plan.span_wait));
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
