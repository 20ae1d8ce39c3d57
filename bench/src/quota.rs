//! A CPU quota for one process, as a Flex Consumption instance gets one:
//! the cgroup cpu controller. cgroup v1 (the cpu controller's own mount,
//! `cpu.cfs_period_us` and `cpu.cfs_quota_us`) or cgroup v2 (the unified
//! hierarchy, `cpu.max`), whichever has the cpu controller here.
//!
//! A [`Group`] is a child group made for the bench with a quota of so many
//! cores per 100 ms period; the process is put in it by writing its pid to
//! the group's `cgroup.procs` (see [`Group::join_and_exec`], which makes the
//! process join before it execs, so that it starts under the quota). The
//! group's `cpu.stat` says how often it ran out of quota; the process's own
//! CPU time comes from `/proc/<pid>/stat`. Dropping the group moves what is
//! left in it to the parent and removes it.

use anyhow::{bail, ensure, Context};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The CFS period: 100 ms, the kernel's default.
pub const PERIOD_US: u64 = 100_000;

/// The quota for `cores` cores, in microseconds of CPU per [`PERIOD_US`].
pub fn quota_us(cores: f64) -> u64 {
    (cores * PERIOD_US as f64).round() as u64
}

/// Which cgroup interface has the cpu controller, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1: the mount of the cpu controller.
    V1(PathBuf),
    /// cgroup v2: the mount of the unified hierarchy.
    V2(PathBuf),
}

impl Hierarchy {
    /// The hierarchy of this machine, from `/proc/mounts`: cgroup v1's cpu
    /// controller if it is mounted, else a cgroup v2 mount offering `cpu`.
    pub fn detect() -> anyhow::Result<Hierarchy> {
        let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        let v2_has_cpu = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|name| name == "cpu"))
        };
        pick(&mounts, v2_has_cpu).context(
            "no cgroup cpu controller: neither a cgroup v1 mount with `cpu` nor a cgroup v2 mount offering `cpu` \
             in /proc/mounts",
        )
    }

    /// How the quota is applied, for the report.
    pub fn describe(&self) -> String {
        match self {
            Hierarchy::V1(_) => format!(
                "cgroup v1, the cpu controller's `cpu.cfs_period_us` = {PERIOD_US} and `cpu.cfs_quota_us` = the size's \
                 cores × {PERIOD_US}"
            ),
            Hierarchy::V2(_) => format!("cgroup v2, `cpu.max` = \"<the size's cores × {PERIOD_US}> {PERIOD_US}\""),
        }
    }

    /// Where the bench's groups go: this process's own group in that
    /// hierarchy (cgroup v1), when it is visible under the mount, else the
    /// mount itself (cgroup v2 always: only its root may hold processes and
    /// still enable the controller for its children).
    fn parent(&self) -> PathBuf {
        match self {
            Hierarchy::V1(mount) => std::fs::read_to_string("/proc/self/cgroup")
                .ok()
                .and_then(|text| own_v1_path(&text))
                .map(|own| mount.join(own.trim_start_matches('/')))
                .filter(|dir| dir.is_dir())
                .unwrap_or_else(|| mount.clone()),
            Hierarchy::V2(mount) => mount.clone(),
        }
    }
}

/// The hierarchy with the cpu controller in `mounts` (the text of
/// `/proc/mounts`): a cgroup v1 mount whose options name `cpu` first, else a
/// cgroup2 mount for which `v2_has_cpu` holds.
pub fn pick(mounts: &str, v2_has_cpu: impl Fn(&Path) -> bool) -> Option<Hierarchy> {
    let entries: Vec<(&str, &str, &str)> = mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, dir, fstype, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some((dir, fstype, options))
        })
        .collect();
    let v1 = entries
        .iter()
        .find(|(_, fstype, options)| *fstype == "cgroup" && options.split(',').any(|o| o == "cpu"));
    if let Some((dir, _, _)) = v1 {
        return Some(Hierarchy::V1(unescape(dir)));
    }
    entries
        .iter()
        .filter(|(_, fstype, _)| *fstype == "cgroup2")
        .map(|(dir, _, _)| unescape(dir))
        .find(|dir| v2_has_cpu(dir))
        .map(Hierarchy::V2)
}

/// A mount point as `/proc/mounts` writes it (a space is `\040`).
fn unescape(dir: &str) -> PathBuf {
    PathBuf::from(dir.replace("\\040", " "))
}

/// This process's group in the cgroup v1 cpu hierarchy, from the text of
/// `/proc/self/cgroup` (`<id>:<controllers>:<path>`, e.g. `4:cpu,cpuacct:/x`).
fn own_v1_path(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "cpu").then(|| path.to_owned())
    })
}

/// What a group's `cpu.stat` counts (v1 and v2 alike).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Periods in which the group had something to run (`nr_periods`).
    pub periods: u64,
    /// Of which it ran out of quota (`nr_throttled`).
    pub throttled: u64,
    /// Time its threads spent throttled, ns (v1 `throttled_time`, v2
    /// `throttled_usec`).
    pub throttled_ns: u64,
}

impl CpuStat {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &CpuStat) -> CpuStat {
        CpuStat {
            periods: self.periods.saturating_sub(before.periods),
            throttled: self.throttled.saturating_sub(before.throttled),
            throttled_ns: self.throttled_ns.saturating_sub(before.throttled_ns),
        }
    }

    /// The sum of two counts.
    pub fn plus(&self, other: &CpuStat) -> CpuStat {
        CpuStat {
            periods: self.periods + other.periods,
            throttled: self.throttled + other.throttled,
            throttled_ns: self.throttled_ns + other.throttled_ns,
        }
    }
}

/// Reads a `cpu.stat` (cgroup v1's cpu controller or cgroup v2); a count
/// it lacks stays 0.
pub fn parse_cpu_stat(text: &str) -> CpuStat {
    let mut s = CpuStat::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(key), Some(Ok(value))) = (f.next(), f.next().map(str::parse::<u64>)) else {
            continue;
        };
        match key {
            "nr_periods" => s.periods = value,
            "nr_throttled" => s.throttled = value,
            "throttled_time" => s.throttled_ns = value,
            "throttled_usec" => s.throttled_ns = value * 1000,
            _ => {}
        }
    }
    s
}

/// A child group with a CPU quota, removed on drop.
#[derive(Debug)]
pub struct Group {
    dir: PathBuf,
    parent: PathBuf,
}

impl Group {
    /// Makes the group `name` under this process's group in `hierarchy`
    /// with a quota of `cores` per [`PERIOD_US`], and checks it reads back.
    pub fn create(hierarchy: &Hierarchy, name: &str, cores: f64) -> anyhow::Result<Group> {
        let parent = hierarchy.parent();
        let dir = parent.join(name);
        if let Hierarchy::V2(_) = hierarchy {
            enable_cpu_v2(&parent)?;
        }
        std::fs::create_dir(&dir).with_context(|| {
            format!(
                "cannot make the cgroup {} (the bench needs root, and a writable cgroup {} hierarchy)",
                dir.display(),
                match hierarchy {
                    Hierarchy::V1(_) => "v1 cpu",
                    Hierarchy::V2(_) => "v2",
                }
            )
        })?;
        let group = Group { dir, parent };
        let quota = quota_us(cores);
        match hierarchy {
            Hierarchy::V1(_) => {
                group.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
                group.write("cpu.cfs_quota_us", &quota.to_string())?;
                let got = group.read("cpu.cfs_quota_us")?;
                ensure!(
                    got.trim() == quota.to_string(),
                    "cpu.cfs_quota_us reads {got:?}, not {quota}"
                );
            }
            Hierarchy::V2(_) => {
                group.write("cpu.max", &format!("{quota} {PERIOD_US}"))?;
                let got = group.read("cpu.max")?;
                ensure!(
                    got.trim() == format!("{quota} {PERIOD_US}"),
                    "cpu.max reads {got:?}, not \"{quota} {PERIOD_US}\""
                );
            }
        }
        Ok(group)
    }

    /// Where the group is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A `/bin/sh` script that puts itself in this group, then execs
    /// `binary`: the process starts under the quota with the pid it was
    /// spawned with, and nothing else joins the group. Written to `script`.
    pub fn join_and_exec(&self, binary: &Path, script: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let procs = self.dir.join("cgroup.procs");
        let text = format!(
            "#!/bin/sh\n# Written by the bench (--flex): joins the group, then becomes the handler.\n\
             echo $$ > {} || {{ echo 'cannot join the cgroup' >&2; exit 97; }}\nexec {} \"$@\"\n",
            sh_quote(&procs),
            sh_quote(binary)
        );
        std::fs::write(script, text).with_context(|| format!("writing {}", script.display()))?;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// The pids in the group.
    pub fn procs(&self) -> anyhow::Result<Vec<u32>> {
        Ok(self
            .read("cgroup.procs")?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// The group's `cpu.stat` now.
    pub fn stat(&self) -> anyhow::Result<CpuStat> {
        Ok(parse_cpu_stat(&self.read("cpu.stat")?))
    }

    fn read(&self, file: &str) -> anyhow::Result<String> {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        let path = self.dir.join(file);
        std::fs::write(&path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The handler is normally gone: move anything left to the parent,
        // then remove the group (the kernel takes a moment after a kill).
        for _ in 0..100 {
            for pid in self.procs().unwrap_or_default() {
                let _ = std::fs::write(self.parent.join("cgroup.procs"), pid.to_string());
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench: could not remove the cgroup {}", self.dir.display());
    }
}

/// Makes sure `parent`'s children get the cpu controller (cgroup v2).
fn enable_cpu_v2(parent: &Path) -> anyhow::Result<()> {
    let control = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    std::fs::write(&control, "+cpu").with_context(|| {
        format!(
            "cannot enable the cpu controller in {} (cgroup v2 allows it only in a group holding no processes, \
             or the root)",
            control.display()
        )
    })
}

/// `path` in single quotes for `/bin/sh`.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A process's CPU time (user + system, all its threads, living or not),
/// from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_proc_stat_ticks(&text).with_context(|| format!("cannot read /proc/{pid}/stat: {text:?}"))?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// `utime + stime` (clock ticks) from the text of `/proc/<pid>/stat`: the
/// 14th and 15th fields, counted after the command name's closing `)`.
pub fn parse_proc_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when that fails).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// The names of a process's threads (`/proc/<pid>/task/*/comm`).
pub fn thread_names(pid: u32) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Ok(comm) = std::fs::read_to_string(entry?.path().join("comm")) {
            names.push(comm.trim().to_owned());
        }
    }
    Ok(names)
}

/// Fails unless `pid` runs `binary` (it has exec'd) and is the only
/// process in `group`.
pub fn check_alone(group: &Group, pid: u32, binary: &Path) -> anyhow::Result<()> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let want = binary.canonicalize()?;
    ensure!(
        exe == want,
        "process {pid} runs {}, not {}",
        exe.display(),
        want.display()
    );
    let procs = group.procs()?;
    if procs != [pid] {
        bail!(
            "the cgroup {} holds {procs:?}, not just the handler ({pid})",
            group.dir().display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes' quotas per 100 ms period.
    #[test]
    fn quotas() {
        assert_eq!(quota_us(0.25), 25_000);
        assert_eq!(quota_us(1.0), 100_000);
        assert_eq!(quota_us(2.0), 200_000);
    }

    /// cgroup v1's cpu mount wins; else a cgroup2 mount that offers `cpu`;
    /// `cpuacct` alone is not `cpu`.
    #[test]
    fn picks_the_hierarchy() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(pick(hybrid, |_| true), Some(Hierarchy::V1("/sys/fs/cgroup/cpu".into())));
        let joint = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n";
        assert_eq!(
            pick(joint, |_| false),
            Some(Hierarchy::V1("/sys/fs/cgroup/cpu,cpuacct".into()))
        );
        let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev 0 0\n";
        assert_eq!(pick(unified, |_| true), Some(Hierarchy::V2("/sys/fs/cgroup".into())));
        assert_eq!(pick(unified, |_| false), None);
        let no_cpu = "cgroup /sys/fs/cgroup/cpuacct cgroup rw,cpuacct 0 0\n";
        assert_eq!(pick(no_cpu, |_| false), None);
    }

    /// The cpu line of /proc/self/cgroup, alone or joint with cpuacct.
    #[test]
    fn own_group() {
        assert_eq!(own_v1_path("2:cpuacct:/\n1:cpu:/a/b\n0::/\n"), Some("/a/b".into()));
        assert_eq!(own_v1_path("4:cpu,cpuacct:/docker/x\n"), Some("/docker/x".into()));
        assert_eq!(own_v1_path("0::/user.slice\n"), None);
    }

    /// cgroup v1's cpu.stat (throttled time in ns) and v2's (in µs).
    #[test]
    fn parses_cpu_stat() {
        let v1 = "nr_periods 26\nnr_throttled 25\nthrottled_time 1596571484\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_cpu_stat(v1),
            CpuStat {
                periods: 26,
                throttled: 25,
                throttled_ns: 1_596_571_484
            }
        );
        let v2 = "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 10\nnr_throttled 4\n\
                  throttled_usec 120000\nnr_bursts 0\nburst_usec 0\n";
        let s = parse_cpu_stat(v2);
        assert_eq!((s.periods, s.throttled, s.throttled_ns), (10, 4, 120_000_000));
        let later = CpuStat {
            periods: 15,
            throttled: 4,
            throttled_ns: 130_000_000,
        };
        assert_eq!(
            later.since(&s),
            CpuStat {
                periods: 5,
                throttled: 0,
                throttled_ns: 10_000_000
            }
        );
        assert_eq!(parse_cpu_stat(""), CpuStat::default());
    }

    /// utime + stime, with a command name holding spaces and parentheses.
    #[test]
    fn parses_proc_stat() {
        let stat = "1234 (tokio (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 321 45 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_proc_stat_ticks(stat), Some(366));
        assert_eq!(parse_proc_stat_ticks("1234 (x) S 1"), None);
    }

    /// A path with a quote survives the shell.
    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
