//! The "Where the time goes" scenario (`-- --profile`): what one request
//! costs the handler and the floor at 64 connections, and where it goes.
//!
//! - CPU per request: the throughput scenario at 64 connections only (GET
//!   and PUT, the handler and the floor taking turns, each run timed with
//!   the server's CPU).
//! - Heap allocations per request: the handler and the floor built with
//!   their `count-allocs` feature (a counting global allocator, its counts
//!   at `GET /api/__allocs`), read before and after a `wrk` run.
//! - System calls per request: `perf stat -e raw_syscalls:sys_enter` over a
//!   `wrk` run (a tracepoint: the server runs at full speed), and `strace
//!   -c -f` over another, for which calls they are (under ptrace the server
//!   runs many times slower, so it batches differently: its total is not
//!   the full-speed one). Each is skipped, and the section says so, when
//!   its tool is missing.
//! - What seven parts of the handler's GET path cost: one build per part
//!   with it turned off (the handler's `experiment-*` features), each
//!   taking turns with the normal build over several rounds, medians.
//! - Flame graphs: `perf record -g` of the handler and of the floor under
//!   GET, built with line tables and frame pointers, folded and drawn with
//!   `inferno` into `bench/results/`, with their top frames by self time.
//!
//! # Layout
//!
//! - `builds`: the variant builds, outside `target/release`.
//! - `counts`: allocations and system calls over a run, and the tools run
//!   around one.
//! - `experiments`: the experiment builds against the normal one.
//! - `flame`: perf samples to folded stacks, their top frames, the SVG.
//! - `report`: the section.

mod builds;
mod counts;
mod experiments;
mod flame;
mod report;

pub use counts::{Allocs, Strace};
pub use experiments::Experiment;
pub use flame::Flame;

use crate::rig::{Program, Rig, Server};
use crate::scenarios::{self, Op, Point, Servers, Side, Timing};
use std::path::Path;

/// How the scenario runs.
#[derive(Debug, Clone)]
pub struct ProfilePlan {
    /// Connections of every run.
    pub conns: u32,
    /// Warm-up and length of the CPU, allocation, system call and flame
    /// graph runs.
    pub timing: Timing,
    /// Rounds of each experiment: one run of the normal build and one of
    /// the experiment's, the order alternating.
    pub rounds: usize,
    /// Warm-up of each build, then each experiment run's length.
    pub experiment_timing: Timing,
}

/// What the scenario measured, and what it ran.
#[derive(Debug, Clone, Default)]
pub struct ProfileResults {
    /// The plan it ran.
    pub plan: Option<ProfilePlan>,
    /// The throughput runs at the plan's connections: req/s and CPU per
    /// request of the handler and the floor, GET and PUT.
    pub cpu: Vec<Point>,
    /// Heap allocations per request.
    pub allocs: Vec<(Side, Op, Allocs)>,
    /// System calls per request at full speed (`perf stat`).
    pub syscalls: Vec<(Side, Op, f64)>,
    /// System calls per request under `strace -c -f`, by call.
    pub strace: Vec<(Side, Op, Strace)>,
    /// The experiments, in the order of [`experiments::EXPERIMENTS`].
    pub experiments: Vec<Experiment>,
    /// The flame graphs of the handler and the floor.
    pub flames: Vec<Flame>,
    /// What was skipped and why (a tool that is not installed).
    pub skipped: Vec<String>,
    /// The commit measured.
    pub commit: String,
    /// `(name, value)` lines about the machine and tools.
    pub machine: Vec<(&'static str, String)>,
    /// The command that produced these numbers.
    pub command: String,
}

/// Builds the variants, then measures: CPU, allocations, system calls, the
/// experiments, the flame graphs.
pub fn run(
    root: &Path,
    lua: &Path,
    handler: &Program,
    floor: &Program,
    plan: &ProfilePlan,
) -> anyhow::Result<ProfileResults> {
    let (perf, strace) = (crate::tools::present("perf"), crate::tools::present("strace"));
    let variants = builds::variants(root, perf)?;
    let mut out = ProfileResults {
        plan: Some(plan.clone()),
        ..ProfileResults::default()
    };
    let rig = Rig::start(root)?;
    let settings = rig.app_settings(&rig.identity, 300);
    {
        eprintln!(
            "bench: CPU per request (the throughput runs at {} connections)",
            plan.conns
        );
        let h = Server::start(handler, root, &settings)?;
        let f = Server::start(floor, root, &rig.floor_settings())?;
        let servers = Servers {
            handler: &h,
            floor: &f,
            python: None,
        };
        // One run each: the experiments below take turns over rounds.
        let one = scenarios::Pairing {
            rounds: 1,
            measure: plan.timing.measure,
        };
        let points = scenarios::throughput(&rig, lua, &servers, &[plan.conns], plan.timing, one)?;
        out.cpu = points.into_iter().filter(|p| p.side != Side::Redis).collect();
        if perf {
            eprintln!("bench: system calls per request (perf stat)");
            for (side, server) in [(Side::Handler, &h), (Side::Floor, &f)] {
                for op in [Op::Get, Op::Put] {
                    let n = counts::syscalls(&rig.root, lua, server, op, plan)?;
                    out.syscalls.push((side, op, n));
                }
            }
        }
        if strace {
            eprintln!("bench: system calls per request by call (strace -c -f)");
            for (side, server) in [(Side::Handler, &h), (Side::Floor, &f)] {
                for op in [Op::Get, Op::Put] {
                    out.strace
                        .push((side, op, counts::strace(&rig.root, lua, server, op, plan)?));
                }
            }
        }
    }
    eprintln!("bench: heap allocations per request (count-allocs builds)");
    for (side, program) in [
        (Side::Handler, &variants.count_handler),
        (Side::Floor, &variants.count_floor),
    ] {
        let server = match side {
            Side::Floor => Server::start(program, root, &rig.floor_settings())?,
            _ => Server::start(program, root, &settings)?,
        };
        for op in [Op::Get, Op::Put] {
            out.allocs.push((side, op, counts::allocs(lua, &server, op, plan)?));
        }
    }
    eprintln!("bench: the experiments (each build against the normal one, GET)");
    out.experiments = experiments::run(&rig, lua, handler, &variants.experiments, plan)?;
    match &variants.flame {
        Some((h, f)) => {
            for (side, program) in [(Side::Handler, h), (Side::Floor, f)] {
                eprintln!("bench: flame graph of the {} (perf record -g)", side.label());
                out.flames.push(flame::record(&rig, lua, side, program, plan)?);
            }
        }
        None => out
            .skipped
            .push("the flame graphs and the system calls at full speed: `perf` is not installed (linux-perf)".into()),
    }
    if !strace {
        out.skipped
            .push("system calls by call: `strace` is not installed (strace)".into());
    }
    Ok(out)
}

impl ProfileResults {
    /// What must hold: every request of every run answered.
    pub fn check(&self) -> anyhow::Result<()> {
        for p in &self.cpu {
            anyhow::ensure!(
                p.result.errors == 0 && p.result.rps > 0.0,
                "profile, {} {}: {} errors, {:.0} req/s",
                p.side.label(),
                p.op.label(),
                p.result.errors,
                p.result.rps
            );
        }
        for e in &self.experiments {
            for r in e.normal.iter().chain(&e.off) {
                anyhow::ensure!(
                    r.load.errors == 0 && r.load.rps > 0.0,
                    "profile, experiment {}: {} errors, {:.0} req/s",
                    e.turned.feature,
                    r.load.errors,
                    r.load.rps
                );
            }
        }
        Ok(())
    }
}
