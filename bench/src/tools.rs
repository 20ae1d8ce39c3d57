//! What the benchmark needs on the machine, checked up front (never
//! installed behind the user's back), the release handler and floor, and
//! the Python peer's virtualenv.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A program the benchmark runs, and the Debian/Ubuntu package that has it.
struct Tool {
    /// A command that runs when the tool is there.
    check: &'static [&'static str],
    /// Whether that command must also exit 0 (`wrk -v` exits 1).
    must_succeed: bool,
    package: &'static str,
    why: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        check: &["wrk", "-v"],
        must_succeed: false,
        package: "wrk",
        why: "HTTP load generator",
    },
    Tool {
        check: &["redis-benchmark", "--version"],
        must_succeed: true,
        package: "redis-tools",
        why: "redis-benchmark, the ceiling",
    },
    Tool {
        check: &["redis-server", "--version"],
        must_succeed: true,
        package: "redis-server",
        why: "the TLS Redis stand-in",
    },
    Tool {
        check: &["python3", "-c", "import venv, ensurepip"],
        must_succeed: true,
        package: "python3-venv",
        why: "the Python peer's virtualenv",
    },
    Tool {
        check: &["musl-gcc", "--version"],
        must_succeed: true,
        package: "musl-tools",
        why: "the C compiler for the handler's static build (mimalloc and ring have C)",
    },
];

/// Fails with the exact `apt-get` (and `rustup`) lines when a tool is
/// missing. The Python tools are only needed when `python` is true, and
/// what builds the handler for [`TARGET`] only when `build` is.
pub fn check(python: bool, build: bool) -> anyhow::Result<()> {
    let missing: Vec<&Tool> = TOOLS
        .iter()
        .filter(|t| python || t.package != "python3-venv")
        .filter(|t| build || t.package != "musl-tools")
        .filter(|t| !runs(t.check, t.must_succeed))
        .collect();
    let no_target = build && !has_rust_target(TARGET);
    if missing.is_empty() && !no_target {
        return Ok(());
    }
    let mut msg = String::from("the benchmark needs tools that are not installed:\n");
    for t in &missing {
        msg.push_str(&format!("  {} ({}: {})\n", t.check[0], t.package, t.why));
    }
    if no_target {
        msg.push_str(&format!(
            "  Rust's {TARGET} target (the handler is built as `cargo devhost package` builds it)\n"
        ));
    }
    msg.push_str("install them with:");
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
        msg.push_str(&format!("\n  sudo apt-get install -y {}", packages.join(" ")));
    }
    if no_target {
        msg.push_str(&format!("\n  rustup target add {TARGET}"));
    }
    bail!(msg)
}

/// The Rust compiler Cargo uses: `$RUSTC`, else `rustc`.
fn rustc() -> std::ffi::OsString {
    std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

/// Whether the standard library for `target` is installed: its directory
/// in rustc's sysroot (where `rustup target add` puts it) exists.
fn has_rust_target(target: &str) -> bool {
    Command::new(rustc())
        .args(["--print", "target-libdir", "--target", target])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| Path::new(String::from_utf8_lossy(&o.stdout).trim()).is_dir())
}

/// Whether `cargo bloat` (cargo-bloat, `cargo install cargo-bloat`) is
/// installed; optional: without it the report has no breakdown of the
/// binary by crate.
pub fn has_cargo_bloat() -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    runs(&[&cargo, "bloat", "--version"], true)
}

fn runs(argv: &[&str], must_succeed: bool) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success() || !must_succeed)
}

/// Whether `program` is installed (`program --version` starts), for a tool
/// a mode can do without (`perf` and `strace` in `--profile`, which says
/// what it skipped).
pub fn present(program: &str) -> bool {
    runs(&[program, "--version"], false)
}

/// What the handler and the floor are built for: the target `cargo devhost
/// package` deploys (static, musl), so that the bench measures what runs in
/// Azure.
pub const TARGET: &str = devhost::package::AZURE_TARGET;

/// `cargo build --release --bin handler --target` [`TARGET`], returning the
/// binary's path.
pub fn build_handler(root: &Path) -> anyhow::Result<PathBuf> {
    cargo_build(
        root,
        &["--release", "--bin", "handler", "--target", TARGET],
        &format!("{TARGET}/release"),
        "handler",
    )
}

/// `cargo build --release -p floor`: the floor (`bench/floor`) with the
/// handler's release profile, returning the binary's path.
///
/// Built for this machine (glibc), not for [`TARGET`]: the floor is the
/// yardstick, and a static musl build of it would allocate with musl's
/// malloc (one lock for the process), slower than the glibc malloc it has
/// always been measured with, and would flatter the handler. Its memory
/// figures include glibc's shared libraries, as they always have.
pub fn build_floor(root: &Path) -> anyhow::Result<PathBuf> {
    cargo_build(root, &["--release", "-p", "floor"], "release", "floor")
}

/// The floor to run beside a handler given by path (`--smoke --handler`):
/// the `floor` in the same directory, built with the same profile (CI's
/// `cargo test --workspace` builds `target/debug/floor`, for the floor's
/// own test, beside `target/debug/handler`); when there is none, built
/// with the profile that directory is named for.
pub fn floor_beside(root: &Path, handler: &Path) -> anyhow::Result<PathBuf> {
    let beside = handler.with_file_name("floor");
    if beside.is_file() {
        return Ok(beside);
    }
    match handler.parent().and_then(Path::file_name) {
        Some(dir) if dir == "release" => build_floor(root),
        _ => cargo_build(root, &["-p", "floor"], "debug", "floor"),
    }
}

/// `cargo build <args>` in `root`, returning `target/<dir>/<bin>`.
fn cargo_build(root: &Path, args: &[&str], dir: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let line = format!("cargo build {}", args.join(" "));
    eprintln!("bench: {line}");
    let status = Command::new(cargo)
        .arg("build")
        .args(args)
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        if args.contains(&TARGET) {
            bail!("{line} failed ({status}); {}", devhost::package::build_hint(TARGET));
        }
        bail!("{line} failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join(dir).join(bin);
    anyhow::ensure!(path.is_file(), "no {bin} binary at {}", path.display());
    Ok(path)
}

/// The Python peer's interpreter: `target/bench-venv`, made and filled from
/// `bench/python_peer/requirements.txt` unless it already holds exactly
/// those requirements. With `create` false, only an existing venv is used.
pub fn python_venv(root: &Path, create: bool) -> anyhow::Result<Option<PathBuf>> {
    let venv = root.join("target").join("bench-venv");
    let python = venv.join("bin").join("python");
    let requirements = root.join("bench").join("python_peer").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).context("reading requirements.txt")?;
    let stamp = venv.join("bench-requirements.txt");
    if python.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(Some(python));
    }
    if !create {
        return Ok(None);
    }
    eprintln!(
        "bench: python3 -m venv {} && pip install -r {}",
        venv.display(),
        requirements.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .context("python3 -m venv")?
        .success()
        && Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements)
            .status()
            .context("pip install")?
            .success();
    if !ok {
        bail!("could not set up the Python peer's virtualenv in {}", venv.display());
    }
    std::fs::write(&stamp, wanted)?;
    Ok(Some(python))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own target is always there; a made-up one never is, nor
    /// one rustc knows but rustup has no library for (tier 3).
    #[test]
    fn a_rust_target_is_there_when_its_library_is() {
        let host = String::from_utf8(
            Command::new(rustc())
                .args(["--print", "host-tuple"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(has_rust_target(host.trim()), "{host}");
        assert!(!has_rust_target("x86_64-unknown-nowhere-musl"));
        assert!(!has_rust_target("x86_64-unknown-haiku"));
    }
}
