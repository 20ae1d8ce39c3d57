//! Flame graphs: `perf record -g` (the `cpu-clock` event: this machine
//! has no hardware counters) of one server under GET at full speed, its
//! samples folded with `inferno`'s perf collapser, the frames that spent
//! the most time themselves (self time: the stack's last frame), and the
//! SVG drawn with `inferno` into `bench/results/flame-<server>.svg`.

use super::counts::{around, scratch};
use super::ProfilePlan;
use crate::load;
use crate::rig::{Program, Rig, Server};
use crate::scenarios::{print_point, Op, Side};
use anyhow::{ensure, Context};
use inferno::collapse::Collapse;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

/// Frames listed by self time.
pub const TOP: usize = 10;

/// One server's flame graph. Its counts are nanoseconds of CPU: each
/// sample weighs its period, as `inferno` folds them (about 1 ms at 999 Hz).
#[derive(Debug, Clone)]
pub struct Flame {
    /// Which server: the handler or the floor.
    pub side: Side,
    /// CPU sampled in its process, ns.
    pub total_ns: u64,
    /// Of which in kernel frames (self time), ns.
    pub kernel_ns: u64,
    /// The [`TOP`] frames by self time, with their CPU, ns.
    pub top: Vec<(String, u64)>,
    /// The SVG, relative to the repository root.
    pub svg: String,
}

/// Records `program` (a build with line tables and frame pointers) under
/// GET and writes its flame graph.
pub fn record(
    rig: &Rig,
    lua: &std::path::Path,
    side: Side,
    program: &Program,
    plan: &ProfilePlan,
) -> anyhow::Result<Flame> {
    let settings = match side {
        Side::Floor => rig.floor_settings(),
        _ => rig.app_settings(&rig.identity, 300),
    };
    let server = Server::start(program, &rig.root, &settings)?;
    load::wrk(lua, server.port, "GET", plan.conns, plan.timing.warm)?;
    let data = scratch(&rig.root, "perf.data")?;
    let pid = server.pid().to_string();
    let mut perf = Command::new("perf");
    perf.args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-p", &pid, "-o"])
        .arg(&data);
    let r = around(&rig.root, &mut perf, Duration::from_millis(300), || {
        load::wrk(lua, server.port, "GET", plan.conns, plan.timing.measure)
    })?;
    print_point("perf record -g", Op::Get, plan.conns, &r);
    ensure!(r.errors == 0, "perf record run: {} failed requests", r.errors);
    drop(server);
    // No inline frames: resolving them runs addr2line for each address,
    // minutes for a few seconds of samples.
    let script = Command::new("perf")
        .args(["script", "--no-inline", "-i"])
        .arg(&data)
        .output()
        .context("running perf script")?;
    ensure!(
        script.status.success(),
        "perf script failed: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    let folded = fold(&script.stdout)?;
    let name = if side == Side::Floor { "floor" } else { "handler" };
    let svg = format!("bench/results/flame-{name}.svg");
    let title = format!(
        "{}: GET at {} connections, perf record -g, {}",
        side.label(),
        plan.conns,
        crate::machine::now_utc()
    );
    std::fs::create_dir_all(rig.root.join("bench/results"))?;
    std::fs::write(rig.root.join(&svg), draw(&folded, &title)?)?;
    eprintln!("bench: wrote {svg}");
    let (total_ns, top) = top_self(&folded, TOP);
    Ok(Flame {
        side,
        total_ns,
        kernel_ns: kernel_self(&folded),
        top,
        svg,
    })
}

/// `perf script`'s output folded into one line per stack: `frame;frame count`,
/// kernel frames marked `_[k]`.
fn fold(script: &[u8]) -> anyhow::Result<String> {
    let mut options = inferno::collapse::perf::Options::default();
    options.annotate_kernel = true;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::from(options)
        .collapse(script, &mut folded)
        .context("folding perf script's output")?;
    Ok(String::from_utf8_lossy(&folded).into_owned())
}

/// The flame graph of `folded` as SVG, colours from the frames' names (the
/// same frame keeps its colour from one run to the next).
fn draw(folded: &str, title: &str) -> anyhow::Result<Vec<u8>> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    // Counts are ns of CPU (sample periods): shown as µs.
    options.count_name = "µs".to_owned();
    options.factor = 1e-3;
    options.hash = true;
    options.deterministic = true;
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg).context("drawing the flame graph")?;
    Ok(svg)
}

/// Each stack of `folded` (`frame;frame count` lines) as its last frame
/// and its count; lines of another form are left out.
fn leaves(folded: &str) -> impl Iterator<Item = (&str, u64)> {
    folded.lines().filter_map(|line| {
        let (stack, count) = line.trim_end().rsplit_once(' ')?;
        let count = count.parse::<u64>().ok()?;
        Some((stack.rsplit(';').next().unwrap_or(stack), count))
    })
}

/// The whole count of `folded` stacks, and the `n` frames with the most
/// self time (the counts of the stacks they end), the most first (ties by
/// name).
pub fn top_self(folded: &str, n: usize) -> (u64, Vec<(String, u64)>) {
    let mut by_frame: HashMap<&str, u64> = HashMap::new();
    let mut total = 0;
    for (leaf, count) in leaves(folded) {
        *by_frame.entry(leaf).or_default() += count;
        total += count;
    }
    let mut top: Vec<(String, u64)> = by_frame.into_iter().map(|(f, c)| (f.to_owned(), c)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(n);
    (total, top)
}

/// The count of `folded` stacks that end in a kernel frame (`_[k]`).
fn kernel_self(folded: &str) -> u64 {
    leaves(folded)
        .filter(|(leaf, _)| leaf.ends_with("_[k]"))
        .map(|(_, count)| count)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Self time is the stack's last frame's, summed over the stacks it
    /// ends, the most first; a frame in the middle of a stack gets none;
    /// lines that are not `stack count` are skipped.
    #[test]
    fn top_by_self_time() {
        let folded = "\
handler;main;poll;read 5
handler;main;poll;epoll_wait_[k] 7
handler;main;write_[k] 3
handler;main;poll;read;memcpy 4
floor;main;read 2
not a stack
handler;main;poll
";
        let (total, top) = top_self(folded, 3);
        assert_eq!(total, 21);
        assert_eq!(
            top,
            vec![
                ("epoll_wait_[k]".to_owned(), 7),
                ("read".to_owned(), 7),
                ("memcpy".to_owned(), 4)
            ]
        );
        assert_eq!(top_self("", 10), (0, vec![]));
        assert_eq!(kernel_self(folded), 10);
    }

    /// Folded stacks of `perf script`'s output, and a flame graph of them.
    #[test]
    fn folds_and_draws() {
        let script = "\
handler 100/101 [000] 1.000001: 1001001 cpu-clock:
\tffffffff8223b5a6 do_syscall_64+0x46 ([kernel.kallsyms])
\t55d0a1 handler::serve+0x10 (/bin/handler)
\t55d0a0 main+0x20 (/bin/handler)

handler 100/101 [000] 1.001002: 1001001 cpu-clock:
\t55d0a1 handler::serve+0x10 (/bin/handler)
\t55d0a0 main+0x20 (/bin/handler)

";
        let folded = fold(script.as_bytes()).unwrap();
        assert!(
            folded.contains("handler;main;handler::serve;do_syscall_64_[k] 1"),
            "{folded}"
        );
        assert!(folded.contains("handler;main;handler::serve 1"), "{folded}");
        let svg = String::from_utf8(draw(&folded, "a title").unwrap()).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("a title") && svg.contains("do_syscall_64"));
    }
}
