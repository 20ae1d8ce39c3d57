//! Start and size: how soon a cold process is ready and gives its first
//! cache answer, with that answer's steps from the handler's own spans
//! (token fetch, connect, PING); its memory after a load and at 256
//! connections; the release binary's size and what it is made of.
//!
//! The steps come from separate cold starts with OTLP export on (to
//! `devhost`'s receiver), taken in turn with the plain ones, so that export
//! never weighs on the plain figures the targets are read from.
//!
//! `breakdown` turns spans into steps, `size` measures the binary, `report`
//! writes the sections.

mod breakdown;
mod report;
pub mod size;

pub use breakdown::Steps;
pub use report::own_lines;
pub use size::Size;

use crate::client::Conn;
use crate::load;
use crate::rig::{key, FileRss, Program, Rig, Server, BENCH_USER, KEYSPACE, VALUE_BYTES};
use crate::scenarios::Side;
use anyhow::{ensure, Context};
use devhost::otlp::{Behaviour, Receiver};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Connections of the memory run.
pub const MEMORY_CONNS: u64 = 64;
/// Connections of the memory run's wide part (`wrk`).
pub const WIDE_CONNS: u32 = 256;

/// What the start and size part runs.
#[derive(Debug, Clone)]
pub struct StartPlan {
    /// Cold starts of each server as it runs by default (no export).
    pub cold_starts: usize,
    /// Cold starts of the handler with OTLP export on, for the steps.
    pub traced_starts: usize,
    /// Requests of the memory run, over [`MEMORY_CONNS`] connections.
    pub memory_requests: u64,
    /// Length of the GET run, then of the PUT run, at [`WIDE_CONNS`]
    /// connections after it.
    pub wide_run: Duration,
    /// Whether to run `cargo bloat` (when it is installed).
    pub bloat: bool,
}

/// Cold starts of one server, ms since the spawn.
#[derive(Debug, Clone, Default)]
pub struct ColdStart {
    /// To readiness (`GET /` answers), each plain start.
    pub ready_ms: Vec<f64>,
    /// To the first 200 of `/api/ping` (token, TLS, AUTH, PING), each plain start.
    pub first_ms: Vec<f64>,
    /// The traced starts' steps (the handler only).
    pub traced: Vec<Steps>,
}

/// Resident memory of one fresh process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// `VmRSS` once started, connected and idle for a second.
    pub idle_rss: u64,
    /// `VmHWM` (peak) at the same moment.
    pub idle_hwm: u64,
    /// `VmRSS` after the requests.
    pub after_rss: u64,
    /// `VmHWM` after the requests.
    pub after_hwm: u64,
    /// Requests sent (half GET, half PUT, [`MEMORY_CONNS`] connections).
    pub requests: u64,
    /// `VmRSS` after the runs at [`WIDE_CONNS`] connections.
    pub wide_rss: u64,
    /// `VmHWM` after them: the peak at [`WIDE_CONNS`] connections.
    pub wide_hwm: u64,
    /// Requests those runs completed.
    pub wide_requests: u64,
    /// Connections to Redis the process held after them.
    pub redis_connections: usize,
    /// Of `after_rss`, the file pages: its binary and its libraries.
    pub after_files: FileRss,
}

/// Everything the start and size part measured.
#[derive(Debug, Clone, Default)]
pub struct StartResults {
    /// What ran.
    pub plan: Option<StartPlan>,
    /// Cold starts of the handler and (when measured) the Python peer.
    pub cold: Vec<(Side, ColdStart)>,
    /// Memory of the handler and (when measured) the Python peer.
    pub memory: Vec<(Side, Memory)>,
    /// The release binary.
    pub size: Option<Size>,
    /// `VmHWM` of the handler that served every throughput run, KiB (0
    /// when there were none).
    pub throughput_peak_kib: u64,
    /// `(name, value)` lines about the machine, as `machine::describe`.
    pub machine: Vec<(&'static str, String)>,
    /// The command that ran.
    pub command: String,
    /// The commit measured.
    pub commit: String,
}

/// Cold starts, memory and size of the handler (`handler_bin`), the
/// floor's memory (what the least server here takes, beside the handler's
/// targets) and, when given, the Python peer's start and memory.
pub fn run(
    rig: &Rig,
    lua: &Path,
    handler: &Program,
    handler_bin: &Path,
    floor: &Program,
    python: Option<&Program>,
    plan: &StartPlan,
) -> anyhow::Result<StartResults> {
    let mut out = StartResults {
        plan: Some(plan.clone()),
        ..StartResults::default()
    };
    eprintln!(
        "bench: cold start ({} plain, {} with OTLP export on for the steps)",
        plan.cold_starts, plan.traced_starts
    );
    let [cold] = cold_starts(rig, [handler], plan.cold_starts, plan.traced_starts)?;
    out.cold.push((Side::Handler, cold));
    eprintln!("bench: memory");
    out.memory.push((Side::Handler, memory(rig, lua, handler, plan)?));
    out.memory.push((Side::Floor, memory(rig, lua, floor, plan)?));
    if let Some(p) = python {
        let [cold] = cold_starts(rig, [p], plan.cold_starts, 0)?;
        out.cold.push((Side::Python, cold));
        out.memory.push((Side::Python, memory(rig, lua, p, plan)?));
    }
    out.size = Some(size::measure(&rig.root, handler_bin, plan.bloat)?);
    Ok(out)
}

/// `--start --before <handler>`: this handler and `before` (programs and
/// binaries) started in turn, then the memory of each, side by side as
/// Markdown; nothing is written.
pub fn compare(
    rig: &Rig,
    lua: &Path,
    this: (&Program, &Path),
    before: (&Program, &Path),
    plan: &StartPlan,
) -> anyhow::Result<String> {
    eprintln!(
        "bench: cold start of both handlers in turn ({} plain, {} with OTLP export on, each)",
        plan.cold_starts, plan.traced_starts
    );
    let cold = cold_starts(rig, [this.0, before.0], plan.cold_starts, plan.traced_starts)?;
    eprintln!("bench: memory of both handlers");
    let mut mem = Vec::new();
    for program in [this.0, before.0] {
        mem.push(memory(rig, lua, program, plan)?);
    }
    let sizes = [std::fs::metadata(this.1)?.len(), std::fs::metadata(before.1)?.len()];
    Ok(report::comparison(&cold, &mem, sizes))
}

/// Starts each of `programs` `plain` times as it runs by default and
/// `traced` times with OTLP export on, polling every millisecond. Every
/// round starts each program once of each kind; the kinds and the programs
/// take turns going first, so that drift hits all alike.
pub fn cold_starts<const N: usize>(
    rig: &Rig,
    programs: [&Program; N],
    plain: usize,
    traced: usize,
) -> anyhow::Result<[ColdStart; N]> {
    let settings = settings(rig);
    let receiver = match traced {
        0 => None,
        _ => Some(rig.rt.block_on(Receiver::start(Behaviour::Accept))?),
    };
    let mut out: [ColdStart; N] = std::array::from_fn(|_| ColdStart::default());
    for round in 0..plain.max(traced) {
        for export in [round % 2 == 1, round % 2 == 0] {
            for i in 0..N {
                let i = if round % 2 == 0 { i } else { N - 1 - i };
                let c = &mut out[i];
                match &receiver {
                    Some(receiver) if export && round < traced => {
                        let show = c.traced.is_empty();
                        c.traced
                            .push(traced_start(rig, programs[i], &settings, receiver, show)?);
                    }
                    _ if !export && round < plain => {
                        let mut server = Server::spawn_ready(programs[i], &rig.root, &settings)?;
                        c.ready_ms.push(ms(server.started().elapsed()));
                        server.poll(Duration::from_secs(30), "/api/ping", |s| s == 200)?;
                        c.first_ms.push(ms(server.started().elapsed()));
                    }
                    _ => continue,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(out)
}

/// One cold start with OTLP export on to `receiver`: the bench's own
/// times, then the steps from the spans the process exported (and, with
/// `show`, the warm-up's spans drawn on stderr).
fn traced_start(
    rig: &Rig,
    program: &Program,
    settings: &[(String, String)],
    receiver: &Receiver,
    show: bool,
) -> anyhow::Result<Steps> {
    let mut settings = settings.to_vec();
    settings.extend(
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            // Sent soon after they end, so the bench need not wait long.
            ("OTEL_BSP_SCHEDULE_DELAY", "20".to_owned()),
            ("OTEL_METRICS_EXPORTER", "none".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let mut server = Server::spawn_ready(program, &rig.root, &settings)?;
    let spawn = unix_ns(SystemTime::now()) - server.started().elapsed().as_nanos() as u64;
    let ready = ms(server.started().elapsed());
    server.poll(Duration::from_secs(30), "/api/ping", |s| s == 200)?;
    let first = ms(server.started().elapsed());
    let warm_up = rig
        .rt
        .block_on(receiver.wait_for_span(
            |s| s.name == "warm-up" && s.start_unix_nano >= spawn,
            Duration::from_secs(10),
        ))
        .context("the traced start's warm-up span")?;
    let spans = receiver.spans();
    if show {
        eprintln!(
            "bench: a traced start's warm-up:\n{}",
            devhost::otlp::waterfall(&spans, &warm_up.span_id)
        );
    }
    let timed: Vec<breakdown::Timed> = spans
        .iter()
        .map(|s| breakdown::Timed {
            name: &s.name,
            start: s.start_unix_nano,
            end: s.end_unix_nano,
        })
        .collect();
    breakdown::steps(spawn, &timed, ready, first)
}

/// Starts `program` fresh, reads its memory idle, sends the plan's requests
/// (half GET, half PUT over the key space, [`MEMORY_CONNS`] keep-alive
/// connections) and reads it again; then runs `wrk` GET and PUT at
/// [`WIDE_CONNS`] connections and reads it a third time.
pub fn memory(rig: &Rig, lua: &Path, program: &Program, plan: &StartPlan) -> anyhow::Result<Memory> {
    let floor = matches!(program, Program::Floor(_));
    let settings = if floor { rig.floor_settings() } else { settings(rig) };
    let server = Server::start(program, &rig.root, &settings)?;
    std::thread::sleep(Duration::from_secs(1));
    let (idle_rss, idle_hwm) = server.rss_kib()?;
    let per_conn = plan.memory_requests.div_ceil(MEMORY_CONNS);
    let port = server.port;
    let workers: Vec<_> = (0..MEMORY_CONNS)
        .map(|t| std::thread::spawn(move || requests(port, t, per_conn)))
        .collect();
    let mut bad = 0;
    for w in workers {
        bad += w
            .join()
            .map_err(|_| anyhow::anyhow!("a memory-run thread panicked"))??;
    }
    ensure!(bad == 0, "{bad} requests of the memory run were not answered 2xx");
    std::thread::sleep(Duration::from_millis(500));
    let (after_rss, after_hwm) = server.rss_kib()?;
    let after_files = server.file_rss_kib()?;
    let mut wide_requests = 0;
    for method in ["GET", "PUT"] {
        let r = load::wrk(lua, port, method, WIDE_CONNS, plan.wide_run)?;
        ensure!(
            r.errors == 0,
            "{} errors of {method} at {WIDE_CONNS} connections in the memory run",
            r.errors
        );
        wide_requests += (r.rps * plan.wide_run.as_secs().max(1) as f64).round() as u64;
    }
    std::thread::sleep(Duration::from_millis(500));
    let (wide_rss, wide_hwm) = server.rss_kib()?;
    Ok(Memory {
        idle_rss,
        idle_hwm,
        after_rss,
        after_hwm,
        requests: per_conn * MEMORY_CONNS,
        wide_rss,
        wide_hwm,
        wide_requests,
        after_files,
        redis_connections: if floor {
            rig.user_connections(BENCH_USER)?
        } else {
            rig.identity_connections()?
        },
    })
}

/// Where Debian keeps the platform's roots, one file per certificate.
const CERT_DIR: &str = "/etc/ssl/certs";

/// The servers' settings, with `SSL_CERT_DIR` beside `SSL_CERT_FILE` (the
/// stand-ins' CA) where [`CERT_DIR`] exists: a client that loads the
/// platform's roots through `rustls-native-certs` (as azure_core's own HTTP
/// client does when it is built) then loads them all, as it does where
/// `SSL_CERT_FILE` is not set (in Azure); with `SSL_CERT_FILE` alone it
/// would load that one CA and hide the cost.
fn settings(rig: &Rig) -> Vec<(String, String)> {
    let mut settings = rig.app_settings(&rig.identity, 300);
    if Path::new(CERT_DIR).is_dir() {
        settings.push(("SSL_CERT_DIR".to_owned(), CERT_DIR.to_owned()));
    }
    settings
}

/// `n` requests on one connection, alternating GET and PUT over keys drawn
/// from a generator seeded with `seed`; how many were not answered 2xx.
fn requests(port: u16, seed: u64, n: u64) -> anyhow::Result<u64> {
    let mut conn = Conn::connect(port)?;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (seed + 1);
    let body = [b'm'; VALUE_BYTES];
    let mut bad = 0;
    for i in 0..n {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let path = format!("/api/cache/{}", key((rng >> 33) as u32 % KEYSPACE));
        let (method, body) = if i % 2 == 0 {
            ("GET", &[][..])
        } else {
            ("PUT", &body[..])
        };
        // The handler answers a PUT 200 with the item, the floor 204.
        if !(200..300).contains(&conn.request(method, &path, body)?.0) {
            bad += 1;
        }
    }
    Ok(bad)
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
