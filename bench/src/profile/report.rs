//! The "Where the time goes" section of `BENCHMARKS.md`: per request, the
//! handler against the floor; what each experiment saved; the flame
//! graphs' top frames.

use super::flame::TOP;
use super::{Allocs, Experiment, ProfileResults};
use crate::rig::KEYSPACE;
use crate::scenarios::{Op, Side};
use crate::stats::group;
use crate::template::{fill, text};
use std::fmt::Write;

/// Calls listed by strace's split.
const STRACE_ROWS: usize = 8;
/// Longest frame name shown in the top frames.
const FRAME_CHARS: usize = 90;

/// The four columns of the per-request table.
const COLUMNS: [(Side, Op); 4] = [
    (Side::Handler, Op::Get),
    (Side::Floor, Op::Get),
    (Side::Handler, Op::Put),
    (Side::Floor, Op::Put),
];

impl ProfileResults {
    fn cpu_of(&self, side: Side, op: Op) -> Option<(f64, Option<f64>)> {
        let p = self.cpu.iter().find(|p| p.side == side && p.op == op)?;
        Some((p.result.rps, p.cpu_us))
    }

    fn allocs_of(&self, side: Side, op: Op) -> Option<Allocs> {
        find(&self.allocs, side, op).copied()
    }

    /// The handler's and the floor's CPU per GET, µs.
    fn get_cpu(&self) -> Option<(f64, f64)> {
        Some((
            self.cpu_of(Side::Handler, Op::Get)?.1?,
            self.cpu_of(Side::Floor, Op::Get)?.1?,
        ))
    }

    /// The section, ending with a newline.
    pub fn section(&self) -> String {
        let Some(plan) = &self.plan else {
            return String::new();
        };
        let secs = |d: std::time::Duration| d.as_secs_f64().to_string();
        let mut values = crate::machine::stamp(&self.machine, &self.commit, &self.command);
        values.extend([
            ("conns", plan.conns.to_string()),
            ("keys", group(u64::from(KEYSPACE))),
            ("seconds", secs(plan.timing.measure)),
            ("warm", secs(plan.timing.warm)),
        ]);
        let mut s = fill(text::PROFILE, &values);
        self.per_request(&mut s);
        self.strace_split(&mut s);
        for skipped in &self.skipped {
            let _ = writeln!(s, "\nNot measured in this run: {skipped}.");
        }
        if !self.experiments.is_empty() {
            s.push('\n');
            s.push_str(&fill(
                text::PROFILE_EXPERIMENTS,
                &[
                    ("conns", plan.conns.to_string()),
                    ("rounds", plan.rounds.to_string()),
                    ("seconds", secs(plan.experiment_timing.measure)),
                    ("warm", secs(plan.experiment_timing.warm)),
                ],
            ));
            self.experiments_table(&mut s);
        }
        if !self.flames.is_empty() {
            s.push('\n');
            s.push_str(&fill(
                text::PROFILE_FLAME,
                &[
                    ("conns", plan.conns.to_string()),
                    ("seconds", secs(plan.timing.measure)),
                    ("top", TOP.to_string()),
                ],
            ));
            self.flame_tables(&mut s);
        }
        s
    }

    /// The rows of the per-request table, then a blank line.
    fn per_request(&self, s: &mut String) {
        type Cell<'a> = Box<dyn Fn(Side, Op) -> Option<f64> + 'a>;
        let rows: [(&str, Cell, usize); 6] = [
            (
                "req/s (the CPU runs)",
                Box::new(|side, op| Some(self.cpu_of(side, op)?.0)),
                0,
            ),
            ("CPU µs", Box::new(|side, op| self.cpu_of(side, op)?.1), 1),
            (
                "heap allocations",
                Box::new(|side, op| Some(self.allocs_of(side, op)?.count)),
                1,
            ),
            (
                "heap bytes allocated",
                Box::new(|side, op| Some(self.allocs_of(side, op)?.bytes)),
                0,
            ),
            (
                "system calls (`perf stat`, full speed)",
                Box::new(|side, op| find(&self.syscalls, side, op).copied()),
                2,
            ),
            (
                "system calls (`strace -c -f`, slowed)",
                Box::new(|side, op| Some(find(&self.strace, side, op)?.total)),
                2,
            ),
        ];
        for (name, cell, decimals) in rows {
            let _ = write!(s, "| {name} ");
            for op in [Op::Get, Op::Put] {
                let (h, f) = (cell(Side::Handler, op), cell(Side::Floor, op));
                let _ = write!(
                    s,
                    "| {} | {} | {} ",
                    number(h, decimals),
                    number(f, decimals),
                    match (h, f) {
                        (Some(h), Some(f)) if f > 0.0 => format!("{:.2}×", h / f),
                        _ => "–".to_owned(),
                    }
                );
            }
            s.push_str("|\n");
        }
        s.push('\n');
    }

    /// strace's calls per request by call, the handler's GET's most
    /// frequent first.
    fn strace_split(&self, s: &mut String) {
        let Some((_, _, first)) = self.strace.first() else {
            return;
        };
        let _ = writeln!(
            s,
            "System calls per request by call under `strace -c -f`, the {STRACE_ROWS} most frequent of the first \
             column:\n"
        );
        s.push_str("| call | handler GET | floor GET | handler PUT | floor PUT |\n|---|--:|--:|--:|--:|\n");
        for (call, _) in first.calls.iter().take(STRACE_ROWS) {
            let _ = write!(s, "| `{call}` ");
            for (side, op) in COLUMNS {
                let n = find(&self.strace, side, op)
                    .map(|t| t.calls.iter().find(|(c, _)| c == call).map_or(0.0, |(_, n)| *n));
                let _ = write!(s, "| {} ", number(n, 2));
            }
            s.push_str("|\n");
        }
        s.push('\n');
    }

    /// The experiments' rows, and what they add up to against the gap to
    /// the floor.
    fn experiments_table(&self, s: &mut String) {
        for e in &self.experiments {
            let (rps_normal, rps_off) = e.rps();
            let (cpu_normal, cpu_off) = e.cpu_us();
            let rounds: Vec<String> = e.cpu_saved_by_round().iter().map(|x| format!("{x:.1}")).collect();
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} | {:.3}× | {cpu_normal:.1} | {cpu_off:.1} | {:.1} | {} |",
                e.turned.what,
                e.turned.feature,
                group(rps_normal.round() as u64),
                group(rps_off.round() as u64),
                e.paired_ratio(),
                e.paired_cpu_saved(),
                rounds.join(", ")
            );
        }
        let parts: Vec<&Experiment> = self.experiments.iter().filter(|e| !e.turned.swap).collect();
        let saved: f64 = parts.iter().map(|e| e.paired_cpu_saved()).sum();
        let _ = write!(
            s,
            "\nThe {} parts turned off one at a time save {saved:.1} µs of CPU per GET between them (each \
             measured alone; summed; not the swapped choices).",
            parts.len()
        );
        if let Some((h, f)) = self.get_cpu() {
            let _ = write!(
                s,
                " In the CPU runs above the handler spent {h:.1} µs per GET and the floor {f:.1} µs, {:.1} µs \
                 less.",
                h - f
            );
        }
        s.push_str("\n\n");
    }

    /// The flame graphs' links and their top frames side by side.
    fn flame_tables(&self, s: &mut String) {
        for f in &self.flames {
            let _ = writeln!(
                s,
                "![flame graph of the {} under GET]({})\n\n[{}]({}): {} ms of CPU sampled, {:.0}% of it in the \
                 kernel's own frames (`_[k]`: system calls, loopback TCP, scheduling).\n",
                name(f.side),
                f.svg,
                f.svg,
                f.svg,
                group(f.total_ns / 1_000_000),
                100.0 * f.kernel_ns as f64 / f.total_ns.max(1) as f64
            );
        }
        s.push('|');
        for f in &self.flames {
            let _ = write!(s, " {} frame (self time) | % of its CPU |", name(f.side));
        }
        s.push_str("\n|");
        for _ in &self.flames {
            s.push_str("---|--:|");
        }
        s.push('\n');
        let rows = self.flames.iter().map(|f| f.top.len()).max().unwrap_or(0);
        for i in 0..rows {
            s.push('|');
            for f in &self.flames {
                match f.top.get(i) {
                    Some((frame, n)) => {
                        let _ = write!(
                            s,
                            " `{}` | {:.1}% |",
                            shorten(frame),
                            100.0 * *n as f64 / f.total_ns.max(1) as f64
                        );
                    }
                    None => s.push_str(" | |"),
                }
            }
            s.push('\n');
        }
    }
}

/// The handler or the floor.
fn name(side: Side) -> &'static str {
    if side == Side::Floor {
        "floor"
    } else {
        "handler"
    }
}

/// The entry of `v` for `side` and `op`.
fn find<T>(v: &[(Side, Op, T)], side: Side, op: Op) -> Option<&T> {
    v.iter().find(|(s, o, _)| *s == side && *o == op).map(|(_, _, t)| t)
}

/// `n` with `decimals` (thousands grouped when none), or `–`.
fn number(n: Option<f64>, decimals: usize) -> String {
    match n {
        Some(n) if decimals == 0 => group(n.round() as u64),
        Some(n) => format!("{n:.decimals$}"),
        None => "–".to_owned(),
    }
}

/// A frame's name for a table cell: at most [`FRAME_CHARS`] characters,
/// no `|` or backtick to break the table or the code span.
fn shorten(frame: &str) -> String {
    let clean: String = frame
        .chars()
        .map(|c| if c == '|' || c == '`' { '?' } else { c })
        .collect();
    if clean.chars().count() <= FRAME_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(FRAME_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadResult;
    use crate::profile::experiments::tests::run;
    use crate::profile::experiments::Turned;
    use crate::profile::{Experiment, Flame, ProfilePlan, Strace};
    use crate::scenarios::{Point, Timing};
    use std::time::Duration;

    fn point(side: Side, op: Op, rps: f64, cpu_us: f64) -> Point {
        let result = LoadResult {
            rps,
            p50_ms: 1.0,
            p99_ms: 2.0,
            errors: 0,
        };
        Point::single(side, op, 64, result, Some(cpu_us))
    }

    fn strace(total: f64, write: f64) -> Strace {
        Strace {
            calls: vec![("write".into(), write), ("epoll_wait".into(), total - write)],
            total,
        }
    }

    /// An experiment of two rounds: the normal build at 1,000 req/s and
    /// 40 ms of CPU, the experiment's at `off` (req/s, CPU ms) in each.
    fn experiment(feature: &'static str, what: &'static str, swap: bool, off: (f64, u64)) -> Experiment {
        Experiment {
            turned: Turned { feature, what, swap },
            normal: vec![run(1000.0, 40), run(1000.0, 40)],
            off: vec![run(off.0, off.1), run(off.0, off.1)],
        }
    }

    fn results() -> ProfileResults {
        let timing = Timing {
            warm: Duration::from_secs(2),
            measure: Duration::from_secs(5),
        };
        ProfileResults {
            plan: Some(ProfilePlan {
                conns: 64,
                timing,
                rounds: 3,
                experiment_timing: timing,
            }),
            cpu: vec![
                point(Side::Handler, Op::Get, 30_000.0, 40.0),
                point(Side::Floor, Op::Get, 40_000.0, 20.0),
                point(Side::Handler, Op::Put, 25_000.0, 45.0),
                point(Side::Floor, Op::Put, 35_000.0, 30.0),
            ],
            allocs: vec![
                (
                    Side::Handler,
                    Op::Get,
                    Allocs {
                        count: 30.0,
                        bytes: 4000.0,
                    },
                ),
                (
                    Side::Floor,
                    Op::Get,
                    Allocs {
                        count: 10.0,
                        bytes: 1000.0,
                    },
                ),
            ],
            syscalls: vec![(Side::Handler, Op::Get, 2.5), (Side::Floor, Op::Get, 2.0)],
            strace: vec![
                (Side::Handler, Op::Get, strace(4.0, 1.0)),
                (Side::Floor, Op::Get, strace(3.0, 1.5)),
            ],
            experiments: vec![
                experiment("experiment-no-log", "the log line", false, (1100.0, 33)),
                experiment("experiment-no-json", "the JSON answer", false, (1000.0, 35)),
                experiment("experiment-system-allocator", "mimalloc", true, (1000.0, 50)),
            ],
            flames: vec![
                Flame {
                    side: Side::Handler,
                    total_ns: 200_000_000,
                    kernel_ns: 150_000_000,
                    top: vec![("do_syscall_64_[k]".into(), 50_000_000), ("x".repeat(100), 10_000_000)],
                    svg: "bench/results/flame-handler.svg".into(),
                },
                Flame {
                    side: Side::Floor,
                    total_ns: 100_000_000,
                    kernel_ns: 0,
                    top: vec![("memcpy|".into(), 20_000_000)],
                    svg: "bench/results/flame-floor.svg".into(),
                },
            ],
            skipped: vec!["system calls by call: `strace` is not installed (strace)".into()],
            commit: "abc1234".into(),
            command: "cargo run --release -p bench -- --profile".into(),
            ..ProfileResults::default()
        }
    }

    /// Every table renders with its figures, a dash where nothing was
    /// measured, every placeholder filled.
    #[test]
    fn section_renders() {
        let s = results().section();
        let has = |text: &str| assert!(s.contains(text), "no {text:?} in:\n{s}");
        assert!(s.starts_with("## Where the time goes\n"), "{s}");
        has("| req/s (the CPU runs) | 30,000 | 40,000 | 0.75× | 25,000 | 35,000 | 0.71× |");
        has("| CPU µs | 40.0 | 20.0 | 2.00× | 45.0 | 30.0 | 1.50× |");
        has("| heap allocations | 30.0 | 10.0 | 3.00× | – | – | – |");
        has("| heap bytes allocated | 4,000 | 1,000 | 4.00× |");
        has("| system calls (`perf stat`, full speed) | 2.50 | 2.00 | 1.25× |");
        has("| system calls (`strace -c -f`, slowed) | 4.00 | 3.00 | 1.33× |");
        has("| `write` | 1.00 | 1.50 | – | – |");
        has("| `epoll_wait` | 3.00 | 1.50 | – | – |");
        has("Not measured in this run: system calls by call: `strace` is not installed (strace).");
        has("| the log line | `experiment-no-log` | 1,000 | 1,100 | 1.100× | 40.0 | 30.0 | 10.0 | 10.0, 10.0 |");
        has("| mimalloc | `experiment-system-allocator` | 1,000 | 1,000 | 1.000× | 40.0 | 50.0 | -10.0 | -10.0, -10.0 |");
        // The swapped choice (negative) is not one of the parts summed.
        has("The 2 parts turned off one at a time save 15.0 µs of CPU per GET between them");
        has("the handler spent 40.0 µs per GET and the floor 20.0 µs, 20.0 µs less.");
        has("![flame graph of the handler under GET](bench/results/flame-handler.svg)");
        has("[bench/results/flame-floor.svg](bench/results/flame-floor.svg): 100 ms of CPU sampled, 0% of it");
        has("flame-handler.svg): 200 ms of CPU sampled, 75% of it in the kernel's own frames");
        has("| handler frame (self time) | % of its CPU | floor frame (self time) | % of its CPU |");
        has("| `do_syscall_64_[k]` | 25.0% | `memcpy?` | 20.0% |");
        has(&format!("| `{}…` | 5.0% | | |", "x".repeat(89)));
        assert!(!s.contains("{{"), "{s}");
    }

    /// Without a plan (the mode did not run) there is no section.
    #[test]
    fn nothing_without_a_plan() {
        assert!(ProfileResults::default().section().is_empty());
    }
}
