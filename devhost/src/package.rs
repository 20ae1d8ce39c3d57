//! The deployable zip: `host.json`, one folder per function with its
//! `function.json`, and the handler binary with its executable bit, all at
//! the zip's root, and nothing else.
//!
//! Follows docs/azure.md "Deploy": the binary must match the platform (Linux
//! x86-64), and a lost executable bit on Linux is a known failure (host
//! #5696, core-tools #2510), so the entry carries Unix mode 0o755;
//! `local.settings.json` stays out. Entries have a fixed timestamp and order,
//! so the same inputs give the same zip.

use crate::app_manifest::AppManifest;
use crate::cargo_build::{self, BuildRequest};
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// What the handler is built for: Linux x86-64 (the platform Azure
/// Functions runs a Linux custom handler on), linked statically against
/// musl. A static binary runs whatever C library the Functions image has
/// (no `GLIBC_2.xx not found`), and is 2 MiB smaller in memory than one
/// that maps glibc's shared libraries, at the same throughput
/// (BENCHMARKS.md, "Memory"). It needs `rustup target add
/// x86_64-unknown-linux-musl` and `musl-gcc` (Debian's `musl-tools`) for the
/// C in mimalloc and ring.
pub const AZURE_TARGET: &str = "x86_64-unknown-linux-musl";

/// Unix mode of the handler entry (rwxr-xr-x).
pub const EXECUTABLE_MODE: u32 = 0o755;

/// Writes the zip for the app at `app_root` with `handler` as its
/// executable (named as host.json's `defaultExecutablePath`) to `out`
/// (parent folders created; written to a temporary file, then renamed).
/// Returns the entry names in order.
pub fn write_zip(app_root: &Path, handler: &Path, out: &Path) -> anyhow::Result<Vec<String>> {
    let manifest = AppManifest::load(app_root)?;
    if manifest.functions.is_empty() {
        bail!(
            "no function folders with a function.json under {}",
            manifest.functions_dir.display()
        );
    }
    let exe_name = entry_name(&manifest.host.executable)?;
    let mut files: Vec<(String, PathBuf, u32)> = vec![("host.json".into(), app_root.join("host.json"), 0o644)];
    for f in &manifest.functions {
        let path = manifest.functions_dir.join(&f.name).join("function.json");
        files.push((format!("{}/function.json", f.name), path, 0o644));
    }
    files.push((exe_name, handler.to_path_buf(), EXECUTABLE_MODE));

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut zip = zip::ZipWriter::new(tmp.reopen()?);
    for (name, path, mode) in &files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(*mode)
            .large_file(bytes.len() as u64 >= u32::MAX as u64);
        zip.start_file(name.as_str(), opts)?;
        zip.write_all(&bytes)?;
    }
    zip.finish()?.sync_all()?;
    std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(out).with_context(|| format!("writing {}", out.display()))?;
    Ok(files.into_iter().map(|(name, _, _)| name).collect())
}

/// `defaultExecutablePath` as a zip entry name: relative, `/`-separated, no `..`.
fn entry_name(executable: &str) -> anyhow::Result<String> {
    let p = Path::new(executable);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => bail!("host.json defaultExecutablePath {executable:?} must be a path inside the app"),
        }
    }
    if parts.is_empty() {
        bail!("host.json defaultExecutablePath is empty");
    }
    Ok(parts.join("/"))
}

/// Checks that `path` is an ELF executable for x86-64, as Azure's Linux
/// workers need (a macOS or ARM build starts nowhere there).
pub fn check_linux_x86_64(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = Vec::with_capacity(20);
    std::io::Read::read_to_end(&mut std::io::Read::take(f, 20), &mut head)?;
    // ELF magic, 64-bit class, little-endian, e_machine = EM_X86_64 (0x3e).
    let ok =
        head.len() == 20 && head.starts_with(b"\x7fELF") && head[4] == 2 && head[5] == 1 && head[18..] == [0x3e, 0];
    if !ok {
        bail!(
            "{} is not a Linux x86-64 executable; Azure Functions runs the handler on Linux x86-64",
            path.display()
        );
    }
    Ok(())
}

/// What `devhost package` does.
#[derive(Debug, Clone)]
pub struct PackageRequest {
    /// The app root (host.json, function folders, Cargo workspace).
    pub app_root: PathBuf,
    /// Where to write the zip.
    pub out: PathBuf,
    /// `--target` for the build; `None` builds for [`AZURE_TARGET`].
    pub target: Option<String>,
    /// A handler built elsewhere: package it instead of building.
    pub handler: Option<PathBuf>,
}

/// Builds the release handler for [`AZURE_TARGET`] (or the target asked
/// for), unless given one, checks it, and writes the zip. Returns the
/// handler used and the entry names.
pub fn build_and_package(req: &PackageRequest) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let handler = match &req.handler {
        Some(h) => h.clone(),
        None => {
            let manifest = AppManifest::load(&req.app_root)?;
            let bin = Path::new(&manifest.host.executable)
                .file_name()
                .context("defaultExecutablePath has no file name")?
                .to_string_lossy()
                .into_owned();
            let target = req.target.as_deref().unwrap_or(AZURE_TARGET);
            let build = BuildRequest {
                dir: &req.app_root,
                bin: &bin,
                release: true,
                target: Some(target),
            };
            eprintln!("devhost: {}", cargo_build::describe(&build));
            cargo_build::build(&build).with_context(|| build_hint(target))?
        }
    };
    check_linux_x86_64(&handler)?;
    let entries = write_zip(&req.app_root, &handler, &req.out)?;
    Ok((handler, entries))
}

/// What a failed build for `target` most likely lacks (also the bench's
/// message when its build of the handler fails).
pub fn build_hint(target: &str) -> String {
    let mut hint = format!(
        "building the handler for {target}: the target needs `rustup target add {target}` and a C compiler \
         and linker for it"
    );
    if target == AZURE_TARGET {
        let native = cfg!(all(target_os = "linux", target_arch = "x86_64"));
        hint.push_str(if native {
            " (`musl-gcc`: on Debian or Ubuntu, `apt-get install musl-tools`)"
        } else {
            " (e.g. `cargo install cargo-zigbuild`, then `cargo zigbuild --release --target \
             x86_64-unknown-linux-musl` and pass the binary with --handler), or build on Linux x86-64 \
             (CI, a container)"
        });
    }
    hint
}
