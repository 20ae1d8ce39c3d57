//! `cargo run --release -p bench`: the handler against `redis-benchmark`
//! (the ceiling) and against a Python peer done the way Microsoft's Python
//! quickstart does it, all on loopback with a TLS `redis-server` with ACL
//! users and the local App Service identity endpoint.
//!
//! Writes `BENCHMARKS.md` at the repository root and `bench/results/plot.svg`.
//! `-- --smoke` runs a few seconds of each part at one concurrency, checks
//! that the pipeline works (no failed request, one token request per
//! refresh) and writes nothing; `-- --smoke --handler <path>` runs it
//! against that handler binary instead of building the release one (CI runs
//! it against the debug handler the tests built). `-- --refresh` measures only the cost of
//! token refresh, in 12 rounds; `-- --slow-identity` only the refresh against
//! an identity endpoint taking 2 s per answer; `-- --cluster` only the
//! handler in cluster mode against `redis-benchmark --cluster` on a local
//! 3-master TLS Redis Cluster, and writes just the "Cluster" section of
//! `BENCHMARKS.md`; `-- --rig` starts only Redis and the identity endpoint
//! and prints the settings, for profiling a handler by hand.
//!
//! # Layout
//!
//! - `tools`: the programs it needs (checked, never installed), the release
//!   handler build, the Python peer's virtualenv.
//! - `rig`: Redis and the identity endpoint (from `devhost`), and the servers
//!   under test started as the Functions host starts them.
//! - `load`: `wrk` and `redis-benchmark` runs.
//! - `client`: a tiny HTTP client for cold starts, the memory run and the burst.
//! - `timed`: a load generator that keeps every request's send time and latency.
//! - `scenarios`: throughput, cold start, memory, token refresh.
//! - `slow_identity`: token refresh against a slow identity endpoint, split
//!   into requests during a fetch and the rest, with its part of the report.
//! - `cluster`: the handler in cluster mode against `redis-benchmark
//!   --cluster` on a local TLS Redis Cluster, with its part of the report.
//! - `report`, `method`, `plot`, `machine`: the Markdown, its Method section
//!   (from the plans), the SVG, the machine's description.

mod client;
mod cluster;
mod load;
mod machine;
mod maintenance;
mod method;
mod plot;
mod report;
mod rig;
mod scenarios;
mod slow_identity;
mod stats;
mod timed;
mod tools;

use anyhow::{bail, ensure, Context};
use cluster::ClusterPlan;
use maintenance::MaintenancePlan;
use report::Results;
use rig::{Program, Rig, Server};
use scenarios::{Side, Timing};
use slow_identity::SlowPlan;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Rounds of the refresh cost with `-- --refresh`.
const REFRESH_ONLY_ROUNDS: usize = 12;

/// How much of everything to run.
struct Plan {
    smoke: bool,
    /// Only the token refresh cost (`-- --refresh`), with more rounds.
    refresh_only: bool,
    /// Only the refresh against a slow identity endpoint (`-- --slow-identity`).
    slow_only: bool,
    /// Only the cluster scenario (`-- --cluster`).
    cluster_only: bool,
    concurrency: Vec<u32>,
    timing: Timing,
    cold_starts: usize,
    memory_requests: u64,
    refresh_rounds: usize,
    /// Warm-up and length of each refresh-cost run.
    refresh_timing: Timing,
    /// (lifetime, offset) of the refreshing tokens, seconds.
    short_tokens: (u64, u64),
    /// Refresh against a slow identity endpoint.
    slow: SlowPlan,
    /// The handler against `redis-benchmark --cluster` on a local cluster.
    cluster: ClusterPlan,
    /// Only the maintenance scenario (`-- --maintenance`).
    maintenance_only: bool,
    /// The handler under load through a restart and cluster failovers.
    maintenance: MaintenancePlan,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            smoke: false,
            refresh_only: false,
            slow_only: false,
            cluster_only: false,
            concurrency: vec![1, 16, 64, 256],
            timing: Timing {
                warm: Duration::from_secs(2),
                measure: Duration::from_secs(5),
            },
            cold_starts: 20,
            memory_requests: 100_000,
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
            maintenance_only: false,
            maintenance: MaintenancePlan {
                conns: 64,
                before_fault: Duration::from_secs(2),
                run: Duration::from_secs(14),
                down_for: Duration::from_secs(2),
                settle: Duration::from_secs(1),
                cluster: true,
            },
        }
    }

    fn smoke() -> Plan {
        Plan {
            smoke: true,
            refresh_only: false,
            slow_only: false,
            cluster_only: false,
            concurrency: vec![16],
            timing: Timing {
                warm: Duration::from_secs(1),
                measure: Duration::from_secs(1),
            },
            cold_starts: 3,
            memory_requests: 10_000,
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
            maintenance_only: false,
            maintenance: MaintenancePlan {
                conns: 16,
                before_fault: Duration::from_secs(1),
                run: Duration::from_secs(6),
                down_for: Duration::from_secs(1),
                settle: Duration::from_secs(1),
                cluster: false,
            },
        }
    }

    fn command(&self) -> &'static str {
        if self.smoke {
            "cargo run --release -p bench -- --smoke"
        } else if self.refresh_only {
            "cargo run --release -p bench -- --refresh"
        } else if self.slow_only {
            "cargo run --release -p bench -- --slow-identity"
        } else if self.cluster_only {
            "cargo run --release -p bench -- --cluster"
        } else if self.maintenance_only {
            "cargo run --release -p bench -- --maintenance"
        } else {
            "cargo run --release -p bench"
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let handler_arg = take_path_arg(&mut args, "--handler")?;
    if handler_arg.is_some() && args != ["--smoke"] {
        bail!("--handler <path> goes with --smoke only (a measurement builds the release handler itself)");
    }
    let before_arg = take_path_arg(&mut args, "--before")?;
    if before_arg.is_some() && args != ["--maintenance"] {
        bail!("--before <handler> goes with --maintenance only");
    }
    let plan = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Plan::full(),
        ["--smoke"] => Plan::smoke(),
        ["--rig"] => return rig_only(),
        ["--refresh"] => Plan {
            refresh_only: true,
            refresh_rounds: REFRESH_ONLY_ROUNDS,
            ..Plan::full()
        },
        ["--slow-identity"] => Plan {
            slow_only: true,
            ..Plan::full()
        },
        ["--cluster"] => Plan {
            cluster_only: true,
            ..Plan::full()
        },
        ["--maintenance"] => Plan {
            maintenance_only: true,
            ..Plan::full()
        },
        _ => {
            bail!(
                "usage: cargo run --release -p bench [-- --smoke [--handler <path>] | --refresh | --slow-identity | --cluster | --maintenance [--before <handler>] | --rig]"
            )
        }
    };
    let root = repo_root()?;
    // Only the full run compares with the Python peer, so only it makes the venv.
    let full = !(plan.smoke || plan.refresh_only || plan.slow_only || plan.cluster_only || plan.maintenance_only);
    tools::check(full)?;
    let handler_bin = match handler_arg {
        Some(bin) => bin,
        None => tools::build_handler(root)?,
    };
    let python = tools::python_venv(root, full)?.map(|interpreter| Program::Python {
        interpreter,
        script: root.join("bench/python_peer/app.py"),
    });
    if plan.smoke && python.is_none() {
        eprintln!("bench: smoke run without the Python peer (its virtualenv is made by the full run)");
    }
    let handler = Program::Handler(handler_bin.clone());
    let lua = root.join("bench/lua/cache.lua");
    let mut results = Results {
        machine: machine::describe(),
        command: plan.command().to_owned(),
        concurrency: plan.concurrency.clone(),
        seconds_per_point: plan.timing.measure.as_secs(),
        binary_bytes: std::fs::metadata(&handler_bin)?.len(),
        method: method::markdown(&Plan::full(), &Plan::smoke(), REFRESH_ONLY_ROUNDS),
        notes: std::fs::read_to_string(root.join("bench/notes.md")).unwrap_or_default(),
        ..Results::default()
    };
    if plan.cluster_only {
        let c = run_cluster(root, &lua, &handler, &plan, &results)?;
        let section = c.section();
        println!("{section}");
        let path = root.join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, cluster::splice(&old, &section))?;
        eprintln!("bench: wrote the Cluster section of BENCHMARKS.md");
        return Ok(());
    }
    if plan.maintenance_only {
        eprintln!("bench: maintenance (the handler under load through a restart and cluster failovers)");
        let mut builds = vec![("this handler".to_owned(), handler.clone())];
        if let Some(before) = &before_arg {
            builds.push(("before".to_owned(), Program::Handler(before.clone())));
        }
        let events = maintenance::run(root, &builds, &plan.maintenance)?;
        let before_commit = before_arg.as_ref().map(|_| {
            std::env::var("BENCH_BEFORE_COMMIT").unwrap_or_else(|_| "the commit given in BENCH_BEFORE_COMMIT".into())
        });
        let section = maintenance::section(
            &events,
            &plan.maintenance,
            plan.command(),
            &machine::commit(root),
            before_commit.as_deref(),
        );
        println!("{section}");
        let path = root.join("BENCHMARKS.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, cluster::splice(&old, &section))?;
        eprintln!("bench: wrote the Maintenance section of BENCHMARKS.md");
        return Ok(());
    }
    let rig = Rig::start(root)?;
    let refresh = || {
        scenarios::refresh(
            &rig,
            &lua,
            &handler,
            plan.refresh_timing,
            plan.refresh_rounds,
            plan.short_tokens,
        )
    };

    if plan.refresh_only {
        results.refresh = refresh()?;
        check(&results)?;
        println!("{}", results.markdown(""));
        return Ok(());
    }
    if plan.slow_only {
        results.slow = slow_identity::run(&rig, &handler, plan.slow)?;
        check(&results)?;
        println!("{}", results.markdown(""));
        return Ok(());
    }
    eprintln!("bench: throughput and latency");
    let settings = rig.app_settings(&rig.identity, 300);
    let rust = Server::start(&handler, root, &settings)?;
    let rust_conns = rig.identity_connections()?;
    let py = python.as_ref().map(|p| Server::start(p, root, &settings)).transpose()?;
    results.points = scenarios::throughput(&rig, &lua, &rust, py.as_ref(), &plan.concurrency, plan.timing)?;
    results.redis_connections.push((Side::Handler, rust_conns));
    if py.is_some() {
        results
            .redis_connections
            .push((Side::Python, rig.identity_connections()?.saturating_sub(rust_conns)));
    }
    results.handler_peak_after_all_kib = rust.rss_kib()?.1;
    drop((rust, py));

    eprintln!("bench: cold start");
    results
        .cold
        .push((Side::Handler, scenarios::cold_start(&rig, &handler, plan.cold_starts)?));
    eprintln!("bench: memory");
    results
        .memory
        .push((Side::Handler, scenarios::memory(&rig, &handler, plan.memory_requests)?));
    if let Some(p) = python.as_ref().filter(|_| !plan.smoke) {
        results
            .cold
            .push((Side::Python, scenarios::cold_start(&rig, p, plan.cold_starts)?));
        results
            .memory
            .push((Side::Python, scenarios::memory(&rig, p, plan.memory_requests)?));
    }
    eprintln!("bench: token refresh");
    results.refresh = refresh()?;
    eprintln!("bench: token refresh with a slow identity endpoint");
    results.slow = slow_identity::run(&rig, &handler, plan.slow)?;
    drop(rig);
    results.cluster = Some(run_cluster(root, &lua, &handler, &plan, &results)?);
    if plan.smoke {
        eprintln!("bench: maintenance (a restart under load)");
        maintenance::run(root, &[("this handler".to_owned(), handler.clone())], &plan.maintenance)?;
    }

    check(&results)?;
    let plot_rel = "bench/results/plot.svg";
    let markdown = results.markdown(plot_rel);
    println!("{markdown}");
    if !plan.smoke {
        let title = format!("handler vs redis-benchmark vs Python peer, {}", machine::now_utc());
        std::fs::create_dir_all(root.join("bench/results"))?;
        std::fs::write(
            root.join(plot_rel),
            plot::svg(&results.points, &plan.concurrency, &title),
        )?;
        // The hand-measured "Logging writer" section, and "Maintenance"
        // (written by `-- --maintenance --before <handler>`, which compares
        // with an older build), stay until measured again.
        let old = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
        let mut markdown = markdown;
        for heading in ["## Maintenance", "## Logging writer"] {
            if let Some(kept) = cluster::section(&old, heading) {
                markdown = cluster::splice(&markdown, &format!("{}\n", kept.trim_end()));
            }
        }
        std::fs::write(root.join("BENCHMARKS.md"), &markdown)?;
        eprintln!("bench: wrote BENCHMARKS.md and {plot_rel}");
    }
    Ok(())
}

/// The cluster scenario, described with this run's machine and commit.
fn run_cluster(
    root: &Path,
    lua: &Path,
    handler: &Program,
    plan: &Plan,
    results: &Results,
) -> anyhow::Result<cluster::ClusterResults> {
    eprintln!("bench: cluster (handler in cluster mode vs redis-benchmark --cluster)");
    let mut c = cluster::run(root, lua, handler, &plan.cluster)?;
    c.machine = results.machine.clone();
    c.command = plan.command().to_owned();
    c.commit = machine::commit(root);
    c.check()?;
    Ok(c)
}

/// Removes `<flag> <path>` from `args`, returning the path made absolute
/// (the servers run in the repository root) and checked to be a file.
fn take_path_arg(args: &mut Vec<String>, flag: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(i) = args.iter().position(|a| a == flag) else {
        return Ok(None);
    };
    ensure!(i + 1 < args.len(), "{flag} needs a path");
    let path = PathBuf::from(args.remove(i + 1));
    args.remove(i);
    let bin = std::path::absolute(&path)?;
    ensure!(bin.is_file(), "no handler binary at {}", bin.display());
    Ok(Some(bin))
}

fn repo_root() -> anyhow::Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("bench/ has no parent")
}

/// `-- --rig`: starts Redis and the identity endpoint only and prints the
/// settings a handler needs, for profiling by hand (`perf record`, ...);
/// runs until interrupted.
fn rig_only() -> anyhow::Result<()> {
    let root = repo_root()?;
    let rig = Rig::start(root)?;
    println!("# Redis and the identity endpoint are up; Ctrl-C stops them. In another shell:");
    for (k, v) in rig.app_settings(&rig.identity, 300) {
        println!("export {k}='{v}'");
    }
    println!("export FUNCTIONS_CUSTOMHANDLER_PORT=7071");
    println!("# then: target/release/handler, and e.g. wrk -c 64 -d 5s -s bench/lua/cache.lua http://127.0.0.1:7071 -- GET 10000 100");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// What must hold for any run to count: every request answered, one token
/// request per refresh. (The speed targets are reported, not enforced.)
fn check(results: &Results) -> anyhow::Result<()> {
    for p in &results.points {
        ensure!(
            p.result.errors == 0 && p.result.rps > 0.0,
            "{} {} at {} connections: {} errors, {:.0} req/s",
            p.side.label(),
            p.op.label(),
            p.conns,
            p.result.errors,
            p.result.rps
        );
    }
    for r in results.refresh.steady.iter().chain(&results.refresh.refreshing) {
        ensure!(r.errors == 0, "{} failed requests in the refresh runs", r.errors);
    }
    let b = &results.refresh.burst;
    ensure!(
        b.invocations == 0 || (b.ok == b.invocations && b.token_requests == 1),
        "burst of {} invocations in a refresh window: {} answered 200, {} token requests (want all, and 1)",
        b.invocations,
        b.ok,
        b.token_requests
    );
    Ok(())
}
