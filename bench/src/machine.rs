//! What the numbers were measured on: cores, CPU, kernel, memory, load,
//! tool versions, date.

use std::path::Path;
use std::process::Command;

/// Cores available to this process.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// A description of the machine and the tools, one `(name, value)` per line.
pub fn describe() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or_else(|| "unknown".into(), |kib| format!("{:.1} GiB", kib as f64 / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    let load = std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".into(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    vec![
        ("date", now_utc()),
        ("cores (nproc)", cores().to_string()),
        ("CPU", model),
        ("memory", mem),
        ("kernel", format!("Linux {kernel}")),
        ("load average at start (1, 5, 15 min)", load),
        ("rustc", first_line("rustc", &["-V"])),
        ("wrk", first_line("wrk", &["-v"])),
        ("redis-server", first_line("redis-server", &["--version"])),
        ("python", first_line("python3", &["--version"])),
    ]
}

/// The value of the first line of `machine` (as [`describe`] gives it) whose
/// name starts with `prefix`; `?` when there is none.
pub fn value(machine: &[(&'static str, String)], prefix: &str) -> String {
    machine
        .iter()
        .find(|(name, _)| name.starts_with(prefix))
        .map_or("?", |(_, v)| v.as_str())
        .to_owned()
}

/// The values a section's first lines state, for [`crate::template::fill`]:
/// when and on what it was measured (`date`, `cores`, `cpu`, `kernel`,
/// `load`), at which `commit` and with which `command`. The section's own
/// values are added after them.
pub fn stamp(machine: &[(&'static str, String)], commit: &str, command: &str) -> Vec<(&'static str, String)> {
    vec![
        ("date", value(machine, "date")),
        ("cores", value(machine, "cores")),
        ("cpu", value(machine, "CPU")),
        ("kernel", value(machine, "kernel")),
        ("load", value(machine, "load average")),
        ("commit", commit.to_owned()),
        ("command", command.to_owned()),
    ]
}

/// Now, UTC, to the second.
pub fn now_utc() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    now.format(&fmt).unwrap_or_default()
}

/// The first line a tool prints about itself.
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| "not found".into())
}

/// The commit checked out in `root` (short hash), and whether the handler's
/// sources (`src/`, `Cargo.toml`, `Cargo.lock`) differ from it.
pub fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(hash) => match git(&["status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"]) {
            Some(changes) if changes.is_empty() => hash,
            Some(_) => format!("{hash} (with uncommitted changes to the handler's sources)"),
            None => hash,
        },
        None => "unknown (not a git checkout)".to_owned(),
    }
}
