//! The release binary's size and what it is made of: the crates' shares of
//! its code from `cargo bloat --release --crates` (cargo-bloat is checked
//! for, never installed: `cargo install cargo-bloat`), and the release
//! profile it was built with, read from `Cargo.toml`.

use anyhow::{bail, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates listed by name; the rest are summed.
pub const TOP_CRATES: usize = 20;

/// The binary and what it is made of.
#[derive(Debug, Clone, Default)]
pub struct Size {
    /// The binary measured, as given (e.g.
    /// `target/x86_64-unknown-linux-musl/release/handler`), relative to the
    /// repository's root where it is inside it.
    pub path: String,
    /// Its size, bytes.
    pub bytes: u64,
    /// `[profile.release]` (and per-package) lines of `Cargo.toml`.
    pub profile: Vec<String>,
    /// The crates' shares, when cargo-bloat ran.
    pub bloat: Option<Bloat>,
    /// Why there is no breakdown by crate, when there is none.
    pub no_bloat: String,
}

/// `cargo bloat --crates`: the code section and the crates in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bloat {
    /// The unstripped binary cargo-bloat built, bytes.
    pub file_bytes: u64,
    /// Its `.text` section, bytes (the same code as the stripped one).
    pub text_bytes: u64,
    /// The largest crates' code, bytes, largest first (`std` and
    /// `[Unknown]`, code cargo-bloat cannot place, among them).
    pub crates: Vec<(String, u64)>,
}

impl Bloat {
    /// The code of the crates not listed, bytes.
    pub fn rest(&self) -> u64 {
        self.text_bytes
            .saturating_sub(self.crates.iter().map(|(_, b)| b).sum::<u64>())
    }
}

/// The size of `binary`, the profile in `root`'s `Cargo.toml`, and, when
/// `bloat` and cargo-bloat is installed, the crates' shares of the same
/// build unstripped (built in `target/bloat`, so that the release binary
/// stays as it is; the first time, that is a whole release build).
pub fn measure(root: &Path, binary: &Path, bloat: bool) -> anyhow::Result<Size> {
    let mut size = Size {
        path: binary.strip_prefix(root).unwrap_or(binary).display().to_string(),
        bytes: std::fs::metadata(binary)?.len(),
        profile: profile(&std::fs::read_to_string(root.join("Cargo.toml"))?),
        ..Size::default()
    };
    if !bloat {
        size.no_bloat =
            "not asked for (a smoke run, or `--handler`: cargo bloat measures the sources, not a given binary)".into();
    } else if !crate::tools::has_cargo_bloat() {
        size.no_bloat = "cargo-bloat is not installed (`cargo install cargo-bloat`)".into();
        eprintln!("bench: {}: no breakdown of the binary by crate", size.no_bloat);
    } else {
        eprintln!("bench: cargo bloat --release --crates (in target/bloat; the first time, a whole release build)");
        size.bloat = Some(run_bloat(root)?);
    }
    Ok(size)
}

fn run_bloat(root: &Path) -> anyhow::Result<Bloat> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let out = Command::new(cargo)
        .args([
            "bloat",
            "--release",
            "--target",
            crate::tools::TARGET,
            "--bin",
            "handler",
            "--crates",
            "-n",
        ])
        .arg(TOP_CRATES.to_string())
        .args(["--message-format", "json"])
        .env("CARGO_TARGET_DIR", target.join("bloat"))
        .current_dir(root)
        .output()
        .context("running cargo bloat")?;
    if !out.status.success() {
        bail!(
            "cargo bloat failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// cargo-bloat's JSON (`--message-format json`): the last line that is a
/// JSON object.
pub fn parse(stdout: &str) -> anyhow::Result<Bloat> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON in cargo bloat's output")?;
    let v: Value = serde_json::from_str(line).context("cargo bloat's JSON")?;
    let num = |v: &Value, k: &str| v[k].as_u64().with_context(|| format!("no {k:?} in cargo bloat's JSON"));
    let crates = v["crates"]
        .as_array()
        .context("no \"crates\" in cargo bloat's JSON")?
        .iter()
        .map(|c| Ok((c["name"].as_str().unwrap_or("?").to_owned(), num(c, "size")?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(Bloat {
        file_bytes: num(&v, "file-size")?,
        text_bytes: num(&v, "text-section-size")?,
        crates,
    })
}

/// The settings of `[profile.release]` and `[profile.release.package.*]`
/// in `cargo_toml`, one `key = value` each (per package as
/// `package.<name>.key = value`), comments left out.
pub fn profile(cargo_toml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prefix = None;
    for line in cargo_toml.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            prefix = match table.strip_prefix("profile.release") {
                Some("") => Some(String::new()),
                Some(rest) => rest.strip_prefix('.').map(|r| format!("{r}.")),
                None => None,
            };
            continue;
        }
        let setting = line.split('#').next().unwrap_or("").trim();
        if let (Some(prefix), false) = (&prefix, setting.is_empty()) {
            out.push(format!("{prefix}{setting}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cargo-bloat's JSON line is read after cargo's own lines; the crates
    /// keep their order and the rest is what they leave of the code.
    #[test]
    fn parses_cargo_bloat_json() {
        let out = "   Compiling x\n{\"file-size\":12173456,\"text-section-size\":6209111,\"crates\":[{\"name\":\"aws_lc_sys\",\"size\":1311319},{\"name\":\"std\",\"size\":1102801}]}\n";
        let b = parse(out).unwrap();
        assert_eq!(b.file_bytes, 12_173_456);
        assert_eq!(b.text_bytes, 6_209_111);
        assert_eq!(
            b.crates,
            vec![("aws_lc_sys".to_owned(), 1_311_319), ("std".to_owned(), 1_102_801)]
        );
        assert_eq!(b.rest(), 6_209_111 - 1_311_319 - 1_102_801);
        assert!(parse("no json").is_err());
        assert!(parse("{\"crates\":[]}").is_err());
    }

    /// The release profile and its per-package settings are read; other
    /// profiles and comments are not.
    #[test]
    fn reads_the_release_profile() {
        let toml = "[profile.dev]\ndebug = 1\n\n[profile.release]\n# why\nlto = \"thin\" # thin\nstrip = true\n\n\
                    [profile.release.package.aws-lc-sys]\nopt-level = \"s\"\n\n[dependencies]\nx = 1\n";
        assert_eq!(
            profile(toml),
            vec![
                "lto = \"thin\"".to_owned(),
                "strip = true".to_owned(),
                "package.aws-lc-sys.opt-level = \"s\"".to_owned(),
            ]
        );
    }
}
