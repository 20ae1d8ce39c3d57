//! Builds the handler binary with Cargo and finds the file Cargo made.
//!
//! Runs `cargo build --bin <name> --message-format=json-render-diagnostics`
//! in the app root, so progress and errors show on stderr as usual and the
//! binary's path comes from Cargo's own `compiler-artifact` message (right
//! for any `CARGO_TARGET_DIR`, `--target` or profile).

use anyhow::{bail, Context};
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The workspace (or package) directory to build in: the app root.
    pub dir: &'a Path,
    /// The binary target's name (`handler`).
    pub bin: &'a str,
    /// `--release`.
    pub release: bool,
    /// `--target <triple>`; `None` builds for this machine.
    pub target: Option<&'a str>,
}

/// The Cargo to run: `$CARGO` (set when run through `cargo run`), else `cargo`.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// The command line [`build`] runs, for messages.
pub fn describe(req: &BuildRequest) -> String {
    let mut s = format!("cargo build --bin {}", req.bin);
    if req.release {
        s.push_str(" --release");
    }
    if let Some(t) = req.target {
        s.push_str(&format!(" --target {t}"));
    }
    s
}

/// Builds and returns the path of the executable.
pub fn build(req: &BuildRequest) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.arg("build")
        .arg("--bin")
        .arg(req.bin)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(req.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if req.release {
        cmd.arg("--release");
    }
    if let Some(t) = req.target {
        cmd.arg("--target").arg(t);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {} (is Rust installed? see https://rustup.rs)", describe(req)))?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut executable = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(path) = artifact_executable(&line, req.bin) {
            executable = Some(path);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(req));
    }
    executable.with_context(|| format!("`{}` reported no executable named {}", describe(req), req.bin))
}

/// The `executable` of a `compiler-artifact` message for binary `bin`.
fn artifact_executable(line: &str, bin: &str) -> Option<PathBuf> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" || v["target"]["name"] != bin {
        return None;
    }
    let is_bin = v["target"]["kind"].as_array()?.iter().any(|k| k == "bin");
    is_bin.then(|| v["executable"].as_str().map(PathBuf::from))?
}

/// The handler to run: `given` (canonicalised), else the binary host.json's
/// `defaultExecutablePath` names, built with Cargo in `app_root` (progress
/// on stderr, the command line on stdout).
pub fn handler_binary(
    app_root: &Path,
    manifest: &crate::app_manifest::AppManifest,
    given: Option<&Path>,
    release: bool,
) -> anyhow::Result<PathBuf> {
    if let Some(h) = given {
        return std::fs::canonicalize(h).with_context(|| format!("--handler {}", h.display()));
    }
    let bin = Path::new(&manifest.host.executable)
        .file_name()
        .context("host.json defaultExecutablePath has no file name")?
        .to_string_lossy()
        .into_owned();
    let req = BuildRequest {
        dir: app_root,
        bin: &bin,
        release,
        target: None,
    };
    println!("devhost: {}", describe(&req));
    build(&req)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_executable_in_cargo_messages() {
        let msg = r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"handler"},
                      "executable":"/w/target/release/handler","fresh":true}"#
            .replace('\n', "");
        assert_eq!(
            super::artifact_executable(&msg, "handler").unwrap(),
            std::path::Path::new("/w/target/release/handler")
        );
        assert!(super::artifact_executable(&msg, "other").is_none());
        assert!(super::artifact_executable(r#"{"reason":"build-finished","success":true}"#, "handler").is_none());
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"handler"},"executable":null}"#;
        assert!(super::artifact_executable(lib, "handler").is_none());
    }
}
