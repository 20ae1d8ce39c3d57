//! `devhost start`'s trace view end to end, with the fake handler (which,
//! given `OTEL_EXPORTER_OTLP_ENDPOINT`, exports a SERVER span and a Redis
//! GET under it over OTLP/JSON for each request carrying a `traceparent`):
//! the handler gets devhost's receiver, `--traces` draws each invocation,
//! `devhost invoke` draws its own; an endpoint in the app's settings wins.
//! Each test runs in an app root of its own (the repository's host.json and
//! functions), so none shares `.devhost/run.json` with `local_run`.
//! Needs `redis-server` on PATH, as the other `devhost start` tests do.

use super::local_run::{devhost, free_port, repo_root, Guard, Lines};
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

fn fake_handler() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_handler.py")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_dir(&entry.path(), &dest),
            false => drop(std::fs::copy(entry.path(), dest).unwrap()),
        }
    }
}

/// The repository's app (host.json and functions) in a folder of its own,
/// with a local.settings.json of `values`.
fn app_root(values: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("host.json"), dir.path().join("host.json")).unwrap();
    copy_dir(&repo_root().join("function-app"), &dir.path().join("function-app"));
    let file = serde_json::json!({"IsEncrypted": false, "Values": values});
    std::fs::write(dir.path().join("local.settings.json"), file.to_string()).unwrap();
    dir
}

/// `devhost start --local --traces` with the fake handler in `root`, ready.
fn start(root: &Path) -> (Guard, Lines) {
    let mut child = devhost(&["start", "--local", "--traces", "--port", &free_port().to_string()])
        .arg("--app-root")
        .arg(root)
        .arg("--handler")
        .arg(fake_handler())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("devhost starts");
    let lines = Lines::default();
    lines.follow(child.stdout.take().unwrap());
    lines.follow(child.stderr.take().unwrap());
    let guard = Guard(child);
    lines.wait_for("Ready", Duration::from_secs(60), |l| l.starts_with("Ready: "));
    (guard, lines)
}

/// `devhost invoke Ping` against the running start in `root`: the echoed
/// request (stdout) and what it printed on stderr.
fn invoke(root: &Path) -> (Value, String) {
    let out = devhost(&["invoke", "Ping", "--app-root"]).arg(root).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (serde_json::from_slice(&out.stdout).expect("the echo"), stderr)
}

/// The handler gets the receiver's endpoint (named on the banner) and the
/// short intervals; `devhost invoke` sends a traceparent and draws that
/// trace's invocation with its GET; `--traces` draws it on the console.
#[test]
fn invoke_and_start_draw_the_invocation() {
    let root = app_root(serde_json::json!({}));
    let (_guard, lines) = start(root.path());
    let banner = lines.wait_for("the otlp line", Duration::from_secs(1), |l| {
        l.trim_start().starts_with("otlp ")
    });
    let endpoint = banner.split_whitespace().nth(1).unwrap().to_owned();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{banner}");

    let (echo, stderr) = invoke(root.path());
    assert_eq!(echo["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"], endpoint.as_str());
    assert_eq!(echo["env"]["OTEL_BSP_SCHEDULE_DELAY"], "200");
    assert_eq!(echo["env"]["OTEL_METRIC_EXPORT_INTERVAL"], "5000");
    let traceparent = echo["headers"]["traceparent"]
        .as_str()
        .expect("invoke sends a traceparent");
    let short = &traceparent[3..11];
    let drawn: Vec<&str> = stderr.lines().skip_while(|l| !l.starts_with("GET /api/ping")).collect();
    assert!(drawn.len() >= 2, "a waterfall after the answer:\n{stderr}");
    assert!(
        drawn[0].contains("status 200") && drawn[0].ends_with(&format!("trace {short}")),
        "{stderr}"
    );
    assert!(drawn[1].starts_with("└─ GET  127.0.0.1:6380"), "{stderr}");
    lines.wait_for("the console's drawing", Duration::from_secs(5), |l| {
        l.trim_start().starts_with("GET /api/ping") && l.ends_with(&format!("trace {short}"))
    });
}

/// An endpoint in local.settings.json wins: the handler gets it, the banner
/// says so, and `devhost invoke` says there is no trace view.
#[test]
fn the_apps_own_endpoint_wins() {
    let theirs = format!("http://127.0.0.1:{}", free_port());
    let root = app_root(serde_json::json!({ "OTEL_EXPORTER_OTLP_ENDPOINT": theirs }));
    let (_guard, lines) = start(root.path());
    let banner = lines.wait_for("the otlp line", Duration::from_secs(1), |l| {
        l.trim_start().starts_with("otlp ")
    });
    assert!(
        banner.contains(&theirs) && banner.contains("from the app's settings"),
        "{banner}"
    );

    let (echo, stderr) = invoke(root.path());
    assert_eq!(echo["env"]["OTEL_EXPORTER_OTLP_ENDPOINT"], theirs.as_str());
    assert_eq!(echo["env"]["OTEL_BSP_SCHEDULE_DELAY"], Value::Null);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("(no trace view: ") && last.contains("send it elsewhere"),
        "{stderr}"
    );
}
