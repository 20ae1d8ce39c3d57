//! What a run measures and for how long: the mode its flag picks, and the
//! plan of each mode.

use crate::cluster::ClusterPlan;
use crate::flex::{Case, FlexPlan, SIZES};
use crate::maintenance::MaintenancePlan;
use crate::profile::ProfilePlan;
use crate::scenarios::{Pairing, Timing};
use crate::slow_identity::SlowPlan;
use crate::start::StartPlan;
use crate::telemetry::TelemetryPlan;
use std::time::Duration;

/// Rounds of the refresh cost with `-- --refresh`.
pub const REFRESH_ONLY_ROUNDS: usize = 12;

/// What a run measures, chosen by its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything, at full length (no flag); writes `BENCHMARKS.md`.
    Full,
    /// Every part for a few seconds at one concurrency (`--smoke`): checks
    /// the pipeline, writes nothing.
    Smoke,
    /// Only the token refresh cost, with more rounds (`--refresh`).
    Refresh,
    /// Only the refresh against a slow identity endpoint (`--slow-identity`).
    SlowIdentity,
    /// Only where a request's time goes (`--profile`).
    Profile,
    /// Only the cluster scenario (`--cluster`).
    Cluster,
    /// Only the maintenance scenario (`--maintenance`).
    Maintenance,
    /// Only the handler under the Flex Consumption sizes' CPU quotas, and
    /// the floor under two of them (`--flex`).
    Flex,
    /// Only the cost of OTLP export and the paced run (`--telemetry`).
    Telemetry,
    /// Only cold starts, memory and the binary's size (`--start`).
    Start,
}

impl Mode {
    /// The command that runs this mode, for the report.
    pub fn command(self) -> &'static str {
        match self {
            Mode::Full => "cargo run --release -p bench",
            Mode::Smoke => "cargo run --release -p bench -- --smoke",
            Mode::Refresh => "cargo run --release -p bench -- --refresh",
            Mode::SlowIdentity => "cargo run --release -p bench -- --slow-identity",
            Mode::Profile => "cargo run --release -p bench -- --profile",
            Mode::Cluster => "cargo run --release -p bench -- --cluster",
            Mode::Maintenance => "cargo run --release -p bench -- --maintenance",
            Mode::Flex => "cargo run --release -p bench -- --flex",
            Mode::Telemetry => "cargo run --release -p bench -- --telemetry",
            Mode::Start => "cargo run --release -p bench -- --start",
        }
    }
}

/// How much of everything to run.
pub struct Plan {
    /// What the run measures.
    pub mode: Mode,
    /// Connections of each throughput point.
    pub concurrency: Vec<u32>,
    /// Warm-up and length of each throughput point (the Python peer's and
    /// `redis-benchmark`'s run; the warm-up of each server).
    pub timing: Timing,
    /// The handler's and the floor's runs at each throughput point.
    pub pairing: Pairing,
    /// Cold starts, memory and the binary's size.
    pub start: StartPlan,
    /// Rounds of the refresh cost.
    pub refresh_rounds: usize,
    /// Warm-up and length of each refresh-cost run.
    pub refresh_timing: Timing,
    /// (lifetime, offset) of the refreshing tokens, seconds.
    pub short_tokens: (u64, u64),
    /// Refresh against a slow identity endpoint.
    pub slow: SlowPlan,
    /// The handler against `redis-benchmark --cluster` on a local cluster.
    pub cluster: ClusterPlan,
    /// The handler under load through a restart and cluster failovers.
    pub maintenance: MaintenancePlan,
    /// The handler under the Flex Consumption sizes' CPU quotas, and the
    /// floor under some of them.
    pub flex: FlexPlan,
    /// The cost of OTLP export, and the paced run that must lose no span.
    pub telemetry: TelemetryPlan,
    /// Where a request's time goes (`--profile` only).
    pub profile: ProfilePlan,
}

impl Plan {
    /// The full run's plan.
    pub fn full() -> Plan {
        Plan {
            mode: Mode::Full,
            concurrency: vec![1, 16, 64, 256],
            timing: Timing {
                warm: Duration::from_secs(2),
                measure: Duration::from_secs(5),
            },
            // The ratio to the floor is what the targets are about: five
            // rounds of 3 s each, taking turns, rather than one run of 5 s
            // (single runs on this kind of machine spread over more than
            // the 5% a target allows). Three let a slow spell of the
            // machine's that took two rounds of a point decide its median
            // (PUT at 64 connections at c220bf1: 1.04, 1.03 and 1.20).
            pairing: Pairing {
                rounds: 5,
                measure: Duration::from_secs(3),
            },
            // 20 plain and 20 traced starts of the handler, 20 of the
            // Python peer; the wide memory runs 2 × 3 s per server.
            start: StartPlan {
                cold_starts: 20,
                traced_starts: 20,
                memory_requests: 100_000,
                wide_run: Duration::from_secs(3),
                bloat: true,
            },
            refresh_rounds: 6,
            refresh_timing: Timing {
                warm: Duration::from_secs(2),
                measure: Duration::from_secs(3),
            },
            short_tokens: (6, 3),
            // Offset 5 s: a fetch due at most 4 s before expiry (jitter 1 s)
            // and answered 2 s later leaves the token 2 s of life.
            slow: SlowPlan {
                delay: Duration::from_secs(2),
                lifetime_s: 8,
                offset_s: 5,
                conns: 64,
                warm: Duration::from_secs(2),
                steady: Duration::from_secs(16),
                refreshing: Duration::from_secs(30),
            },
            cluster: ClusterPlan {
                concurrency: vec![16, 64],
                rounds: 5,
                timing: Timing {
                    warm: Duration::from_secs(2),
                    measure: Duration::from_secs(5),
                },
            },
            maintenance: MaintenancePlan {
                conns: 64,
                before_fault: Duration::from_secs(2),
                run: Duration::from_secs(14),
                down_for: Duration::from_secs(2),
                settle: Duration::from_secs(1),
                cluster: true,
            },
            // 4 handlers and 2 floors × 5 concurrencies × (1 s + 3 × 3 s):
            // about 5 min.
            flex: FlexPlan {
                cases: SIZES
                    .iter()
                    .map(|&size| Case::handler(size))
                    .chain([
                        Case {
                            cache_delay: Some(Duration::from_millis(5)),
                            ..Case::handler(SIZES[0])
                        },
                        Case::floor(SIZES[0]),
                        Case::floor(SIZES[1]),
                    ])
                    .collect(),
                concurrency: vec![4, 16, 32, 64, 256],
                rounds: 3,
                timing: Timing {
                    warm: Duration::from_secs(1),
                    measure: Duration::from_secs(3),
                },
            },
            // 3 × 2 s warm-up, 9 rounds × 3 handlers × 5 s, 10 s paced and
            // up to 5 s for its last batch: under 3 min.
            telemetry: TelemetryPlan {
                conns: 64,
                // The rounds' own ratios spread by several percent on a
                // shared machine; nine rounds keep one slow round from
                // moving the median past a 5% target.
                rounds: 9,
                timing: Timing {
                    warm: Duration::from_secs(2),
                    measure: Duration::from_secs(5),
                },
                rate: 1000,
                paced: Duration::from_secs(10),
                span_wait: Duration::from_secs(10),
                every_span: true,
            },
            // 2 × (2 + 5 s) per side for CPU (and redis-benchmark's runs
            // beside), 4 runs each for allocations and the two system call
            // counts, 6 experiments × (2 × 2 s + 3 rounds × 2 × 3 s), 2
            // flame graphs: about 4 min, after the builds.
            profile: ProfilePlan {
                conns: 64,
                timing: Timing {
                    warm: Duration::from_secs(2),
                    measure: Duration::from_secs(5),
                },
                rounds: 3,
                experiment_timing: Timing {
                    warm: Duration::from_secs(2),
                    measure: Duration::from_secs(3),
                },
            },
        }
    }

    /// The smoke run's plan.
    pub fn smoke() -> Plan {
        Plan {
            mode: Mode::Smoke,
            concurrency: vec![16],
            timing: Timing {
                warm: Duration::from_secs(1),
                measure: Duration::from_secs(1),
            },
            pairing: Pairing {
                rounds: 2,
                measure: Duration::from_secs(1),
            },
            // No cargo bloat (a release build of its own, and a tool CI
            // does not have).
            start: StartPlan {
                cold_starts: 3,
                traced_starts: 2,
                memory_requests: 10_000,
                wide_run: Duration::from_secs(1),
                bloat: false,
            },
            refresh_rounds: 0,
            refresh_timing: Timing {
                warm: Duration::from_secs(1),
                measure: Duration::from_secs(1),
            },
            short_tokens: (4, 2),
            // A 1 s answer and offset 3 s: due at most 2.4 s before expiry,
            // answered 1.4 s before; the first fetch is due 1 to 2.6 s after
            // start-up, so inside the 4 s run.
            slow: SlowPlan {
                delay: Duration::from_secs(1),
                lifetime_s: 5,
                offset_s: 3,
                conns: 16,
                warm: Duration::from_millis(500),
                steady: Duration::from_secs(2),
                refreshing: Duration::from_secs(4),
            },
            cluster: ClusterPlan {
                concurrency: vec![16],
                rounds: 1,
                timing: Timing {
                    warm: Duration::from_secs(1),
                    measure: Duration::from_secs(1),
                },
            },
            maintenance: MaintenancePlan {
                conns: 16,
                before_fault: Duration::from_secs(1),
                run: Duration::from_secs(6),
                down_for: Duration::from_secs(1),
                settle: Duration::from_secs(1),
                cluster: false,
            },
            // One point: the smallest size at 16 connections, and the floor
            // under its quota, when this machine lets the bench make a cgroup.
            flex: FlexPlan {
                cases: vec![Case::handler(SIZES[0]), Case::floor(SIZES[0])],
                concurrency: vec![16],
                rounds: 1,
                timing: Timing {
                    warm: Duration::from_secs(1),
                    measure: Duration::from_secs(1),
                },
            },
            // No warm-up, one 1 s run per handler, 1 s paced and the wait for
            // its last batch (up to the 5 s schedule delay): about 10 s with
            // the start-ups. Only that spans arrive is checked.
            telemetry: TelemetryPlan {
                conns: 16,
                rounds: 1,
                timing: Timing {
                    warm: Duration::ZERO,
                    measure: Duration::from_secs(1),
                },
                rate: 1000,
                paced: Duration::from_secs(1),
                span_wait: Duration::from_secs(10),
                every_span: false,
            },
            // Not run by the smoke run: it makes eight release builds of
            // its own and needs perf and strace.
            profile: ProfilePlan {
                conns: 16,
                timing: Timing {
                    warm: Duration::ZERO,
                    measure: Duration::from_secs(1),
                },
                rounds: 1,
                experiment_timing: Timing {
                    warm: Duration::ZERO,
                    measure: Duration::from_secs(1),
                },
            },
        }
    }

    /// The plan for `mode`: the smoke plan for `Smoke`, the full one for
    /// the others (each runs its part at full length; `Refresh` with more
    /// rounds).
    pub fn for_mode(mode: Mode) -> Plan {
        match mode {
            Mode::Smoke => Plan::smoke(),
            Mode::Refresh => Plan {
                mode,
                refresh_rounds: REFRESH_ONLY_ROUNDS,
                ..Plan::full()
            },
            _ => Plan { mode, ..Plan::full() },
        }
    }
}
