//! The experiments: what each part of the handler's GET path costs, from a
//! build with that part turned off (an `experiment-*` feature of the
//! handler) taking turns with the normal build, GET at full speed, as the
//! telemetry scenario's handlers take turns.

use super::ProfilePlan;
use crate::load;
use crate::rig::{Program, Rig, Server};
use crate::scenarios::{print_point, Op};
use crate::stats::median;
use crate::telemetry::{measure, Run};
use std::path::Path;

/// One experiment: a feature of the handler and what it turns off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Turned {
    /// The handler's feature.
    pub feature: &'static str,
    /// What the feature turns off, for the report.
    pub what: &'static str,
    /// Whether the build swaps a choice of the handler's for what it chose
    /// against (the router for the fast path, the C library's malloc for
    /// mimalloc), rather than leaving a part of GET out: what it "saves" is
    /// then what the choice saves, negative, and it is not one of the parts
    /// whose costs add up.
    pub swap: bool,
}

/// The experiments, one build each.
pub const EXPERIMENTS: &[Turned] = &[
    Turned {
        feature: "experiment-no-log",
        what: "the log line (and the invocation's log fields)",
        swap: false,
    },
    Turned {
        feature: "experiment-no-json",
        what: "the JSON answer (GET answers the value as it is)",
        swap: false,
    },
    Turned {
        feature: "experiment-no-fast-path",
        what: "the fast path (GET through axum's router, matched path and extractors instead)",
        swap: true,
    },
    Turned {
        feature: "experiment-no-token-check",
        what: "the token check before each command (fresh token, connection AUTHed with it)",
        swap: false,
    },
    Turned {
        feature: "experiment-no-command-timers",
        what: "the per-command timer (the deadline around each Redis command)",
        swap: false,
    },
    Turned {
        feature: "experiment-system-allocator",
        what: "mimalloc (the C library's malloc instead: musl's in the static build)",
        swap: true,
    },
    Turned {
        feature: "experiment-no-write-batching",
        what: "write batching (each Redis write as soon as the connection's task runs, as the floor's are)",
        swap: true,
    },
];

/// One experiment's runs.
#[derive(Debug, Clone, Default)]
pub struct Experiment {
    /// The handler's feature, what it turns off, and whether it swaps a
    /// choice.
    pub turned: Turned,
    /// The normal build's runs, one per round.
    pub normal: Vec<Run>,
    /// The experiment build's runs, one per round.
    pub off: Vec<Run>,
}

impl Experiment {
    /// Median req/s of the normal build and of the experiment's.
    pub fn rps(&self) -> (f64, f64) {
        let m = |runs: &[Run]| median(&runs.iter().map(|r| r.load.rps).collect::<Vec<_>>());
        (m(&self.normal), m(&self.off))
    }

    /// The median of each round's req/s off ÷ normal (the two ran back to
    /// back, so drift in the machine's speed cancels out).
    pub fn paired_ratio(&self) -> f64 {
        let ratios: Vec<f64> = self
            .off
            .iter()
            .zip(&self.normal)
            .map(|(off, normal)| off.load.rps / normal.load.rps)
            .collect();
        median(&ratios)
    }

    /// Median handler CPU µs per request of the normal build and of the
    /// experiment's.
    pub fn cpu_us(&self) -> (f64, f64) {
        let m = |runs: &[Run]| median(&runs.iter().map(Run::handler_us).collect::<Vec<_>>());
        (m(&self.normal), m(&self.off))
    }

    /// The median of each round's CPU µs per request, normal less off: what
    /// the part turned off costs a request.
    pub fn paired_cpu_saved(&self) -> f64 {
        median(&self.cpu_saved_by_round())
    }

    /// Each round's CPU µs per request, normal less off.
    pub fn cpu_saved_by_round(&self) -> Vec<f64> {
        self.off
            .iter()
            .zip(&self.normal)
            .map(|(off, normal)| normal.handler_us() - off.handler_us())
            .collect()
    }
}

/// Each experiment build against `normal` in turns: both warmed up, then
/// `rounds` rounds of one run each, the order alternating.
pub fn run(
    rig: &Rig,
    lua: &Path,
    normal: &Program,
    builds: &[(&'static str, Program)],
    plan: &ProfilePlan,
) -> anyhow::Result<Vec<Experiment>> {
    let settings = rig.app_settings(&rig.identity, 300);
    let timing = plan.experiment_timing;
    let base = Server::start(normal, &rig.root, &settings)?;
    let mut out = Vec::new();
    for (feature, program) in builds {
        let turned = EXPERIMENTS
            .iter()
            .find(|e| e.feature == *feature)
            .copied()
            .unwrap_or(Turned {
                feature,
                what: feature,
                swap: false,
            });
        let off = Server::start(program, &rig.root, &settings)?;
        for server in [&base, &off] {
            if !timing.warm.is_zero() {
                load::wrk(lua, server.port, "GET", plan.conns, timing.warm)?;
            }
        }
        let mut e = Experiment {
            turned,
            ..Experiment::default()
        };
        for round in 0..plan.rounds {
            let order = if round % 2 == 0 { [false, true] } else { [true, false] };
            for is_off in order {
                let server = if is_off { &off } else { &base };
                let r = measure(lua, server, plan.conns, timing.measure)?;
                let label = if is_off { *feature } else { "normal build" };
                print_point(label, Op::Get, plan.conns, &r.load);
                if is_off { &mut e.off } else { &mut e.normal }.push(r);
            }
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::load::LoadResult;
    use std::time::Duration;

    /// A run at `rps` in which the handler spent `cpu_ms` of CPU (also the
    /// report's tests').
    pub(in crate::profile) fn run(rps: f64, cpu_ms: u64) -> Run {
        Run {
            load: LoadResult {
                rps,
                p50_ms: 1.0,
                p99_ms: 4.0,
                errors: 0,
            },
            handler_cpu: Duration::from_millis(cpu_ms),
            bench_cpu: Duration::ZERO,
            requests: rps,
        }
    }

    /// Medians of each build, and the rounds' own ratios and savings.
    #[test]
    fn paired_figures() {
        let e = Experiment {
            turned: Turned {
                feature: "experiment-no-log",
                what: "the log line",
                swap: false,
            },
            normal: vec![run(1000.0, 30), run(800.0, 24), run(900.0, 27)],
            off: vec![run(1100.0, 22), run(840.0, 21), run(990.0, 18)],
        };
        assert_eq!(e.rps(), (900.0, 990.0));
        let r = e.paired_ratio();
        assert!((r - 1.1).abs() < 1e-9, "{r}");
        let (normal, off) = e.cpu_us();
        assert!(
            (normal - 30.0).abs() < 1e-9 && (off - 20.0).abs() < 1e-9,
            "{normal} {off}"
        );
        let saved = e.paired_cpu_saved();
        assert!((saved - 10.0).abs() < 1e-9, "{saved}");
    }
}
