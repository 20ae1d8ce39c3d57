//! The maintenance scenario (`-- --maintenance [--before <handler>]`): the
//! handler under load at 64 connections through Azure's routine
//! maintenance, played by real parts: a 2 s restart of the cache, and on a
//! local 3-master TLS Redis Cluster a planned failover (`CLUSTER
//! FAILOVER`) and a killed master (its replica elected after the 2 s node
//! timeout). For the requests in flight during each event it reports how
//! many failed, p99 and the slowest; with `--before <handler binary>`, the
//! same for that build in the same run, beside (the handler before the
//! ride-through work, built from its commit).
//!
//! The load is the bench's timed generator (`timed.rs`: `wrk`'s closed
//! loop, keeping every request's send time, so requests can be split by
//! when they were in flight), sending `PUT /api/cache/{key}` with 100-byte
//! values: the stand-in keeps nothing across a restart, so reads would
//! turn into 404s there, while writes show only what the handler does.

use crate::cluster::ClusterRig;
use crate::rig::{Program, Rig, Server};
use crate::stats::group;
use crate::template::{fill, text};
use crate::timed::{self, Latency, Request, Sample, TimedRun};
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the scenario runs.
#[derive(Debug, Clone)]
pub struct MaintenancePlan {
    /// Connections of the load.
    pub conns: u32,
    /// Load before the fault.
    pub before_fault: Duration,
    /// The whole load run (long enough for the slowest event and a settle).
    pub run: Duration,
    /// How long the cache is down in a restart.
    pub down_for: Duration,
    /// After the cache is back, requests sent this long still count as
    /// during the event.
    pub settle: Duration,
    /// Also the cluster events.
    pub cluster: bool,
}

/// One event as one build rode it.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub what: &'static str,
    /// Which handler build.
    pub build: String,
    /// When the fault started and when the cache (or the cluster's new
    /// master) was back, seconds into the run.
    pub fault_s: f64,
    pub back_s: f64,
    /// Requests in flight from the fault until `settle` after it was back.
    pub during: Latency,
    /// How many of those failed.
    pub failed: usize,
}

impl Event {
    fn of(what: &'static str, build: &str, run: &TimedRun, fault: Duration, back: Duration, settle: Duration) -> Event {
        let (from, to) = (fault.as_nanos() as u64, (back + settle).as_nanos() as u64);
        let overlaps = |s: &&Sample| s.done_ns() >= from && s.sent_ns <= to;
        let ok: Vec<&Sample> = run.samples.iter().filter(overlaps).collect();
        let failed: Vec<&Sample> = run.failed.iter().filter(overlaps).collect();
        Event {
            what,
            build: build.to_owned(),
            fault_s: fault.as_secs_f64(),
            back_s: back.as_secs_f64(),
            during: Latency::of(ok.iter().copied().chain(failed.iter().copied())),
            failed: failed.len(),
        }
    }
}

/// Plays each event under load for each build (`(label, program)`).
pub fn run(root: &Path, builds: &[(String, Program)], plan: &MaintenancePlan) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    let rig = Rig::start(root)?;
    for (label, program) in builds {
        let server = Server::start(program, root, &rig.app_settings(&rig.identity, 300))?;
        let (run, fault, back) = under_load(server.port, plan, || {
            rig.redis.stop();
            std::thread::sleep(plan.down_for);
            rig.rt.block_on(rig.redis.start_again())
        })?;
        events.push(Event::of("2 s restart", label, &run, fault, back, plan.settle));
        report(events.last());
        drop(server);
    }
    drop(rig);
    if !plan.cluster {
        return Ok(events);
    }
    for (label, program) in builds {
        let rig = ClusterRig::start()?;
        let server = Server::start(program, root, &rig.app_settings())?;
        let masters = rig.rt.block_on(rig.cluster.masters())?;
        let (planned, killed) = (masters[0].index, masters[1].index);
        let failover = || rig.rt.block_on(rig.cluster.failover(planned)).map(drop);
        let kill = || rig.rt.block_on(rig.cluster.kill_master(killed)).map(drop);
        let faults: [(&'static str, &(dyn Fn() -> anyhow::Result<()> + Sync)); 2] = [
            ("planned failover (cluster)", &failover),
            ("killed master (cluster)", &kill),
        ];
        for (what, fault) in faults {
            let (run, began, back) = under_load(server.port, plan, fault)?;
            events.push(Event::of(what, label, &run, began, back, plan.settle));
            report(events.last());
        }
        drop(server);
    }
    Ok(events)
}

fn report(event: Option<&Event>) {
    if let Some(e) = event {
        eprintln!(
            "  {:<28} {:<26} {:>7} during, {:>6} failed, p99 {:>7.1} ms, slowest {:>7.1} ms (fault at {:.1} s, back at {:.1} s)",
            e.what, e.build, e.during.requests, e.failed, e.during.p99_ms, e.during.max_ms, e.fault_s, e.back_s
        );
    }
}

/// Runs the PUT load on `port` for the plan's run; `before_fault` into it,
/// runs `fault` (which returns once the cache is back). Gives the run and
/// the fault's start and end, relative to the run's start.
fn under_load(
    port: u16,
    plan: &MaintenancePlan,
    fault: impl FnOnce() -> anyhow::Result<()> + Send,
) -> anyhow::Result<(TimedRun, Duration, Duration)> {
    let origin = Instant::now();
    let (load, times) = std::thread::scope(|scope| {
        let load = scope.spawn(|| timed::run(port, plan.conns, plan.run, Request::Put));
        std::thread::sleep(plan.before_fault);
        let began = origin.elapsed();
        let outcome = fault();
        let back = origin.elapsed();
        (load.join(), outcome.map(|()| (began, back)))
    });
    let run = load.map_err(|_| anyhow::anyhow!("the load panicked"))??;
    let (began, back) = times?;
    // The run's clock starts once its connections are open.
    let offset = run.start.saturating_duration_since(origin);
    Ok((run, began.saturating_sub(offset), back.saturating_sub(offset)))
}

/// The "Maintenance" section of BENCHMARKS.md.
pub fn section(events: &[Event], plan: &MaintenancePlan, command: &str, commit: &str, before: Option<&str>) -> String {
    let before = before.map_or(String::new(), |commit| {
        let note = fill(text::MAINTENANCE_BEFORE, &[("commit", commit.to_owned())]);
        format!(" {}", note.trim_end())
    });
    let mut md = fill(
        text::MAINTENANCE,
        &[
            ("command", command.to_owned()),
            ("commit", commit.to_owned()),
            ("conns", plan.conns.to_string()),
            ("settle", format!("{:.0}", plan.settle.as_secs_f64())),
            ("before", before),
        ],
    );
    for e in events {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} → {:.1} |",
            e.what,
            e.build,
            group(e.during.requests as u64),
            group(e.failed as u64),
            e.during.p99_ms,
            e.during.max_ms,
            e.fault_s,
            e.back_s
        );
    }
    md.push('\n');
    md.push_str(text::MAINTENANCE_READING);
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timed::Latency;

    /// The section names the commits, the before build's note, and one row
    /// per event.
    #[test]
    fn section_renders() {
        let event = Event {
            what: "restart",
            build: "this handler".into(),
            during: Latency::default(),
            failed: 0,
            fault_s: 2.0,
            back_s: 4.0,
        };
        let plan = crate::plan::Plan::full().maintenance;
        let md = section(&[event], &plan, "cargo run", "abc1234", Some("344d56b"));
        assert!(md.starts_with("## Maintenance\n"));
        assert!(md.contains("at commit `abc1234`"));
        assert!(md.contains("window). `before` is the handler built at `344d56b`"));
        assert!(md.contains("| restart | this handler | 0 | 0 |"));
        assert!(!md.contains("{{"));
    }
}
