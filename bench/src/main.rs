//! `cargo run --release -p bench`: the handler against the floor (the
//! `bench/floor` crate: hyper and one TLS Redis connection answering the
//! raw value, nothing else), `redis-benchmark` (the ceiling) and a Python
//! peer done the way Microsoft's Python quickstart does it, all on loopback
//! with a TLS `redis-server` with ACL users and the local App Service
//! identity endpoint.
//!
//! Writes `BENCHMARKS.md` at the repository root and `bench/results/plot.svg`.
//! `-- --smoke` runs a few seconds of each part at one concurrency, checks
//! that the pipeline works (no failed request, one token request per
//! refresh) and writes nothing; `-- --smoke --handler <path>` runs it
//! against that handler binary instead of building the release one, and
//! the `floor` beside it (CI runs it against the debug handler and floor
//! the tests built). `-- --refresh` measures only the cost of token
//! refresh, in 12 rounds; `-- --slow-identity` only the refresh against
//! an identity endpoint taking 2 s per answer; `-- --cluster` only the
//! handler in cluster mode against `redis-benchmark --cluster` on a local
//! 3-master TLS Redis Cluster, and writes just the "Cluster" section of
//! `BENCHMARKS.md`; `-- --rig` starts only Redis and the identity endpoint
//! and prints the settings, for profiling a handler by hand;
//! `-- --maintenance [--before <handler>]` only the ride through a restart
//! and failovers, and writes just the "Maintenance" section; `-- --flex`
//! only the handler under the CPU quotas of the Flex Consumption sizes,
//! and the floor under two of them (cgroup cpu controller: root, and a writable cgroup v1 cpu or v2
//! hierarchy), and writes just the "Flex Consumption sizes" section (the
//! smoke run does one short point of it when it can make a cgroup, and says
//! so when it cannot). `-- --telemetry` only what OTLP span export costs
//! the handler at full speed (export off against on, alternating) and a
//! paced run at 1,000 invocations a second that must lose no span, and
//! writes just the "Telemetry export" section. `-- --start` only cold
//! starts (with the first answer's steps from the handler's spans), memory
//! after a load and at 256 connections, and the binary's size (by crate
//! with `cargo bloat`, when installed), and writes just the "Cold start",
//! "Memory" and "Binary size" sections and their rows of the Targets table
//! and headline. `-- --help` lists the flags.
//!
//! # Layout
//!
//! - `tools`: the programs it needs (checked, never installed), the release
//!   handler and floor builds, the Python peer's virtualenv.
//! - `rig`: Redis and the identity endpoint (from `devhost`), and the servers
//!   under test started as the Functions host starts them.
//! - `load`: `wrk` and `redis-benchmark` runs.
//! - `client`: a tiny HTTP client for cold starts, the memory run and the burst.
//! - `timed`: a load generator that keeps every request's send time and latency.
//! - `scenarios`: throughput (with CPU per request), token refresh.
//! - `start`: cold starts and their steps, memory, the binary's size, with
//!   their part of the report.
//! - `slow_identity`: token refresh against a slow identity endpoint, split
//!   into requests during a fetch and the rest, with its part of the report.
//! - `cluster`: the handler in cluster mode against `redis-benchmark
//!   --cluster` on a local TLS Redis Cluster, with its part of the report.
//! - `maintenance`: the handler under load through a restart and cluster
//!   failovers, with its part of the report.
//! - `flex`: the handler under the CPU quotas of the Flex Consumption sizes,
//!   and the floor under two of them, with its part of the report; `quota` the cgroup cpu controller it uses,
//!   `delay` the delay line that makes the cache answer late.
//! - `telemetry`: OTLP export off against on at full speed, and a paced
//!   run that must lose no span, with its part of the report.
//! - `profile`: where a request's time goes (`-- --profile`): CPU, heap
//!   allocations and system calls per request of the handler and the
//!   floor, six experiment builds, flame graphs; it writes just the
//!   "Where the time goes" section and `bench/results/flame-*.svg`.
//! - `plan`: the mode a flag picks and how long each part runs in it.
//! - `report`, `method`, `plot`, `machine`: the Markdown, its Method section
//!   (from the plans), the SVG, the machine's description; `template` fills
//!   the prose in `bench/templates/`, `stats` holds medians and number
//!   formatting.

mod client;
mod cluster;
mod delay;
mod flex;
mod load;
mod machine;
mod maintenance;
mod method;
mod plan;
mod plot;
mod profile;
mod quota;
mod report;
mod rig;
mod scenarios;
mod slow_identity;
mod start;
mod stats;
mod telemetry;
mod template;
mod timed;
mod tools;

use anyhow::{ensure, Context};
use clap::{ArgGroup, Parser};
use plan::{Mode, Plan, REFRESH_ONLY_ROUNDS};
use report::Results;
use rig::{Program, Rig, Server};
use scenarios::Servers;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The command line: at most one mode flag (none: the full run).
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmarks the handler against redis-benchmark and a Python peer"
)]
#[command(group(ArgGroup::new("mode").args(["smoke", "refresh", "slow_identity", "cluster", "maintenance", "flex", "telemetry", "profile", "start", "rig"])))]
#[command(group(ArgGroup::new("given_handler").args(["smoke", "start"]).multiple(true)))]
#[command(group(ArgGroup::new("compared").args(["maintenance", "start"]).multiple(true)))]
struct Cli {
    /// A few seconds of each part at one concurrency; writes nothing.
    #[arg(long)]
    smoke: bool,
    /// Only the token refresh cost, in more rounds; prints it.
    #[arg(long)]
    refresh: bool,
    /// Only the refresh against an identity endpoint taking 2 s per answer.
    #[arg(long)]
    slow_identity: bool,
    /// Only the handler in cluster mode against `redis-benchmark --cluster`;
    /// writes the Cluster section of BENCHMARKS.md.
    #[arg(long)]
    cluster: bool,
    /// Only the handler under load through a restart and cluster failovers;
    /// writes the Maintenance section of BENCHMARKS.md.
    #[arg(long)]
    maintenance: bool,
    /// Only the handler under the CPU quotas of the Flex Consumption sizes
    /// (needs root and a writable cgroup cpu controller); writes the "Flex
    /// Consumption sizes" section of BENCHMARKS.md.
    #[arg(long)]
    flex: bool,
    /// Only what OTLP span export costs at full speed and a paced run that
    /// must lose no span; writes the "Telemetry export" section of
    /// BENCHMARKS.md.
    #[arg(long)]
    telemetry: bool,
    /// Only where a request's time goes (CPU, allocations, system calls,
    /// experiment builds, flame graphs; needs `perf` and `strace` for all
    /// of it); writes the "Where the time goes" section of BENCHMARKS.md.
    #[arg(long)]
    profile: bool,
    /// Only cold starts, memory and the binary's size; writes the "Cold
    /// start", "Memory" and "Binary size" sections of BENCHMARKS.md.
    #[arg(long)]
    start: bool,
    /// Starts Redis and the identity endpoint only and prints the settings,
    /// for profiling a handler by hand.
    #[arg(long)]
    rig: bool,
    /// With --smoke: run against this handler binary instead of building the
    /// release one, and the `floor` in its directory (built with that
    /// directory's profile when there is none). With --start: measure this
    /// binary (no breakdown by crate, which cargo bloat makes from source).
    #[arg(long, value_name = "PATH", requires = "given_handler", value_parser = existing_file)]
    handler: Option<PathBuf>,
    /// With --maintenance: also run this older handler binary, to compare.
    /// With --start: start both in turn and print them side by side,
    /// writing nothing.
    #[arg(long, value_name = "HANDLER", requires = "compared", value_parser = existing_file)]
    before: Option<PathBuf>,
}

impl Cli {
    /// The mode the flags pick; `None` for `--rig`.
    fn mode(&self) -> Option<Mode> {
        let picked = [
            (self.smoke, Mode::Smoke),
            (self.refresh, Mode::Refresh),
            (self.slow_identity, Mode::SlowIdentity),
            (self.cluster, Mode::Cluster),
            (self.maintenance, Mode::Maintenance),
            (self.flex, Mode::Flex),
            (self.telemetry, Mode::Telemetry),
            (self.profile, Mode::Profile),
            (self.start, Mode::Start),
        ];
        match picked.into_iter().find(|(set, _)| *set) {
            Some((_, mode)) => Some(mode),
            None if self.rig => None,
            None => Some(Mode::Full),
        }
    }
}

/// A path made absolute (the servers run in the repository root) and
/// checked to be a file.
fn existing_file(path: &str) -> Result<PathBuf, String> {
    let bin = std::path::absolute(path).map_err(|e| e.to_string())?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("no handler binary at {}", bin.display()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode() {
        None => rig_only(),
        Some(mode) => run(mode, &cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mode: Mode, cli: &Cli) -> anyhow::Result<()> {
    let mut plan = Plan::for_mode(mode);
    // cargo bloat measures the sources, not a binary given by path.
    plan.start.bloat &= cli.handler.is_none();
    let root = repo_root()?;
    // Only the full run and `--start` (not comparing two handlers) compare
    // with the Python peer, so only they make the venv.
    let full = mode == Mode::Full || (mode == Mode::Start && cli.before.is_none());
    tools::check(full, cli.handler.is_none())?;
    if mode == Mode::Flex {
        // Before building anything: this machine must let the bench make a cgroup.
        flex::probe().context("--flex runs the handler under a CPU quota")?;
    }
    let handler_bin = match &cli.handler {
        Some(bin) => bin.clone(),
        None => tools::build_handler(root)?,
    };
    let handler = Program::Handler(handler_bin.clone());
    let lua = root.join("bench/lua/cache.lua");
    let results = Results {
        machine: machine::describe(),
        command: mode.command().to_owned(),
        concurrency: plan.concurrency.clone(),
        seconds_per_point: plan.timing.measure.as_secs(),
        pairing: plan.pairing,
        method: method::markdown(&Plan::full(), &Plan::smoke(), REFRESH_ONLY_ROUNDS),
        notes: std::fs::read_to_string(root.join("bench/notes.md")).unwrap_or_default(),
        ..Results::default()
    };
    match mode {
        Mode::Cluster => cluster_only(root, &lua, &handler, &plan, &results),
        Mode::Maintenance => maintenance_only(root, &handler, cli.before.as_deref(), &plan),
        Mode::Flex => {
            let floor = Program::Floor(tools::build_floor(root)?);
            flex_only(root, &lua, (&handler, &floor), &plan, &results)
        }
        Mode::Telemetry => telemetry_only(root, &lua, &handler, &plan, &results),
        Mode::Profile => profile_only(root, &lua, &handler, &plan, &results),
        Mode::Refresh | Mode::SlowIdentity => refresh_only(root, &lua, &handler, &plan, results),
        Mode::Full | Mode::Smoke | Mode::Start => {
            let python = tools::python_venv(root, full)?.map(|interpreter| Program::Python {
                interpreter,
                script: root.join("bench/python_peer/app.py"),
            });
            if mode == Mode::Start {
                return match &cli.before {
                    Some(before) => start_compared(root, &lua, (&handler, &handler_bin), before, &plan),
                    None => start_only(root, &lua, &handler, &handler_bin, python.as_ref(), &plan, &results),
                };
            }
            if mode == Mode::Smoke && python.is_none() {
                eprintln!("bench: smoke run without the Python peer (its virtualenv is made by the full run)");
            }
            let floor = match &cli.handler {
                Some(bin) => tools::floor_beside(root, bin)?,
                None => tools::build_floor(root)?,
            };
            eprintln!("bench: the floor: {}", floor.display());
            let floor = Program::Floor(floor);
            let servers = (&handler, handler_bin.as_path(), &floor, python.as_ref());
            everything(root, &lua, servers, &plan, results)
        }
    }
}

/// `--cluster`: the cluster scenario alone, spliced into `BENCHMARKS.md`.
fn cluster_only(root: &Path, lua: &Path, handler: &Program, plan: &Plan, results: &Results) -> anyhow::Result<()> {
    let c = run_cluster(root, lua, handler, plan, results)?;
    write_section(root, &c.section(), "Cluster")
}

/// `--maintenance [--before <handler>]`: the maintenance scenario, for this
/// handler and an older one, spliced into `BENCHMARKS.md`.
fn maintenance_only(root: &Path, handler: &Program, before: Option<&Path>, plan: &Plan) -> anyhow::Result<()> {
    eprintln!("bench: maintenance (the handler under load through a restart and cluster failovers)");
    let mut builds = vec![("this handler".to_owned(), handler.clone())];
    if let Some(before) = before {
        builds.push(("before".to_owned(), Program::Handler(before.to_owned())));
    }
    let events = maintenance::run(root, &builds, &plan.maintenance)?;
    let before_commit = before.map(|_| {
        std::env::var("BENCH_BEFORE_COMMIT").unwrap_or_else(|_| "the commit given in BENCH_BEFORE_COMMIT".into())
    });
    let section = maintenance::section(
        &events,
        &plan.maintenance,
        plan.mode.command(),
        &machine::commit(root),
        before_commit.as_deref(),
    );
    write_section(root, &section, "Maintenance")
}

/// `--flex`: the Flex Consumption sizes, spliced into `BENCHMARKS.md`.
/// `servers`: the handler and the floor.
fn flex_only(
    root: &Path,
    lua: &Path,
    servers: (&Program, &Program),
    plan: &Plan,
    results: &Results,
) -> anyhow::Result<()> {
    let f = run_flex(root, lua, servers, plan, results)?;
    write_section(root, &f.section(), "Flex Consumption sizes")
}

/// The Flex Consumption sizes, described with this run's machine and
/// commit. `servers`: the handler and the floor.
fn run_flex(
    root: &Path,
    lua: &Path,
    servers: (&Program, &Program),
    plan: &Plan,
    results: &Results,
) -> anyhow::Result<flex::FlexResults> {
    eprintln!("bench: Flex Consumption sizes (the handler, and the floor, under CPU quotas)");
    let (handler, floor) = servers;
    let mut f = flex::run(root, lua, handler, floor, &plan.flex)?;
    f.machine = results.machine.clone();
    f.command = plan.mode.command().to_owned();
    f.commit = machine::commit(root);
    f.check()?;
    Ok(f)
}

/// `--start`: cold starts, memory and the binary's size, spliced into
/// `BENCHMARKS.md` with their rows of the Targets table and headline.
fn start_only(
    root: &Path,
    lua: &Path,
    handler: &Program,
    handler_bin: &Path,
    python: Option<&Program>,
    plan: &Plan,
    results: &Results,
) -> anyhow::Result<()> {
    let rig = Rig::start(root)?;
    let floor = Program::Floor(tools::build_floor(root)?);
    let s = run_start(&rig, lua, (handler, handler_bin, &floor), python, plan, results)?;
    drop(rig);
    let sections = s.sections();
    println!("{sections}");
    let path = root.join("BENCHMARKS.md");
    let mut md = std::fs::read_to_string(&path).unwrap_or_default();
    for section in [s.cold_start_section(), s.memory_section(), s.size_section()] {
        md = cluster::splice(&md, &format!("{}\n", section.trim_end()));
    }
    md = start::own_lines(&md, &s.targets(), &s.headline());
    std::fs::write(&path, md)?;
    eprintln!("bench: wrote the Cold start, Memory and Binary size sections of BENCHMARKS.md, and their targets");
    Ok(())
}

/// `--start --before <handler>`: both handlers' cold starts, in turn, and
/// memory, printed side by side; writes nothing.
fn start_compared(root: &Path, lua: &Path, this: (&Program, &Path), before: &Path, plan: &Plan) -> anyhow::Result<()> {
    let rig = Rig::start(root)?;
    let before = (&Program::Handler(before.to_owned()), before);
    println!("{}", start::compare(&rig, lua, this, before, &plan.start)?);
    Ok(())
}

/// Cold starts, memory and the binary's size, described with this run's
/// machine and commit.
fn run_start(
    rig: &Rig,
    lua: &Path,
    (handler, handler_bin, floor): (&Program, &Path, &Program),
    python: Option<&Program>,
    plan: &Plan,
    results: &Results,
) -> anyhow::Result<start::StartResults> {
    let mut s = start::run(rig, lua, handler, handler_bin, floor, python, &plan.start)?;
    s.machine = results.machine.clone();
    s.command = plan.mode.command().to_owned();
    s.commit = machine::commit(&rig.root);
    Ok(s)
}

/// `--telemetry`: the telemetry export scenario, spliced into `BENCHMARKS.md`.
fn telemetry_only(root: &Path, lua: &Path, handler: &Program, plan: &Plan, results: &Results) -> anyhow::Result<()> {
    let rig = Rig::start(root)?;
    let t = run_telemetry(&rig, lua, handler, plan, results)?;
    write_section(root, &t.section(), "Telemetry export")
}

/// `--profile`: where the time goes, spliced into `BENCHMARKS.md`.
fn profile_only(root: &Path, lua: &Path, handler: &Program, plan: &Plan, results: &Results) -> anyhow::Result<()> {
    eprintln!("bench: where the time goes (CPU, allocations, system calls, experiments, flame graphs)");
    let floor = Program::Floor(tools::build_floor(root)?);
    let mut p = profile::run(root, lua, handler, &floor, &plan.profile)?;
    p.machine = results.machine.clone();
    p.command = plan.mode.command().to_owned();
    p.commit = machine::commit(root);
    p.check()?;
    write_section(root, &p.section(), "Where the time goes")
}

/// The telemetry export scenario, described with this run's machine and
/// commit, and checked.
fn run_telemetry(
    rig: &Rig,
    lua: &Path,
    handler: &Program,
    plan: &Plan,
    results: &Results,
) -> anyhow::Result<telemetry::TelemetryResults> {
    eprintln!("bench: telemetry export (export off against on, then a paced run)");
    let mut t = telemetry::run(rig, lua, handler, &plan.telemetry)?;
    t.machine = results.machine.clone();
    t.command = plan.mode.command().to_owned();
    t.commit = machine::commit(&rig.root);
    t.check()?;
    Ok(t)
}

/// Prints `section` and puts it in place of its namesake in `BENCHMARKS.md`.
fn write_section(root: &Path, section: &str, name: &str) -> anyhow::Result<()> {
    println!("{section}");
    let path = root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, cluster::splice(&old, section))?;
    eprintln!("bench: wrote the {name} section of BENCHMARKS.md");
    Ok(())
}

/// `--refresh` or `--slow-identity`: that part alone, printed.
fn refresh_only(root: &Path, lua: &Path, handler: &Program, plan: &Plan, mut results: Results) -> anyhow::Result<()> {
    let rig = Rig::start(root)?;
    if plan.mode == Mode::SlowIdentity {
        results.slow = slow_identity::run(&rig, handler, plan.slow)?;
    } else {
        results.refresh = refresh_cost(&rig, lua, handler, plan)?;
    }
    check(&results)?;
    println!("{}", results.markdown(""));
    Ok(())
}

/// The token refresh cost, as long as the plan says.
fn refresh_cost(rig: &Rig, lua: &Path, handler: &Program, plan: &Plan) -> anyhow::Result<scenarios::Refresh> {
    scenarios::refresh(
        rig,
        lua,
        handler,
        plan.refresh_timing,
        plan.refresh_rounds,
        plan.short_tokens,
    )
}

/// The full run (or its smoke version): every part, then the report.
/// `servers`: the handler, its binary, the floor and the Python peer.
fn everything(
    root: &Path,
    lua: &Path,
    servers: (&Program, &Path, &Program, Option<&Program>),
    plan: &Plan,
    mut results: Results,
) -> anyhow::Result<()> {
    let (handler, handler_bin, floor_program, python) = servers;
    let smoke = plan.mode == Mode::Smoke;
    let rig = Rig::start(root)?;
    eprintln!("bench: throughput and latency");
    let settings = rig.app_settings(&rig.identity, 300);
    let rust = Server::start(handler, root, &settings)?;
    let floor = Server::start(floor_program, root, &rig.floor_settings())?;
    let py = python.map(|p| Server::start(p, root, &settings)).transpose()?;
    let servers = Servers {
        handler: &rust,
        floor: &floor,
        python: py.as_ref(),
    };
    results.points = scenarios::throughput(&rig, lua, &servers, &plan.concurrency, plan.timing, plan.pairing)?;
    let throughput_peak_kib = rust.rss_kib()?.1;
    drop((rust, floor, py));

    results.start = run_start(
        &rig,
        lua,
        (handler, handler_bin, floor_program),
        python.filter(|_| !smoke),
        plan,
        &results,
    )?;
    results.start.throughput_peak_kib = throughput_peak_kib;
    eprintln!("bench: token refresh");
    results.refresh = refresh_cost(&rig, lua, handler, plan)?;
    eprintln!("bench: token refresh with a slow identity endpoint");
    results.slow = slow_identity::run(&rig, handler, plan.slow)?;
    results.telemetry = Some(run_telemetry(&rig, lua, handler, plan, &results)?);
    drop(rig);
    results.cluster = Some(run_cluster(root, lua, handler, plan, &results)?);
    if smoke {
        eprintln!("bench: maintenance (a restart under load)");
        maintenance::run(root, &[("this handler".to_owned(), handler.clone())], &plan.maintenance)?;
        match flex::probe() {
            Ok(()) => drop(run_flex(root, lua, (handler, floor_program), plan, &results)?),
            Err(e) => {
                eprintln!("bench: smoke run without the Flex point: cannot make a cgroup with a CPU quota: {e:#}")
            }
        }
    }

    check(&results)?;
    let plot_rel = "bench/results/plot.svg";
    let markdown = results.markdown(plot_rel);
    println!("{markdown}");
    if !smoke {
        let title = format!(
            "handler vs floor vs redis-benchmark vs Python peer, {}",
            machine::now_utc()
        );
        std::fs::create_dir_all(root.join("bench/results"))?;
        std::fs::write(
            root.join(plot_rel),
            plot::svg(&results.points, &plan.concurrency, &title),
        )?;
        // The hand-measured "Logging writer" section, "Maintenance"
        // (written by `-- --maintenance --before <handler>`, which compares
        // with an older build) and "Flex Consumption sizes" (written by
        // `-- --flex`, which needs root) and "Where the time goes" (written
        // by `-- --profile`, which makes builds of its own) stay until
        // measured again.
        let old = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
        let mut markdown = markdown;
        for heading in [
            "## Flex Consumption sizes",
            "## Maintenance",
            "## Logging writer",
            "## Where the time goes",
        ] {
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
    c.command = plan.mode.command().to_owned();
    c.commit = machine::commit(root);
    c.check()?;
    Ok(c)
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
    println!(
        "# or the floor (cargo build --release -p floor): FLOOR_REDIS_USER='{}' FLOOR_REDIS_PASSWORD='{}' target/release/floor",
        rig::BENCH_USER,
        rig.bench_password
    );
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
