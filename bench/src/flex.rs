//! The Flex Consumption sizes (`-- --flex`, and one short point of the
//! smoke run): the release handler under the CPU quota a Flex instance
//! gets (about 0.25 core at 512 MB, 1 at 2048 MB, 2 at 4096 MB;
//! docs/azure.md "Flex Consumption"), GET through `wrk` at the
//! concurrencies `perInstanceConcurrency` would allow, and the concurrency
//! at which p99 passes 10 ms at each size; then the same 0.25-core handler
//! against a cache that answers 5 ms late, since concurrency is requests in
//! flight, not CPU. Beside them, the floor (`bench/floor`, as in the
//! throughput table) under the quotas of 0.25 and 1 core, in the same turns
//! at the same concurrencies, for handler ÷ floor under a capped CPU
//! (`floor`); the floor's cases are not sizes, and the crossings, the
//! summary and the recommendation are the handler's alone.
//!
//! Each handler is started, as the rig starts one (as the Functions host
//! would), through a shell that joins its own cgroup with the size's quota
//! and then execs the handler ([`quota::Group::join_and_exec`]): the handler
//! starts under the quota, alone in the group; `wrk` and `redis-server`
//! stay out of it. All handlers run side by side and take turns at each
//! concurrency, the order reversed every other round, so that drift in the
//! machine hits them alike; medians of the rounds. For each run the bench
//! keeps the handler's CPU time (`/proc/<pid>/stat`) and its group's
//! `cpu.stat` (periods throttled), so the report shows the quota applied,
//! and checks the handler never used more than its quota.

mod floor;

use crate::delay::DelayLine;
use crate::load::{self, LoadResult};
use crate::quota::{self, CpuStat, Group, Hierarchy};
use crate::rig::{Program, Rig, Server, KEYSPACE, VALUE_BYTES};
use crate::scenarios::{print_point, Op, Timing};
use crate::stats::{group, median, mib};
use crate::template::{fill, text};
use anyhow::{bail, ensure, Context};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The p99 a size must stay under, ms.
pub const P99_LIMIT_MS: f64 = 10.0;

/// Sizes within this share of the best req/s per GB count as as good.
const AS_GOOD: f64 = 0.10;

/// A handler throttled in more than this share of its periods has used up
/// its quota.
pub const THROTTLED_SHARE: f64 = 0.10;

/// A size whose handler never used more than this share of its quota was
/// bounded by the machine, not by the quota.
const MACHINE_BOUND: f64 = 0.75;

/// A Flex Consumption instance size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    /// Instance memory, MB.
    pub memory_mb: u32,
    /// The CPU it gets, cores.
    pub cores: f64,
    /// Its default HTTP `perInstanceConcurrency`.
    pub default_concurrency: u32,
}

/// The three sizes (docs/azure.md, "Flex Consumption").
pub const SIZES: [Size; 3] = [
    Size {
        memory_mb: 512,
        cores: 0.25,
        default_concurrency: 4,
    },
    Size {
        memory_mb: 2048,
        cores: 1.0,
        default_concurrency: 16,
    },
    Size {
        memory_mb: 4096,
        cores: 2.0,
        default_concurrency: 32,
    },
];

/// What a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Participant {
    /// The release handler: the Flex sizes are its cases.
    Handler,
    /// The floor (`bench/floor`), under a size's quota beside the handler;
    /// not a size of its own (no recommendation, no summary row).
    Floor,
}

impl Participant {
    /// `handler` or `floor`, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Participant::Handler => "handler",
            Participant::Floor => "floor",
        }
    }
}

/// One server under test: what it is, a size, and how late the cache
/// answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// The handler, or the floor under the same quota.
    pub program: Participant,
    /// The instance size whose quota it runs under.
    pub size: Size,
    /// Added to every answer from Redis (`None`: Redis on loopback as is).
    pub cache_delay: Option<Duration>,
}

impl Case {
    /// The handler at `size` against Redis as it is.
    pub fn handler(size: Size) -> Case {
        Case {
            program: Participant::Handler,
            size,
            cache_delay: None,
        }
    }

    /// The floor under `size`'s quota against Redis as it is.
    pub fn floor(size: Size) -> Case {
        Case {
            program: Participant::Floor,
            ..Case::handler(size)
        }
    }

    /// Its name in the report: the size for the handler (`512 MB (0.25
    /// core)`), the quota for the floor (`floor, 0.25 core`).
    pub fn label(&self) -> String {
        let cores = cores_text(self.size.cores);
        let name = match self.program {
            Participant::Handler => format!("{} MB ({cores})", self.size.memory_mb),
            Participant::Floor => format!("floor, {cores}"),
        };
        match self.cache_delay {
            None => name,
            Some(d) => format!("{name}, cache +{} ms", d.as_millis()),
        }
    }
}

/// `0.25 core`, `1 core`, `2 cores`.
fn cores_text(cores: f64) -> String {
    if cores > 1.0 {
        format!("{cores} cores")
    } else {
        format!("{cores} core")
    }
}

/// How much of the scenario to run.
#[derive(Debug, Clone)]
pub struct FlexPlan {
    /// The handlers, side by side.
    pub cases: Vec<Case>,
    /// Connections per point.
    pub concurrency: Vec<u32>,
    /// Runs per handler at each point.
    pub rounds: usize,
    /// Warm-up (once per point and handler) and length of each run.
    pub timing: Timing,
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// What `wrk` measured.
    pub load: LoadResult,
    /// The handler's CPU time over the run.
    pub cpu: Duration,
    /// The run's wall time, as the bench timed it around `wrk`.
    pub wall: Duration,
    /// Requests answered (req/s × the run's length).
    pub requests: f64,
    /// The group's `cpu.stat` over the run.
    pub stat: CpuStat,
}

impl Run {
    /// CPU per request, µs.
    pub fn cpu_per_request_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1.0)
    }

    /// CPU used, cores.
    pub fn cores_used(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// The runs of one handler at one concurrency.
#[derive(Debug, Clone)]
pub struct FlexPoint {
    /// Index into [`FlexResults::cases`].
    pub case: usize,
    /// Concurrent connections.
    pub conns: u32,
    /// One per round.
    pub runs: Vec<Run>,
}

impl FlexPoint {
    fn median_of(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// Median req/s.
    pub fn rps(&self) -> f64 {
        self.median_of(|r| r.load.rps)
    }

    /// Median p50, ms.
    pub fn p50(&self) -> f64 {
        self.median_of(|r| r.load.p50_ms)
    }

    /// Median p99, ms.
    pub fn p99(&self) -> f64 {
        self.median_of(|r| r.load.p99_ms)
    }

    /// Median CPU per request, µs.
    pub fn cpu_us(&self) -> f64 {
        self.median_of(Run::cpu_per_request_us)
    }

    /// Median CPU used, cores.
    pub fn cores_used(&self) -> f64 {
        self.median_of(Run::cores_used)
    }

    /// The group's counts over all the runs.
    pub fn stat(&self) -> CpuStat {
        self.runs.iter().fold(CpuStat::default(), |a, r| a.plus(&r.stat))
    }

    /// Seconds of the runs.
    pub fn seconds(&self) -> f64 {
        self.runs.iter().map(|r| r.wall.as_secs_f64()).sum()
    }
}

/// What the scenario measured.
#[derive(Debug, Clone, Default)]
pub struct FlexResults {
    /// The handlers.
    pub cases: Vec<Case>,
    /// Runs per handler at each point.
    pub rounds: usize,
    /// Warm-up and run length.
    pub warm_s: f64,
    pub seconds: f64,
    /// Every point.
    pub points: Vec<FlexPoint>,
    /// How the quota was applied ([`Hierarchy::describe`]).
    pub how: String,
    /// The groups' directories.
    pub groups: Vec<PathBuf>,
    /// Worker threads each handler's runtime started.
    pub workers: Vec<usize>,
    /// Each handler's peak RSS after its runs, KiB.
    pub peak_kib: Vec<u64>,
    /// The commit measured.
    pub commit: String,
    /// `(name, value)` lines about the machine and tools.
    pub machine: Vec<(&'static str, String)>,
    /// The command that produced these numbers.
    pub command: String,
    /// The load average when the scenario ended.
    pub load_end: String,
    /// How long the scenario took, s.
    pub elapsed_s: f64,
}

/// A server under test (the handler or the floor) in its group; dropped in this order: the server, the delay
/// line, then the group (which must be empty to go).
struct Handler {
    server: Server,
    _line: Option<DelayLine>,
    group: Group,
}

/// Whether this machine lets the bench make a cgroup with a CPU quota:
/// makes one and removes it.
pub fn probe() -> anyhow::Result<()> {
    let hierarchy = Hierarchy::detect()?;
    drop(Group::create(
        &hierarchy,
        &format!("bench-probe-{}", std::process::id()),
        1.0,
    )?);
    Ok(())
}

/// Starts Redis, the identity endpoint and one server per case (the
/// handler, or the floor for a floor case), each in its own group; then
/// measures GET at each concurrency, the servers taking turns.
pub fn run(
    root: &Path,
    lua: &Path,
    handler: &Program,
    floor: &Program,
    plan: &FlexPlan,
) -> anyhow::Result<FlexResults> {
    let started = Instant::now();
    let Program::Handler(handler) = handler else {
        bail!("--flex runs the handler binary, not {handler:?}");
    };
    let Program::Floor(floor) = floor else {
        bail!("--flex runs the floor binary beside the handler, not {floor:?}");
    };
    let hierarchy = Hierarchy::detect()?;
    let rig = Rig::start(root)?;
    let mut out = FlexResults {
        cases: plan.cases.clone(),
        rounds: plan.rounds,
        warm_s: plan.timing.warm.as_secs_f64(),
        seconds: plan.timing.measure.as_secs_f64(),
        how: hierarchy.describe(),
        ..FlexResults::default()
    };
    let mut handlers = Vec::new();
    for (i, case) in plan.cases.iter().enumerate() {
        let binary = match case.program {
            Participant::Handler => handler,
            Participant::Floor => floor,
        };
        let h = start(&rig, &hierarchy, binary, case, i)?;
        let workers = quota::thread_names(h.server.pid())?
            .iter()
            .filter(|name| name.starts_with("tokio-rt-worker") || name.starts_with("tokio-runtime-w"))
            .count();
        eprintln!(
            "bench: flex {}: {} {} alone in {} ({} runtime worker threads)",
            case.label(),
            case.program.noun(),
            h.server.pid(),
            h.group.dir().display(),
            workers
        );
        out.groups.push(h.group.dir().to_owned());
        out.workers.push(workers);
        handlers.push(h);
    }
    for &conns in &plan.concurrency {
        for h in &handlers {
            load::wrk(lua, h.server.port, "GET", conns, plan.timing.warm)?;
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); handlers.len()];
        for round in 0..plan.rounds {
            let mut order: Vec<usize> = (0..handlers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let r = measure(lua, &handlers[i], conns, plan.timing.measure)?;
                print_point(&format!("flex {}", plan.cases[i].label()), Op::Get, conns, &r.load);
                eprintln!(
                    "bench:   CPU {:.1} µs/request, {:.2} cores; throttled {} of {} periods, {:.0} ms",
                    r.cpu_per_request_us(),
                    r.cores_used(),
                    r.stat.throttled,
                    r.stat.periods,
                    r.stat.throttled_ns as f64 / 1e6
                );
                runs[i].push(r);
            }
        }
        for (case, runs) in runs.into_iter().enumerate() {
            out.points.push(FlexPoint { case, conns, runs });
        }
    }
    for h in &handlers {
        out.peak_kib.push(h.server.rss_kib()?.1);
    }
    drop(handlers);
    out.load_end = load_average();
    out.elapsed_s = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Makes the case's group and starts its server in it (`binary`, the
/// handler or the floor, with its settings; through a delay line when the
/// case has one), alone in the group.
fn start(rig: &Rig, hierarchy: &Hierarchy, binary: &Path, case: &Case, i: usize) -> anyhow::Result<Handler> {
    let name = format!("bench-flex-{}-{i}", std::process::id());
    let group = Group::create(hierarchy, &name, case.size.cores)?;
    let line = case
        .cache_delay
        .map(|d| DelayLine::start(&rig.rt, rig.redis.tls_port(), d))
        .transpose()?;
    let mut settings = match case.program {
        Participant::Handler => rig.app_settings(&rig.identity, 300),
        Participant::Floor => rig.floor_settings(),
    };
    if let Some(line) = &line {
        for (k, v) in &mut settings {
            if k == "Redis__port" {
                *v = line.port.to_string();
            }
        }
    }
    let script = std::env::temp_dir().join(format!("{name}.sh"));
    group.join_and_exec(binary, &script)?;
    // The variant picks how readiness is probed (the floor has no /api/ping).
    let program = match case.program {
        Participant::Handler => Program::Handler(script.clone()),
        Participant::Floor => Program::Floor(script.clone()),
    };
    let server = Server::start(&program, &rig.root, &settings);
    let _ = std::fs::remove_file(&script);
    let server =
        server.with_context(|| format!("starting the {} in {}", case.program.noun(), group.dir().display()))?;
    quota::check_alone(&group, server.pid(), binary)?;
    Ok(Handler {
        server,
        _line: line,
        group,
    })
}

/// One `wrk` run on `h`, with the handler's CPU time and the group's counts
/// around it.
fn measure(lua: &Path, h: &Handler, conns: u32, length: Duration) -> anyhow::Result<Run> {
    let pid = h.server.pid();
    let (cpu0, stat0, t0) = (quota::process_cpu(pid)?, h.group.stat()?, Instant::now());
    let load = load::wrk(lua, h.server.port, "GET", conns, length)?;
    let wall = t0.elapsed();
    let (cpu1, stat1) = (quota::process_cpu(pid)?, h.group.stat()?);
    Ok(Run {
        load,
        cpu: cpu1.saturating_sub(cpu0),
        wall,
        requests: load.rps * length.as_secs_f64(),
        stat: stat1.since(&stat0),
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

/// Where p99 passes the limit, going up in concurrency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Crossing {
    /// p99 stayed under the limit at every concurrency measured, up to this one.
    Never {
        /// The highest concurrency measured.
        up_to: u32,
    },
    /// p99 first passed the limit at `over` (connections, p99 ms); `under`
    /// is the point before it, if any.
    At {
        /// The last point under the limit.
        under: Option<(u32, f64)>,
        /// The first point over it.
        over: (u32, f64),
    },
}

impl Crossing {
    /// Where p99 first passes `limit_ms` among `points` (connections, p99
    /// ms, in any order); `None` with no points.
    pub fn find(points: &[(u32, f64)], limit_ms: f64) -> Option<Crossing> {
        let mut sorted = points.to_vec();
        sorted.sort_by_key(|p| p.0);
        let up_to = sorted.last()?.0;
        Some(match sorted.iter().position(|p| p.1 > limit_ms) {
            None => Crossing::Never { up_to },
            Some(i) => Crossing::At {
                under: i.checked_sub(1).map(|j| sorted[j]),
                over: sorted[i],
            },
        })
    }

    /// The highest concurrency measured under the limit with every lower
    /// one under it too: the point before the crossing (not an
    /// interpolation: the real limit lies at or above it).
    pub fn safe(&self) -> Option<u32> {
        match *self {
            Crossing::Never { up_to } => Some(up_to),
            Crossing::At { under, .. } => under.map(|u| u.0),
        }
    }

    /// In words, for the report.
    pub fn describe(&self) -> String {
        match *self {
            Crossing::Never { up_to } => format!("not reached up to {up_to}"),
            Crossing::At { under: None, over } => {
                format!("already at {} (p99 {:.1} ms)", over.0, over.1)
            }
            Crossing::At {
                under: Some(under),
                over,
            } => format!(
                "between {} (p99 {:.1} ms) and {} (p99 {:.1} ms)",
                under.0, under.1, over.0, over.1
            ),
        }
    }
}

/// The lowest concurrency (of `points`: connections and the group's counts
/// there) at which the handler was throttled in more than
/// [`THROTTLED_SHARE`] of its periods: where it used up its quota.
pub fn quota_used_up(points: &[(u32, CpuStat)]) -> Option<u32> {
    let mut sorted = points.to_vec();
    sorted.sort_by_key(|p| p.0);
    sorted
        .iter()
        .find(|(_, st)| st.throttled as f64 > THROTTLED_SHARE * st.periods as f64)
        .map(|p| p.0)
}

/// One size's standing for the recommendation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// Instance memory, MB.
    pub memory_mb: u32,
    /// Its safe concurrency and the req/s measured there.
    pub safe: Option<(u32, f64)>,
}

impl Standing {
    /// req/s at the safe concurrency per GB of instance memory.
    pub fn per_gb(&self) -> Option<f64> {
        self.safe.map(|(_, rps)| rps / (f64::from(self.memory_mb) / 1024.0))
    }
}

/// The size to recommend: the most req/s per GB at its safe concurrency;
/// among sizes within [`AS_GOOD`] of that, the largest (fewer instances:
/// fewer cold starts, token fetches and Redis connections). `None` when no
/// size has a safe concurrency.
pub fn recommend(standings: &[Standing]) -> Option<usize> {
    let best = standings.iter().filter_map(Standing::per_gb).fold(f64::NAN, f64::max);
    if best.is_nan() {
        return None;
    }
    standings
        .iter()
        .enumerate()
        .filter(|(_, s)| s.per_gb().is_some_and(|g| g >= best * (1.0 - AS_GOOD)))
        .max_by_key(|(_, s)| s.memory_mb)
        .map(|(i, _)| i)
}

impl FlexResults {
    fn points_of(&self, case: usize) -> Vec<&FlexPoint> {
        let mut v: Vec<&FlexPoint> = self.points.iter().filter(|p| p.case == case).collect();
        v.sort_by_key(|p| p.conns);
        v
    }

    /// Where the case's median p99 passes 10 ms.
    pub fn crossing(&self, case: usize) -> Option<Crossing> {
        self.crossing_at(case, P99_LIMIT_MS)
    }

    /// Where the case's median p99 passes `limit_ms`.
    fn crossing_at(&self, case: usize, limit_ms: f64) -> Option<Crossing> {
        let points: Vec<(u32, f64)> = self.points_of(case).iter().map(|p| (p.conns, p.p99())).collect();
        Crossing::find(&points, limit_ms)
    }

    /// For a case with a slow cache: 10 ms on top of the cache's delay (the
    /// handler's own budget, as against loopback), and where p99 passes it.
    fn beyond_delay(&self, case: usize) -> Option<(f64, Crossing)> {
        let delay_ms = self.cases[case].cache_delay?.as_secs_f64() * 1000.0;
        let limit = P99_LIMIT_MS + delay_ms;
        Some((limit, self.crossing_at(case, limit)?))
    }

    /// Where the case's handler used up its quota ([`quota_used_up`]).
    pub fn used_up(&self, case: usize) -> Option<u32> {
        let points: Vec<(u32, CpuStat)> = self.points_of(case).iter().map(|p| (p.conns, p.stat())).collect();
        quota_used_up(&points)
    }

    /// [`FlexResults::used_up`] in words.
    fn used_up_text(&self, case: usize) -> String {
        match self.used_up(case) {
            Some(n) => format!("from {n}"),
            None => "not up to the highest concurrency".into(),
        }
    }

    /// The most CPU the case's handler used in a run, cores.
    fn most_cores(&self, case: usize) -> f64 {
        self.points_of(case)
            .iter()
            .flat_map(|p| p.runs.iter().map(Run::cores_used))
            .fold(0.0, f64::max)
    }

    /// The case's standing: its safe concurrency and the req/s there.
    fn standing(&self, case: usize) -> Standing {
        let safe = self
            .crossing(case)
            .and_then(|c| c.safe())
            .and_then(|n| self.points_of(case).iter().find(|p| p.conns == n).map(|p| (n, p.rps())));
        Standing {
            memory_mb: self.cases[case].size.memory_mb,
            safe,
        }
    }

    /// The handler's cases, by index: the Flex sizes (the floor's are not).
    fn handler_cases(&self) -> Vec<usize> {
        (0..self.cases.len())
            .filter(|&i| self.cases[i].program == Participant::Handler)
            .collect()
    }

    /// The handler's cases against Redis as it is (no added delay), by index.
    fn plain_cases(&self) -> Vec<usize> {
        self.handler_cases()
            .into_iter()
            .filter(|&i| self.cases[i].cache_delay.is_none())
            .collect()
    }

    /// Every run answered, and no server used more CPU than its quota
    /// (with room for the clock tick of `/proc/<pid>/stat`); the groups had
    /// periods (the controller saw the handler run).
    pub fn check(&self) -> anyhow::Result<()> {
        for p in &self.points {
            let case = &self.cases[p.case];
            for r in &p.runs {
                ensure!(
                    r.load.errors == 0 && r.load.rps > 0.0,
                    "flex {} at {} connections: {} errors, {:.0} req/s",
                    case.label(),
                    p.conns,
                    r.load.errors,
                    r.load.rps
                );
                let limit = case.size.cores * 1.1 + 0.02 / r.wall.as_secs_f64().max(0.1);
                ensure!(
                    r.cores_used() <= limit,
                    "flex {} at {} connections: the {} used {:.2} cores, over its quota of {}: the quota did \
                     not apply",
                    case.label(),
                    p.conns,
                    case.program.noun(),
                    r.cores_used(),
                    case.size.cores
                );
            }
            ensure!(
                p.stat().periods > 0,
                "flex {} at {} connections: the group's cpu.stat counted no period: the controller did not see the \
                 {} run",
                case.label(),
                p.conns,
                case.program.noun()
            );
        }
        Ok(())
    }

    /// The "## Flex Consumption sizes" section of BENCHMARKS.md, ending
    /// with a newline.
    pub fn section(&self) -> String {
        let get = |k: &str| crate::machine::value(&self.machine, k);
        let workers: Vec<String> = self
            .cases
            .iter()
            .zip(&self.workers)
            .map(|(c, w)| format!("{w} at {}", c.label()))
            .collect();
        let workers = workers.join("; ");
        let groups = match self.groups.first().and_then(|g| g.parent()) {
            Some(parent) => format!("`{}/bench-flex-<bench pid>-<n>`", parent.display()),
            None => "?".into(),
        };
        let mut s = fill(
            text::FLEX,
            &[
                ("date", get("date")),
                ("cores", get("cores")),
                ("cpu", get("CPU")),
                ("kernel", get("kernel")),
                ("commit", self.commit.clone()),
                ("command", self.command.clone()),
                ("minutes", format!("{:.1}", self.elapsed_s / 60.0)),
                ("load_start", get("load average")),
                ("load_end", self.load_end.clone()),
                ("how", self.how.clone()),
                ("period_ms", (quota::PERIOD_US / 1000).to_string()),
                ("groups", groups),
                ("workers", workers),
                ("keys", group(u64::from(KEYSPACE))),
                ("value_bytes", VALUE_BYTES.to_string()),
                ("warm", format!("{}", self.warm_s)),
                ("rounds", self.rounds.to_string()),
                ("seconds", format!("{}", self.seconds)),
            ],
        );
        for (i, case) in self.cases.iter().enumerate() {
            let peak = self.peak_kib.get(i).map_or("?".into(), |&k| mib(k));
            let whose = match case.program {
                Participant::Handler => format!(
                    "default `perInstanceConcurrency` {}; the handler's",
                    case.size.default_concurrency
                ),
                Participant::Floor => format!("as at {} MB; the floor's", case.size.memory_mb),
            };
            let _ = writeln!(
                s,
                "\n### {}\n\nQuota {} µs per {} µs period; {whose} peak RSS after its runs {peak}.\n",
                case.label(),
                quota::quota_us(case.size.cores),
                quota::PERIOD_US,
            );
            s.push_str(
                "| conns | req/s | p50 ms | p99 ms | CPU µs/request | CPU used (cores) | throttled periods | throttled \
                 ms/s | runs: req/s (p99 ms) |\n|--:|--:|--:|--:|--:|--:|--:|--:|---|\n",
            );
            for p in self.points_of(i) {
                let st = p.stat();
                let runs: Vec<String> = p
                    .runs
                    .iter()
                    .map(|r| format!("{:.0} ({:.1})", r.load.rps, r.load.p99_ms))
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.3} | {:.3} | {:.1} | {:.2} | {} of {} | {:.0} | {} |",
                    p.conns,
                    group(p.rps().round() as u64),
                    p.p50(),
                    p.p99(),
                    p.cpu_us(),
                    p.cores_used(),
                    group(st.throttled),
                    group(st.periods),
                    st.throttled_ns as f64 / 1e6 / p.seconds().max(1e-9),
                    runs.join(", ")
                );
            }
            if let Some(c) = self.crossing(i) {
                let beyond = self.beyond_delay(i).map_or(String::new(), |(limit, b)| {
                    format!(
                        " p99 passes {limit:.0} ms (10 ms on top of the cache's {:.0}): {}.",
                        limit - P99_LIMIT_MS,
                        b.describe()
                    )
                });
                let _ = writeln!(
                    s,
                    "\np99 passes {P99_LIMIT_MS:.0} ms: {}.{beyond} Quota used up (throttled in more than {:.0}% of \
                     the periods): {}.",
                    c.describe(),
                    THROTTLED_SHARE * 100.0,
                    self.used_up_text(i)
                );
            }
        }
        s.push_str(
            "\n### Summary\n\n| size | default concurrency | p99 passes 10 ms | quota used up | highest \
             concurrency with p99 < 10 ms | req/s there | req/s per GB |\n|---|--:|---|---|--:|--:|--:|\n",
        );
        for i in self.handler_cases() {
            let case = &self.cases[i];
            let st = self.standing(i);
            let beyond = self.beyond_delay(i);
            let beyond_crossing = beyond.map_or(String::new(), |(limit, b)| {
                format!("; {limit:.0} ms (10 ms on top of the cache): {}", b.describe())
            });
            let beyond_safe = beyond.map_or(String::new(), |(limit, b)| {
                format!(
                    " ({} under {limit:.0} ms)",
                    b.safe().map_or("none".into(), |n| n.to_string())
                )
            });
            let _ = writeln!(
                s,
                "| {} | {} | {}{beyond_crossing} | {} | {}{beyond_safe} | {} | {} |",
                case.label(),
                case.size.default_concurrency,
                self.crossing(i).map_or("–".into(), |c| c.describe()),
                self.used_up_text(i),
                st.safe.map_or("none".into(), |(n, _)| n.to_string()),
                st.safe.map_or("–".into(), |(_, r)| group(r.round() as u64)),
                st.per_gb().map_or("–".into(), |g| group(g.round() as u64)),
            );
        }
        s.push('\n');
        s.push_str(text::FLEX_READING);
        s.push('\n');
        s.push_str(&self.slow_cache());
        s.push('\n');
        s.push_str(&self.recommendation());
        let floor = self.floor_section();
        if !floor.is_empty() {
            s.push('\n');
            s.push_str(&floor);
        }
        s
    }

    /// What changes with a slow cache: Little's law on the measured CPU per
    /// request, and the measured case when there is one.
    fn slow_cache(&self) -> String {
        // The smallest plain size at the lowest concurrency: its CPU per request.
        let plain = self.plain_cases();
        let Some(&small) = plain
            .iter()
            .min_by(|&&a, &&b| self.cases[a].size.cores.total_cmp(&self.cases[b].size.cores))
        else {
            return String::new();
        };
        let size = self.cases[small].size;
        let Some(first) = self.points_of(small).first().copied() else {
            return String::new();
        };
        let slow = self
            .handler_cases()
            .into_iter()
            .find(|&i| self.cases[i].cache_delay.is_some());
        let delay_ms = slow
            .and_then(|i| self.cases[i].cache_delay)
            .map_or(5.0, |d| d.as_secs_f64() * 1000.0);
        let cpu_us = first.cpu_us();
        let n_sat = size.cores * delay_ms * 1000.0 / cpu_us.max(1e-9);
        let n_loop = size.cores * first.p50() * 1000.0 / cpu_us.max(1e-9);
        let measured = match slow {
            Some(i) => {
                let points = self.points_of(i);
                let cpu: Vec<String> = points
                    .iter()
                    .map(|p| format!("{:.0} at {}", p.cpu_us(), p.conns))
                    .collect();
                // More CPU per request at the lowest concurrency than at the cheapest: say why.
                let cheapest = points.iter().map(|p| p.cpu_us()).fold(f64::INFINITY, f64::min);
                let cpu_note = match points.first() {
                    Some(p) if p.cpu_us() > 1.25 * cheapest => format!(" {}", text::FLEX_SLOW_CPU_NOTE.trim_end()),
                    _ => String::new(),
                };
                let mut md = fill(
                    text::FLEX_SLOW_MEASURED,
                    &[
                        ("delay_ms", format!("{delay_ms:.0}")),
                        ("label", self.cases[i].label()),
                        ("cpu", format!("{}{cpu_note}", cpu.join(", "))),
                        ("used_up", self.used_up_text(i)),
                        ("computed", format!("{:.0}", n_sat.floor())),
                        ("loopback", self.crossing(small).map_or("–".into(), |c| c.describe())),
                        (
                            "limit_beyond",
                            self.beyond_delay(i).map_or("–".into(), |(l, _)| format!("{l:.0}")),
                        ),
                        (
                            "crossing_beyond",
                            self.beyond_delay(i).map_or("–".into(), |(_, b)| b.describe()),
                        ),
                        ("crossing", self.crossing(i).map_or("–".into(), |c| c.describe())),
                        (
                            "safe",
                            self.standing(i).safe.map_or("none".into(), |(n, _)| n.to_string()),
                        ),
                    ],
                );
                // Past 10 ms without running out of quota: say so.
                if let Some(Crossing::At { over, .. }) = self.crossing(i) {
                    if let Some(p) = points.iter().find(|p| p.conns == over.0) {
                        let st = p.stat();
                        if (st.throttled as f64) <= THROTTLED_SHARE * st.periods as f64 {
                            let note = fill(
                                text::FLEX_SLOW_NOT_QUOTA,
                                &[
                                    ("conns", over.0.to_string()),
                                    ("throttled", group(st.throttled)),
                                    ("periods", group(st.periods)),
                                    ("cores", format!("{:.2}", p.cores_used())),
                                ],
                            );
                            md = format!("{} {}", md.trim_end(), note);
                        }
                    }
                }
                md
            }
            None => text::FLEX_SLOW_COMPUTED.to_owned(),
        };
        fill(
            text::FLEX_SLOW,
            &[
                ("delay_ms", format!("{delay_ms:.0}")),
                ("cpu_us", format!("{cpu_us:.0}")),
                ("cores", format!("{}", size.cores)),
                ("memory", size.memory_mb.to_string()),
                ("conns", first.conns.to_string()),
                ("p50", format!("{:.2}", first.p50())),
                ("n_sat", format!("{:.0}", n_sat.floor())),
                ("n_loop", format!("{n_loop:.1}")),
                ("measured", measured.trim_end().to_owned()),
            ],
        )
    }

    /// The recommended size and `perInstanceConcurrency`, with the figures
    /// they come from.
    fn recommendation(&self) -> String {
        let plain = self.plain_cases();
        let standings: Vec<Standing> = plain.iter().map(|&i| self.standing(i)).collect();
        let per_size: Vec<String> = plain
            .iter()
            .zip(&standings)
            .map(|(&i, st)| match st.safe {
                Some((n, rps)) => format!(
                    "{} MB: {n} connections, {} req/s, {} req/s per GB",
                    st.memory_mb,
                    group(rps.round() as u64),
                    group(st.per_gb().unwrap_or(0.0).round() as u64)
                ),
                None => format!(
                    "{} MB: none, p99 passes 10 ms {}",
                    st.memory_mb,
                    self.crossing(i).map_or("–".into(), |c| c.describe())
                ),
            })
            .collect();
        let bound: Vec<String> = plain
            .iter()
            .filter(|&&i| self.most_cores(i) < MACHINE_BOUND * self.cases[i].size.cores)
            .map(|&i| {
                format!(
                    "{} never used more than {:.2} of its {} cores",
                    self.cases[i].label(),
                    self.most_cores(i),
                    self.cases[i].size.cores
                )
            })
            .collect();
        let bound = if bound.is_empty() {
            String::new()
        } else {
            let note = fill(text::FLEX_MACHINE_BOUND, &[("which", bound.join("; "))]);
            format!("\n{}", note.trim_end())
        };
        match recommend(&standings) {
            Some(k) => {
                let (n, _) = standings[k].safe.unwrap_or_default();
                let size = self.cases[plain[k]].size;
                let md = fill(
                    text::FLEX_RECOMMEND,
                    &[
                        ("memory", size.memory_mb.to_string()),
                        ("n", n.to_string()),
                        ("default", size.default_concurrency.to_string()),
                        ("per_size", per_size.join("; ")),
                        ("as_good", format!("{:.0}", AS_GOOD * 100.0)),
                    ],
                );
                format!("{}{bound}\n", md.trim_end())
            }
            None => format!(
                "**Recommendation: none from this run.** No size kept p99 under {P99_LIMIT_MS:.0} ms at any \
                 concurrency measured ({}).\n",
                per_size.join("; ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crossing: before the first point over the limit, not after a
    /// dip back under; none; at the first point.
    #[test]
    fn finds_the_crossing() {
        let points = [(16, 4.0), (4, 1.0), (32, 12.0), (64, 9.0), (256, 30.0)];
        let c = Crossing::find(&points, 10.0).unwrap();
        assert_eq!(
            c,
            Crossing::At {
                under: Some((16, 4.0)),
                over: (32, 12.0)
            }
        );
        assert_eq!(c.safe(), Some(16));
        assert_eq!(c.describe(), "between 16 (p99 4.0 ms) and 32 (p99 12.0 ms)");
        let never = Crossing::find(&[(4, 1.0), (256, 9.9)], 10.0).unwrap();
        assert_eq!(never, Crossing::Never { up_to: 256 });
        assert_eq!(never.safe(), Some(256));
        assert_eq!(never.describe(), "not reached up to 256");
        let already = Crossing::find(&[(4, 70.0), (16, 80.0)], 10.0).unwrap();
        assert_eq!(already.safe(), None);
        assert_eq!(already.describe(), "already at 4 (p99 70.0 ms)");
        assert_eq!(Crossing::find(&[], 10.0), None);
        // Exactly at the limit is not past it.
        assert_eq!(Crossing::find(&[(4, 10.0)], 10.0), Some(Crossing::Never { up_to: 4 }));
    }

    /// The quota is used up where more than a tenth of the periods were
    /// throttled.
    #[test]
    fn finds_where_the_quota_runs_out() {
        let st = |throttled, periods| CpuStat {
            periods,
            throttled,
            throttled_ns: 0,
        };
        let points = [(32, st(51, 91)), (4, st(0, 90)), (16, st(1, 90)), (64, st(89, 90))];
        assert_eq!(quota_used_up(&points), Some(32));
        assert_eq!(quota_used_up(&[(4, st(9, 90)), (16, st(2, 20))]), None);
        assert_eq!(quota_used_up(&[(4, st(90, 90))]), Some(4));
        assert_eq!(quota_used_up(&[]), None);
    }

    /// The most req/s per GB wins; within 10% of it, the larger size; a
    /// size without a safe concurrency never.
    #[test]
    fn recommends_a_size() {
        let st = |memory_mb, safe| Standing { memory_mb, safe };
        // 512: 2000/0.5 = 4000 per GB; 2048: 7800/2 = 3900 (within 10%); 4096: 9000/4 = 2250.
        let close = [
            st(512, Some((4, 2000.0))),
            st(2048, Some((16, 7800.0))),
            st(4096, Some((32, 9000.0))),
        ];
        assert_eq!(recommend(&close), Some(1));
        let far = [st(512, Some((4, 2000.0))), st(2048, Some((4, 5000.0)))];
        assert_eq!(recommend(&far), Some(0));
        let none_small = [st(512, None), st(2048, Some((4, 5000.0))), st(4096, Some((16, 9000.0)))];
        assert_eq!(recommend(&none_small), Some(2));
        assert_eq!(recommend(&[st(512, None)]), None);
        assert_eq!(recommend(&[]), None);
    }

    fn results() -> FlexResults {
        let run = |rps: f64, p99_ms: f64, cores: f64| Run {
            load: LoadResult {
                rps,
                p50_ms: 0.5,
                p99_ms,
                errors: 0,
            },
            cpu: Duration::from_secs_f64(cores),
            wall: Duration::from_secs(1),
            requests: rps,
            stat: CpuStat {
                periods: 10,
                throttled: 5,
                throttled_ns: 300_000_000,
            },
        };
        // The floors: at 0.25 core twice the handler's req/s on half its CPU
        // per request; at 1 core ahead at 16 connections only, and under
        // 10 ms there (a better standing than any size's, were it one).
        let cases = vec![
            Case::handler(SIZES[0]),
            Case::handler(SIZES[1]),
            Case {
                cache_delay: Some(Duration::from_millis(5)),
                ..Case::handler(SIZES[0])
            },
            Case::floor(SIZES[0]),
            Case::floor(SIZES[1]),
        ];
        let mut points = Vec::new();
        for (case, rps, p99s, cores) in [
            (0, [2500.0; 2], [20.0, 30.0], 0.25),
            (1, [2500.0; 2], [2.0, 15.0], 0.6),
            (2, [2500.0; 2], [6.0, 40.0], 0.25),
            (3, [5000.0; 2], [10.0, 12.0], 0.25),
            (4, [2000.0, 5000.0], [1.0, 5.0], 0.5),
        ] {
            for ((conns, rps), p99) in [4, 16].into_iter().zip(rps).zip(p99s) {
                points.push(FlexPoint {
                    case,
                    conns,
                    runs: vec![run(rps, p99, cores); 3],
                });
            }
        }
        FlexResults {
            cases,
            rounds: 3,
            warm_s: 1.0,
            seconds: 1.0,
            points,
            how: Hierarchy::V1("/sys/fs/cgroup/cpu".into()).describe(),
            groups: vec!["/sys/fs/cgroup/cpu/bench-flex-1-0".into()],
            workers: vec![1; 5],
            peak_kib: vec![10_000; 5],
            commit: "abc1234".into(),
            command: "cargo run --release -p bench -- --flex".into(),
            load_end: "1.00 1.00 1.00".into(),
            elapsed_s: 120.0,
            ..FlexResults::default()
        }
    }

    /// The section renders every template with a row per point, the
    /// crossings, the slow cache and the recommendation.
    #[test]
    fn section_renders() {
        let r = results();
        r.check().unwrap();
        let md = r.section();
        assert!(md.starts_with("## Flex Consumption sizes\n"), "{md}");
        assert!(!md.contains("{{"), "{md}");
        assert!(md.contains("### 512 MB (0.25 core)\n"), "{md}");
        let row =
            "| 4 | 2,500 | 0.500 | 20.000 | 100.0 | 0.25 | 15 of 30 | 300 | 2500 (20.0), 2500 (20.0), 2500 (20.0) |";
        assert!(md.contains(row), "{md}");
        let crossing =
            "p99 passes 10 ms: already at 4 (p99 20.0 ms). Quota used up (throttled in more than 10% of the \
                        periods): from 4.";
        assert!(md.contains(crossing), "{md}");
        assert!(
            md.contains("2048 MB (1 core) never used more than 0.60 of its 1 core"),
            "{md}"
        );
        assert!(!md.contains("not the quota but"), "{md}");
        assert!(
            md.contains("p99 passes 10 ms: between 4 (p99 2.0 ms) and 16 (p99 15.0 ms)."),
            "{md}"
        );
        assert!(md.contains("### 512 MB (0.25 core), cache +5 ms"), "{md}");
        let beyond = "p99 passes 15 ms (10 ms on top of the cache's 5): between 4 (p99 6.0 ms) and 16 (p99 40.0 ms).";
        assert!(md.contains(beyond), "{md}");
        assert!(md.contains("| 4 (4 under 15 ms) |"), "{md}");
        // 0.25 core × 5 ms / 100 µs = 12.5 in flight.
        assert!(md.contains("≈ 12 in flight"), "{md}");
        assert!(
            md.contains("**Recommendation: 2048 MB with `perInstanceConcurrency` 4.**"),
            "{md}"
        );
        assert!(md.contains("perInstanceConcurrency=4"), "{md}");
    }

    /// A slow cache past 10 ms with quota to spare says the quota is not
    /// what took it there.
    #[test]
    fn slow_cache_past_10_ms_unthrottled() {
        let mut r = results();
        for p in r.points.iter_mut().filter(|p| p.case == 2 && p.conns == 16) {
            for run in &mut p.runs {
                run.stat.throttled = 0;
            }
        }
        let md = r.section();
        assert!(
            md.contains("At 16 connections it was throttled in 0 of 30 periods"),
            "{md}"
        );
    }

    /// A handler over its quota fails the check.
    #[test]
    fn over_the_quota_fails() {
        let mut r = results();
        r.points[0].runs[0].cpu = Duration::from_secs_f64(0.5);
        assert!(r.check().unwrap_err().to_string().contains("the quota did not apply"));
    }

    /// The floor's cases get their own tables, and stay out of the sizes'
    /// summary, the machine-bound note and the recommendation (the floor at
    /// 1 core would win it).
    #[test]
    fn floor_cases_are_not_sizes() {
        let md = results().section();
        assert!(
            md.contains(
                "### floor, 0.25 core\n\nQuota 25000 µs per 100000 µs period; as at 512 MB; the floor's peak RSS after \
                 its runs 9.8 MiB.\n"
            ),
            "{md}"
        );
        let summary = md.split_once("### Summary").map_or("", |(_, after)| after);
        let summary = summary.split_once("How to read it").map_or("", |(table, _)| table);
        assert!(summary.contains("| 2048 MB (1 core) | 16 |"), "{summary}");
        assert!(!summary.contains("floor"), "{summary}");
        assert!(!md.contains("floor, 1 core never used"), "{md}");
        assert!(
            md.contains("**Recommendation: 2048 MB with `perInstanceConcurrency` 4.**"),
            "{md}"
        );
    }

    /// The handler against the floor of the same quota, after the
    /// recommendation: a row per quota and concurrency, and the reading;
    /// without a floor case, no subsection.
    #[test]
    fn floor_subsection_compares() {
        let md = results().section();
        let floor = md
            .split_once("### The handler against the floor under the same quota\n")
            .map(|(_, after)| after)
            .unwrap_or_else(|| panic!("no floor subsection: {md}"));
        assert!(
            floor.contains("under the quota of 0.25 core (512 MB) and 1 core (2048 MB)"),
            "{floor}"
        );
        assert!(floor.contains("GET at the same concurrencies (4, 16)"), "{floor}");
        assert!(
            floor.contains("| 0.25 core | 4 | 2,500 | 5,000 | 0.50 | 100.0 | 50.0 | 2.00 | 20.000 | 10.000 |"),
            "{floor}"
        );
        assert!(
            floor.contains("| 1 core | 16 | 2,500 | 5,000 | 0.50 | 240.0 | 100.0 | 2.40 | 15.000 | 5.000 |"),
            "{floor}"
        );
        assert!(
            floor.contains("At 0.25 core the handler served 50% of the floor's requests per second, using 2.00× its"),
            "{floor}"
        );
        assert!(floor.contains("At 4 connections the handler served more"), "{floor}");
        let mut r = results();
        r.cases.truncate(3);
        r.points.retain(|p| p.case < 3);
        assert!(!r.section().contains("against the floor"));
    }

    /// A floor over its quota fails the check, named as the floor.
    #[test]
    fn floor_over_the_quota_fails() {
        let mut r = results();
        let p = r.points.iter_mut().find(|p| p.case == 3).unwrap();
        p.runs[0].cpu = Duration::from_secs_f64(0.5);
        let e = r.check().unwrap_err().to_string();
        assert!(
            e.contains("flex floor, 0.25 core at 4 connections: the floor used 0.50 cores"),
            "{e}"
        );
    }
}
