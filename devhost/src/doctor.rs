//! `devhost doctor`: the handler's first-run check (`handler doctor`) with
//! the settings the app would get locally: `local.settings.json` `Values`
//! under the environment, as `devhost start` and `func start` merge them.
//!
//! The check itself lives in the handler (`src/doctor.rs`), so that it
//! resolves the credential, the TLS roots and the connection exactly as the
//! handler does, and so that it can also run in Azure, from the app's
//! console, with the real app settings.

use crate::app_manifest::AppManifest;
use crate::local_settings::{CacheTarget, LocalSettings, MergedSettings};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

/// What `devhost doctor` checks with.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// The app root (host.json, local.settings.json, the Cargo workspace).
    pub app_root: PathBuf,
    /// A handler binary to run instead of building one.
    pub handler: Option<PathBuf>,
}

/// Runs `handler doctor` with the merged settings; its exit code is ours
/// (0 all passed, 1 a step failed, 2 bad settings).
pub async fn run(opts: &DoctorOptions) -> anyhow::Result<ExitCode> {
    let manifest = AppManifest::load(&opts.app_root)?;
    let file = LocalSettings::load(&opts.app_root)?;
    let settings = MergedSettings::merge(&file, |k| std::env::var(k).ok());
    if settings.cache_target() == CacheTarget::Local {
        bail!(
            "no cache is configured: set Redis__redisHostName (or the Redis connection string) in \
             local.settings.json or the environment to check a real cache; `devhost start` without one \
             runs the built-in local cache, which needs no check"
        );
    }
    let binary = crate::cargo_build::handler_binary(&opts.app_root, &manifest, opts.handler.as_deref(), false)?;
    let status = tokio::process::Command::new(&binary)
        .arg("doctor")
        .envs(&settings.from_file)
        .current_dir(&opts.app_root)
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {} doctor", binary.display()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
