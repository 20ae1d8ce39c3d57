//! The builds the scenario needs beside `target/release`'s: the counting
//! and experiment builds (release profile, one feature each) and the
//! flame graph builds (release profile with line tables, unstripped, with
//! frame pointers for `perf record -g`).
//!
//! The counting and experiment builds share one target dir,
//! `target/variants`: a feature of the root crate or the floor changes
//! nothing in their dependencies, so those are compiled once, and each
//! binary is copied out to `target/variants/bin/<name>` as soon as it is
//! built. The flame builds change the profile, so they have their own,
//! `target/flame`. The handler's are built for its deployed target
//! ([`crate::tools::TARGET`]), and the floor's for this machine, as the
//! bench's main builds are (`crate::tools`).

use crate::rig::Program;
use crate::tools::TARGET;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The builds, ready to start.
pub struct Variants {
    /// The handler counting its allocations.
    pub count_handler: Program,
    /// The floor counting its allocations.
    pub count_floor: Program,
    /// Each experiment's feature and handler, in the order of
    /// [`super::experiments::EXPERIMENTS`].
    pub experiments: Vec<(&'static str, Program)>,
    /// The handler and the floor for the flame graphs, when `perf` is there.
    pub flame: Option<(Program, Program)>,
}

/// Builds every variant (the flame ones only when `flame`).
pub fn variants(root: &Path, flame: bool) -> anyhow::Result<Variants> {
    let variants = root.join("target").join("variants");
    let handler = |feature: &str| {
        build(
            root,
            &["-p", "azure-redis-handler", "--bin", "handler", "--features", feature],
            &variants,
            &[],
            "handler",
            feature,
        )
        .map(Program::Handler)
    };
    let count_handler = handler("count-allocs")?;
    let count_floor = build(
        root,
        &["-p", "floor", "--features", "count-allocs"],
        &variants,
        &[],
        "floor",
        "count-allocs",
    )
    .map(Program::Floor)?;
    let experiments = super::experiments::EXPERIMENTS
        .iter()
        .map(|e| Ok((e.feature, handler(e.feature)?)))
        .collect::<anyhow::Result<_>>()?;
    let flame = if flame {
        let dir = root.join("target").join("flame");
        let env = [
            ("CARGO_PROFILE_RELEASE_STRIP", "false"),
            ("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only"),
            ("RUSTFLAGS", "-C force-frame-pointers=yes"),
        ];
        let h = build(
            root,
            &["-p", "azure-redis-handler", "--bin", "handler"],
            &dir,
            &env,
            "handler",
            "flame",
        )?;
        let f = build(root, &["-p", "floor"], &dir, &env, "floor", "flame")?;
        Some((Program::Handler(h), Program::Floor(f)))
    } else {
        None
    };
    Ok(Variants {
        count_handler,
        count_floor,
        experiments,
        flame,
    })
}

/// `cargo build --release <args> --target-dir <dir>` with `env` (and
/// `--target` [`TARGET`] for the handler), and the binary `bin` copied to
/// `<dir>/bin/<bin>-<name>`, whose path it returns.
fn build(
    root: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(&str, &str)],
    bin: &str,
    name: &str,
) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target: &[&str] = if bin == "handler" { &["--target", TARGET] } else { &[] };
    let env_line: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
    let line = format!(
        "{env_line}cargo build --release {} --target-dir {}",
        [target, args].concat().join(" "),
        dir.display()
    );
    eprintln!("bench: {line}");
    let status = Command::new(cargo)
        .args(["build", "--release"])
        .args(target)
        .args(args)
        .arg("--target-dir")
        .arg(dir)
        .envs(env.iter().copied())
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    let built = match target {
        [] => dir.join("release").join(bin),
        _ => dir.join(TARGET).join("release").join(bin),
    };
    let copy = dir.join("bin").join(format!("{bin}-{name}"));
    std::fs::create_dir_all(dir.join("bin"))?;
    // Removed first: the old copy may be running (a bench still stopping).
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(&built, &copy).with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    Ok(copy)
}
