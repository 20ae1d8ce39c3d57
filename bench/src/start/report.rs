//! The start and size part as Markdown: the "Cold start", "Memory" and
//! "Binary size" sections, the targets they are read against, and their
//! headline lines.

use super::size::Size;
use super::{ColdStart, Memory, StartResults, Steps, MEMORY_CONNS, WIDE_CONNS};
use crate::scenarios::Side;
use crate::stats::{group, median, mib, percentile, Target};
use crate::template::{fill, text};
use std::fmt::Write;

/// Ready on `GET /` from a cold process, median, ms.
pub const READY_TARGET_MS: f64 = 5.0;
/// The first cache answer from a cold process, median, ms.
pub const FIRST_TARGET_MS: f64 = 10.0;
/// Peak RSS after the memory run's requests, KiB.
pub const AFTER_TARGET_KIB: u64 = 8 * 1024;
/// Peak RSS at [`WIDE_CONNS`] connections, KiB.
pub const WIDE_TARGET_KIB: u64 = 12 * 1024;

impl StartResults {
    fn cold_of(&self, side: Side) -> Option<&ColdStart> {
        self.cold.iter().find(|(s, _)| *s == side).map(|(_, c)| c)
    }

    fn memory_of(&self, side: Side) -> Option<&Memory> {
        self.memory.iter().find(|(s, _)| *s == side).map(|(_, m)| m)
    }

    /// The targets for start-up and memory, with this run's figures.
    pub fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        if let Some(c) = self.cold_of(Side::Handler).filter(|c| !c.first_ms.is_empty()) {
            let (ready, first) = (median(&c.ready_ms), median(&c.first_ms));
            t.push(Target {
                goal: format!(
                    "cold start: ready on `GET /`, median of {}, < {READY_TARGET_MS} ms",
                    c.ready_ms.len()
                ),
                measured: format!("{ready:.1} ms (p90 {:.1} ms)", percentile(&c.ready_ms, 90.0)),
                met: ready < READY_TARGET_MS,
            });
            t.push(Target {
                goal: format!(
                    "cold start: the first cache answer (`/api/ping` 200), median of {}, < {FIRST_TARGET_MS} ms",
                    c.first_ms.len()
                ),
                measured: format!("{first:.1} ms (p90 {:.1} ms)", percentile(&c.first_ms, 90.0)),
                met: first < FIRST_TARGET_MS,
            });
        }
        if let Some(m) = self.memory_of(Side::Handler) {
            t.push(Target {
                goal: format!(
                    "peak RSS after {} requests < {}",
                    group(m.requests),
                    mib(AFTER_TARGET_KIB)
                ),
                measured: format!("{} (VmHWM; VmRSS {})", mib(m.after_hwm), mib(m.after_rss)),
                met: m.after_hwm < AFTER_TARGET_KIB,
            });
            t.push(Target {
                goal: format!("peak RSS at {WIDE_CONNS} connections < {}", mib(WIDE_TARGET_KIB)),
                measured: format!("{} (VmHWM; VmRSS {})", mib(m.wide_hwm), mib(m.wide_rss)),
                met: m.wide_hwm < WIDE_TARGET_KIB,
            });
        }
        t
    }

    /// The headline lines (`- ...`), each ending in a newline.
    pub fn headline(&self) -> String {
        let mut s = String::new();
        for (side, c) in self.cold.iter().filter(|(_, c)| !c.first_ms.is_empty()) {
            let _ = writeln!(
                s,
                "- Cold start, {}: first cache answer {:.1} ms, ready on `GET /` {:.1} ms (medians of {}).",
                side.label(),
                median(&c.first_ms),
                median(&c.ready_ms),
                c.first_ms.len()
            );
        }
        for (side, m) in &self.memory {
            let _ = writeln!(
                s,
                "- Memory, {}: peak RSS {} idle, {} after {} requests, {} at {WIDE_CONNS} connections; {} Redis connection(s).",
                side.label(),
                mib(m.idle_hwm),
                mib(m.after_hwm),
                group(m.requests),
                mib(m.wide_hwm),
                m.redis_connections
            );
        }
        if let Some(size) = &self.size {
            let _ = writeln!(s, "- Release binary: {}.", mib(size.bytes / 1024));
        }
        s
    }

    /// The three sections, in order, a blank line between them; empty
    /// when nothing was measured.
    pub fn sections(&self) -> String {
        let sections: Vec<String> = [self.cold_start_section(), self.memory_section(), self.size_section()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| format!("{}\n", s.trim_end()))
            .collect();
        sections.join("\n")
    }

    /// The values every section's first line states.
    fn stamp(&self) -> [(&'static str, String); 3] {
        let get = |k: &str| crate::machine::value(&self.machine, k);
        [
            ("date", get("date")),
            ("commit", self.commit.clone()),
            ("command", self.command.clone()),
        ]
    }

    /// "## Cold start": both servers' plain starts, the handler's steps, the
    /// targets; empty when nothing was measured.
    pub fn cold_start_section(&self) -> String {
        let (Some(plan), false) = (&self.plan, self.cold.is_empty()) else {
            return String::new();
        };
        let get = |k: &str| crate::machine::value(&self.machine, k);
        let mut values = self.stamp().to_vec();
        values.extend([
            ("cores", get("cores")),
            ("cpu", get("CPU")),
            ("load", get("load average")),
            ("plain", plan.cold_starts.to_string()),
            ("traced", plan.traced_starts.to_string()),
        ]);
        let mut s = fill(text::COLD_START, &values);
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::MAX, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.1}–{hi:.1} ms")
        };
        for (side, c) in &self.cold {
            let _ = writeln!(
                s,
                "| {} ({} starts) | {:.1} ms | {:.1} ms | {} | {:.1} ms | {:.1} ms | {} |",
                side.label(),
                c.first_ms.len(),
                median(&c.ready_ms),
                percentile(&c.ready_ms, 90.0),
                range(&c.ready_ms),
                median(&c.first_ms),
                percentile(&c.first_ms, 90.0),
                range(&c.first_ms)
            );
        }
        if let Some(c) = self.cold_of(Side::Handler).filter(|c| !c.traced.is_empty()) {
            s.push_str(&fill(text::COLD_START_STEPS, &[("traced", c.traced.len().to_string())]));
            s.push_str(&steps_table(&c.traced));
        }
        s.push('\n');
        for t in self.targets().iter().filter(|t| t.goal.starts_with("cold start")) {
            let _ = writeln!(s, "{}", target_line(t));
        }
        s
    }

    /// "## Memory": each server's memory, the targets; empty when nothing
    /// was measured.
    pub fn memory_section(&self) -> String {
        let (Some(plan), false) = (&self.plan, self.memory.is_empty()) else {
            return String::new();
        };
        let mut values = self.stamp().to_vec();
        values.extend([
            ("requests", group(plan.memory_requests)),
            ("conns", MEMORY_CONNS.to_string()),
            ("wide_conns", WIDE_CONNS.to_string()),
            ("wide_run", format!("{} s", plan.wide_run.as_secs_f64())),
        ]);
        let mut s = fill(text::MEMORY, &values);
        for (side, m) in &self.memory {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                side.label(),
                mib(m.idle_rss),
                mib(m.idle_hwm),
                mib(m.after_rss),
                mib(m.after_hwm),
                group(m.requests),
                mib(m.wide_rss),
                mib(m.wide_hwm),
                group(m.wide_requests),
                m.redis_connections
            );
        }
        s.push_str(
            "\nWhat the RSS after the requests is made of, from `/proc/<pid>/smaps`: pages of files (the program's \
             binary, shared libraries), which the kernel shares with its page cache and reads ahead, so how much of \
             a binary is resident depends on the kernel as much as on the program; and the process's own memory \
             (heap, stacks, anonymous maps).\n\n| | RSS after | its binary | shared libraries | its own memory |\n|---|--:|--:|--:|--:|\n",
        );
        for (side, m) in &self.memory {
            let files = m.after_files.binary + m.after_files.libraries;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                side.label(),
                mib(m.after_rss),
                mib(m.after_files.binary),
                mib(m.after_files.libraries),
                mib(m.after_rss.saturating_sub(files))
            );
        }
        s.push('\n');
        for t in self.targets().iter().filter(|t| t.goal.starts_with("peak RSS")) {
            let _ = writeln!(s, "{}", target_line(t));
        }
        if self.throughput_peak_kib > 0 {
            let _ = writeln!(
                s,
                "\nThe handler that served every throughput run (up to 256 connections, for minutes) peaked at {}.",
                mib(self.throughput_peak_kib)
            );
        }
        s
    }

    /// "## Binary size": the release binary, its profile and, when
    /// cargo-bloat ran, its code by crate; empty when not measured.
    pub fn size_section(&self) -> String {
        let Some(size) = &self.size else {
            return String::new();
        };
        let mut values = self.stamp().to_vec();
        values.extend(size_values(size));
        let mut s = fill(text::BINARY_SIZE, &values);
        match &size.bloat {
            Some(b) => {
                s.push_str(&fill(
                    text::BINARY_SIZE_CRATES,
                    &[
                        ("top", super::size::TOP_CRATES.to_string()),
                        ("file", mib(b.file_bytes / 1024)),
                        ("text", mib(b.text_bytes / 1024)),
                        ("mib", mib(size.bytes / 1024)),
                    ],
                ));
                let share = |bytes: u64| 100.0 * bytes as f64 / b.text_bytes.max(1) as f64;
                for (name, bytes) in &b.crates {
                    let _ = writeln!(s, "| {name} | {} | {:.1}% |", kib(*bytes), share(*bytes));
                }
                let _ = writeln!(s, "| the other crates | {} | {:.1}% |", kib(b.rest()), share(b.rest()));
            }
            None => {
                let _ = writeln!(s, "\nNo breakdown by crate: {}.", size.no_bloat);
            }
        }
        s
    }
}

/// The Targets table rows and headline lines the start part owns: those
/// of this run's wording and of earlier ones.
const OWNED_ROWS: [&str; 2] = ["| cold start", "| peak RSS"];
const OWNED_HEADLINES: [&str; 3] = ["- Cold start, ", "- Memory, ", "- Release binary:"];

/// `markdown` (a whole report) with the start part's rows of "## Targets"
/// replaced by `targets` and its lines of "## Ratios and headline numbers"
/// by `headline` (as [`StartResults::headline`] writes them): the new ones
/// go where the first old one was, or after the section's last row or
/// line when there was none; a missing section is left missing.
pub fn own_lines(markdown: &str, targets: &[Target], headline: &str) -> String {
    let rows: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "| {} | {} | {} |",
                t.goal,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            )
        })
        .collect();
    let md = replace_lines(markdown, "## Targets", &OWNED_ROWS, "|", &rows);
    let lines: Vec<String> = headline.lines().map(str::to_owned).collect();
    replace_lines(&md, "## Ratios and headline numbers", &OWNED_HEADLINES, "- ", &lines)
}

/// In the section under `heading`, the lines starting with one of `owned`
/// replaced by `new`, at the first of them, or after the last line
/// starting with `block` when none does.
fn replace_lines(markdown: &str, heading: &str, owned: &[&str], block: &str, new: &[String]) -> String {
    let Some(start) = markdown.find(&format!("\n{heading}\n")).map(|i| i + 1) else {
        return markdown.to_owned();
    };
    let end = markdown[start + 1..]
        .find("\n## ")
        .map_or(markdown.len(), |i| start + 1 + i + 1);
    let section: Vec<&str> = markdown[start..end].lines().collect();
    let is_owned = |l: &str| owned.iter().any(|p| l.starts_with(p));
    let at = match section.iter().position(|l| is_owned(l)) {
        Some(i) => i,
        None => section
            .iter()
            .rposition(|l| l.starts_with(block))
            .map_or(section.len(), |i| i + 1),
    };
    let mut out: Vec<&str> = Vec::new();
    for (i, line) in section.iter().enumerate() {
        if i == at {
            out.extend(new.iter().map(String::as_str));
        }
        if !is_owned(line) {
            out.push(line);
        }
    }
    if at == section.len() {
        out.extend(new.iter().map(String::as_str));
    }
    format!("{}{}\n{}", &markdown[..start], out.join("\n"), &markdown[end..])
}

/// A row of a table of steps: its name, what it spans, its value.
type StepRow = (&'static str, &'static str, fn(&Steps) -> f64);

/// The steps, in the order of the start.
const STEP_ROWS: [StepRow; 8] = [
    ("listening", "spawn → `warm-up` starts", |s| s.listening),
    (
        "before the token fetch",
        "`warm-up` starts → `token fetch` starts",
        |s| s.to_token,
    ),
    ("token fetch", "`token fetch` (the identity endpoint's answer)", |s| {
        s.token
    }),
    (
        "TCP, TLS handshake, AUTH",
        "the token arrives → `connect` ends",
        |s| s.connect,
    ),
    ("PING", "`connect` ends → the first `PING` ends", |s| s.ping),
    ("warm-up done", "spawn → `warm-up` ends", |s| s.warm_up),
    ("ready (the bench)", "spawn → `GET /` answered", |s| s.ready),
    ("first answer (the bench)", "spawn → `GET /api/ping` 200", |s| s.first),
];

/// A row of the comparison of plain starts: its name and its value.
type ColdRow = (&'static str, fn(&ColdStart) -> f64);

/// A row of the comparison of memory: its name and its value, KiB.
type MemoryRow = (&'static str, fn(&Memory) -> u64);

/// `--start --before`: this handler against the one before, side by side:
/// the plain starts' medians and p90s, the traced starts' steps (medians),
/// the memory peaks and the binaries' sizes, with this ÷ before.
pub fn comparison(cold: &[ColdStart; 2], mem: &[Memory], sizes: [u64; 2]) -> String {
    let mut s = String::from("| | this handler | before | this ÷ before |\n|---|--:|--:|--:|\n");
    let mut row = |what: &str, a: f64, b: f64, unit: &str| {
        let _ = writeln!(s, "| {what} | {a:.2}{unit} | {b:.2}{unit} | {:.3}× |", a / b);
    };
    const COLD: [ColdRow; 4] = [
        ("ready, median", |c| median(&c.ready_ms)),
        ("ready, p90", |c| percentile(&c.ready_ms, 90.0)),
        ("first answer, median", |c| median(&c.first_ms)),
        ("first answer, p90", |c| percentile(&c.first_ms, 90.0)),
    ];
    for (what, f) in COLD {
        row(what, f(&cold[0]), f(&cold[1]), " ms");
    }
    let steps = |c: &ColdStart, f: fn(&Steps) -> f64| median(&c.traced.iter().map(f).collect::<Vec<_>>());
    for (what, _, f) in STEP_ROWS {
        row(
            &format!("traced: {what}"),
            steps(&cold[0], f),
            steps(&cold[1], f),
            " ms",
        );
    }
    const MEMORY: [MemoryRow; 3] = [
        ("peak RSS idle, MiB", |m| m.idle_hwm),
        ("peak RSS after the requests, MiB", |m| m.after_hwm),
        ("peak RSS at 256 connections, MiB", |m| m.wide_hwm),
    ];
    if let [a, b] = mem {
        for (what, f) in MEMORY {
            row(what, f(a) as f64 / 1024.0, f(b) as f64 / 1024.0, "");
        }
    }
    row(
        "binary, MiB",
        sizes[0] as f64 / 1048576.0,
        sizes[1] as f64 / 1048576.0,
        "",
    );
    s
}

/// The binary size template's figures.
fn size_values(size: &Size) -> [(&'static str, String); 4] {
    let profile: Vec<String> = size.profile.iter().map(|l| format!("`{l}`")).collect();
    [
        ("path", size.path.clone()),
        ("mib", mib(size.bytes / 1024)),
        ("bytes", group(size.bytes)),
        ("profile", profile.join(", ")),
    ]
}

/// The steps' table rows: median and p90 of each over the traced starts.
fn steps_table(traced: &[Steps]) -> String {
    let mut s = String::new();
    for (step, span, of) in STEP_ROWS {
        let v: Vec<f64> = traced.iter().map(of).collect();
        let _ = writeln!(
            s,
            "| {step} | {span} | {:.2} ms | {:.2} ms |",
            median(&v),
            percentile(&v, 90.0)
        );
    }
    s
}

/// A target as a sentence: `Target: <goal>: <measured> — met.`
fn target_line(t: &Target) -> String {
    format!(
        "Target: {}: {} — {}.",
        t.goal,
        t.measured,
        if t.met { "met" } else { "**not met**" }
    )
}

/// Bytes as KiB, grouped.
fn kib(bytes: u64) -> String {
    format!("{} KiB", group(bytes.div_ceil(1024)))
}

#[cfg(test)]
mod tests {
    use super::super::size::Bloat;
    use super::super::StartPlan;
    use super::*;
    use crate::rig::FileRss;
    use std::time::Duration;

    fn results() -> StartResults {
        let steps = |first| Steps {
            listening: 2.0,
            to_token: 0.5,
            token: 1.5,
            connect: 3.0,
            ping: 0.25,
            warm_up: 8.0,
            ready: 3.0,
            first,
        };
        StartResults {
            plan: Some(StartPlan {
                cold_starts: 3,
                traced_starts: 2,
                memory_requests: 100_000,
                wide_run: Duration::from_secs(3),
                bloat: true,
            }),
            cold: vec![
                (
                    Side::Handler,
                    ColdStart {
                        ready_ms: vec![3.0, 4.0, 6.0],
                        first_ms: vec![9.0, 12.0, 11.0],
                        traced: vec![steps(10.0), steps(14.0)],
                    },
                ),
                (
                    Side::Python,
                    ColdStart {
                        ready_ms: vec![500.0],
                        first_ms: vec![530.0],
                        traced: vec![],
                    },
                ),
            ],
            memory: vec![
                // The floor's figures are beside the handler's, never read
                // as the handler's against the targets.
                (
                    Side::Floor,
                    Memory {
                        idle_rss: 5 * 1024,
                        idle_hwm: 5 * 1024,
                        after_rss: 6 * 1024,
                        after_hwm: 6 * 1024,
                        requests: 100_032,
                        wide_rss: 13 * 1024,
                        wide_hwm: 14 * 1024,
                        wide_requests: 160_000,
                        redis_connections: 1,
                        after_files: FileRss {
                            binary: 2 * 1024,
                            libraries: 2 * 1024,
                        },
                    },
                ),
                (
                    Side::Handler,
                    Memory {
                        idle_rss: 7 * 1024,
                        idle_hwm: 7 * 1024,
                        after_rss: 7 * 1024 + 512,
                        after_hwm: 8 * 1024,
                        requests: 100_032,
                        wide_rss: 11 * 1024,
                        wide_hwm: 11 * 1024 + 512,
                        wide_requests: 150_000,
                        redis_connections: 1,
                        after_files: FileRss {
                            binary: 4 * 1024 + 512,
                            libraries: 0,
                        },
                    },
                ),
            ],
            size: Some(Size {
                path: "target/x86_64-unknown-linux-musl/release/handler".into(),
                bytes: 8_257_064,
                profile: vec!["lto = \"thin\"".into(), "strip = true".into()],
                bloat: Some(Bloat {
                    file_bytes: 12 * 1024 * 1024,
                    text_bytes: 6 * 1024 * 1024,
                    crates: vec![("aws_lc_sys".into(), 1536 * 1024), ("std".into(), 1024 * 1024)],
                }),
                no_bloat: String::new(),
            }),
            throughput_peak_kib: 0,
            machine: vec![("date", "2026-12-04 20:00:00 UTC".into())],
            command: "cargo run --release -p bench -- --start".into(),
            commit: "abc1234".into(),
        }
    }

    /// Each target is read against its threshold: ready 4.0 ms < 5, the
    /// first answer 11.0 ms ≥ 10, 8.0 MiB after the requests ≥ 8, 11.5 MiB
    /// at 256 < 12.
    #[test]
    fn targets_met_and_not() {
        let t = results().targets();
        let met: Vec<(bool, &str)> = t.iter().map(|t| (t.met, t.measured.as_str())).collect();
        assert_eq!(
            met,
            vec![
                (true, "4.0 ms (p90 6.0 ms)"),
                (false, "11.0 ms (p90 12.0 ms)"),
                (false, "8.0 MiB (VmHWM; VmRSS 7.5 MiB)"),
                (true, "11.5 MiB (VmHWM; VmRSS 11.0 MiB)"),
            ]
        );
    }

    /// The sections render every template with its figures: the plain
    /// starts with p90, the steps' medians, the memory at 256 connections,
    /// the crates with the rest of the code.
    #[test]
    fn sections_render() {
        let md = results().sections();
        let has = |text: &str| assert!(md.contains(text), "no {text:?} in:\n{md}");
        has("## Cold start\n\nMeasured 2026-12-04 20:00:00 UTC at abc1234 with `cargo run --release -p bench -- --start`");
        has("| handler (Rust) (3 starts) | 4.0 ms | 6.0 ms | 3.0–6.0 ms | 11.0 ms | 12.0 ms | 9.0–12.0 ms |");
        has("| Python peer (1 starts) | 500.0 ms |");
        has("| TCP, TLS handshake, AUTH | the token arrives → `connect` ends | 3.00 ms | 3.00 ms |");
        has("| first answer (the bench) | spawn → `GET /api/ping` 200 | 12.00 ms | 14.00 ms |");
        has("Target: cold start: the first cache answer (`/api/ping` 200), median of 3, < 10 ms: 11.0 ms (p90 12.0 ms) — **not met**.");
        has("| handler (Rust) | 7.0 MiB | 7.0 MiB | 7.5 MiB | 8.0 MiB | 100,032 | 11.0 MiB | 11.5 MiB | 150,000 | 1 |");
        has("Target: peak RSS at 256 connections < 12.0 MiB: 11.5 MiB (VmHWM; VmRSS 11.0 MiB) — met.");
        has("| floor | 5.0 MiB | 5.0 MiB | 6.0 MiB | 6.0 MiB | 100,032 | 13.0 MiB | 14.0 MiB | 160,000 | 1 |");
        has("| | RSS after | its binary | shared libraries | its own memory |\n|---|--:|--:|--:|--:|\n\
             | floor | 6.0 MiB | 2.0 MiB | 2.0 MiB | 2.0 MiB |\n| handler (Rust) | 7.5 MiB | 4.5 MiB | 0.0 MiB | 3.0 MiB |\n");
        has("The floor (hyper and one TLS Redis connection, nothing else)");
        has("## Binary size\n");
        has("`target/x86_64-unknown-linux-musl/release/handler`: 7.9 MiB (8,257,064 bytes), built with the release profile of `Cargo.toml`:\n`lto = \"thin\"`, `strip = true`.");
        has("| aws_lc_sys | 1,536 KiB | 25.0% |");
        has("| the other crates | 3,584 KiB | 58.3% |");
        assert!(!md.contains("{{"), "{md}");
        assert!(!md.contains("throughput run"), "{md}");
    }

    /// The start part's rows of the Targets table and its headline lines are
    /// replaced where they were (old wordings too), the others kept.
    #[test]
    fn own_lines_replace_only_the_start_part() {
        let md = "# B\n\n## Ratios and headline numbers\n\n- GET 1.\n- Cold start, handler (Rust): OLD.\n\
                  - Memory, handler (Rust): OLD.\n- Token refresh.\n\n## Targets\n\n| target | measured | met |\n\
                  |---|---|---|\n| GET p99 | 1 ms | yes |\n| cold start to the first cache answer, < 20 ms | 18.6 ms | yes |\n\
                  | peak RSS after 100,032 requests < 12 MiB | 10.6 MiB | yes |\n| refresh | 0% | yes |\n\n## Cold start\n\nx\n";
        let r = results();
        let out = own_lines(md, &r.targets(), &r.headline());
        assert!(out.starts_with("# B\n\n## Ratios and headline numbers\n\n- GET 1.\n- Cold start, handler (Rust): first cache answer 11.0 ms"), "{out}");
        assert!(
            out.contains("- Release binary: 7.9 MiB.\n- Token refresh.\n\n## Targets"),
            "{out}"
        );
        assert!(out.contains("| GET p99 | 1 ms | yes |\n| cold start: ready on `GET /`, median of 3, < 5 ms | 4.0 ms (p90 6.0 ms) | yes |\n"), "{out}");
        assert!(out.contains("| peak RSS at 256 connections < 12.0 MiB | 11.5 MiB (VmHWM; VmRSS 11.0 MiB) | yes |\n| refresh | 0% | yes |\n\n## Cold start\n\nx\n"), "{out}");
        assert!(!out.contains("OLD") && !out.contains("< 20 ms"), "{out}");
        // Without any of them yet: after the last row.
        let bare = "## Targets\n\n| target | measured | met |\n|---|---|---|\n| GET p99 | 1 ms | yes |\n\n## Machine\n";
        let out = own_lines(&format!("\n{bare}"), &r.targets(), "");
        assert!(out.contains("| GET p99 | 1 ms | yes |\n| cold start: ready"), "{out}");
        assert!(out.ends_with("| yes |\n\n## Machine\n"), "{out}");
    }

    /// The comparison puts each figure of this handler beside the one
    /// before, with their ratio.
    #[test]
    fn comparison_side_by_side() {
        let r = results();
        let this = r.cold[0].1.clone();
        let mut before = this.clone();
        before.ready_ms = vec![8.0, 8.0, 8.0];
        before.traced[0].listening = 4.0;
        before.traced[1].listening = 4.0;
        let mem = *r.memory_of(Side::Handler).expect("the handler's memory");
        let md = comparison(&[this, before], &[mem, mem], [1024 * 1024, 2 * 1024 * 1024]);
        let has = |text: &str| assert!(md.contains(text), "no {text:?} in:\n{md}");
        has("| ready, median | 4.00 ms | 8.00 ms | 0.500× |");
        has("| traced: listening | 2.00 ms | 4.00 ms | 0.500× |");
        has("| peak RSS at 256 connections, MiB | 11.50 | 11.50 | 1.000× |");
        has("| binary, MiB | 1.00 | 2.00 | 0.500× |");
    }

    /// Without cargo-bloat the size section says why there is no breakdown;
    /// without measurements there are no sections.
    #[test]
    fn without_bloat_or_figures() {
        let mut r = results();
        if let Some(size) = &mut r.size {
            size.bloat = None;
            size.no_bloat = "cargo-bloat is not installed (`cargo install cargo-bloat`)".into();
        }
        let s = r.size_section();
        assert!(
            s.contains("No breakdown by crate: cargo-bloat is not installed (`cargo install cargo-bloat`)."),
            "{s}"
        );
        assert!(StartResults::default().sections().is_empty());
    }
}
