//! `.devhost/run.json` in the app root: where a running `devhost start`
//! serves and where its handler listens, so `devhost invoke` finds them
//! without flags. Written at start, removed at stop (only by its writer).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The folder (gitignored) for local-run state.
pub const STATE_DIR: &str = ".devhost";

/// What a running `devhost start` publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The `devhost start` process.
    pub pid: u32,
    /// The local host, `http://127.0.0.1:7071`.
    pub host_url: String,
    /// The handler, `http://127.0.0.1:<port>`.
    pub handler_url: String,
}

fn path(app_root: &Path) -> PathBuf {
    app_root.join(STATE_DIR).join("run.json")
}

/// Removes the run file on drop if it still holds what was written.
#[derive(Debug)]
pub struct RunFile {
    path: PathBuf,
    info: RunInfo,
}

impl RunFile {
    /// Writes `info` to `<app_root>/.devhost/run.json`.
    pub fn write(app_root: &Path, info: RunInfo) -> anyhow::Result<RunFile> {
        let path = path(app_root);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(&path, serde_json::to_vec_pretty(&info)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(RunFile { path, info })
    }
}

impl Drop for RunFile {
    fn drop(&mut self) {
        let ours = std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<RunInfo>(&b).ok())
            .is_some_and(|i| i == self.info);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The running `devhost start` for `app_root`, if its process is alive.
pub fn read(app_root: &Path) -> anyhow::Result<RunInfo> {
    let path = path(app_root);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no running devhost found ({} is missing); start one with `cargo devhost start`, or pass --url",
            path.display()
        )
    })?;
    let info: RunInfo = serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))?;
    // SAFETY: kill(pid, 0) only checks that the process exists.
    let alive = unsafe { libc::kill(info.pid as libc::pid_t, 0) } == 0;
    anyhow::ensure!(
        alive,
        "the devhost that wrote {} (pid {}) is gone; start one with `cargo devhost start`, or pass --url",
        path.display(),
        info.pid
    );
    Ok(info)
}
