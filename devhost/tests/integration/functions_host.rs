//! `HandlerProcess` against a tiny echoing handler (a Python script, so
//! these tests need `python3` and fail, never skip, without it): start-up
//! environment, readiness, forwarding, chunked envelope invocations and SIGTERM.

use devhost::functions_host::{timer_info, HandlerProcess, HOST_VERSION};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The fake handler script. Panics, with how to fix it, when `python3`
/// cannot run: a test that skipped would pass without checking anything.
fn fake_handler() -> PathBuf {
    let hint = "the fake handler these tests drive is a Python script; \
                install python3 (`sudo apt-get install -y python3`) or put it on PATH";
    match std::process::Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`python3 --version` failed ({}): {}; {hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run python3: {e}; {hint}"),
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_handler.py")
}

/// The host side of the protocol as a handler sees it: the start-up
/// environment and working directory, forwarded requests with the host's
/// headers, a chunked timer envelope, and SIGTERM leading to a clean exit.
#[tokio::test]
async fn speaks_the_host_protocol() {
    let bin = fake_handler();
    let root = tempfile::tempdir().unwrap();
    let env = vec![("FAKE_EXTRA".to_string(), "yes".to_string())];
    let mut h = HandlerProcess::spawn(&bin, root.path(), &env).await.unwrap();

    let rsp = h.forward(Method::GET, "/api/ping?a=1", None).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let echo: Value = rsp.json().await.unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/ping?a=1");
    assert_eq!(echo["headers"]["x-azure-functions-hostversion"], HOST_VERSION);
    assert_eq!(
        echo["headers"]["x-azure-functions-invocationid"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
    assert!(echo["headers"].get("content-length").is_none());
    let port = h.port().to_string();
    assert_eq!(echo["env"]["FUNCTIONS_CUSTOMHANDLER_PORT"], port.as_str());
    assert_eq!(echo["env"]["FUNCTIONS_HTTPWORKER_PORT"], port.as_str());
    assert_eq!(echo["env"]["FAKE_EXTRA"], "yes");
    let cwd = std::fs::canonicalize(root.path()).unwrap();
    assert_eq!(echo["cwd"], cwd.to_str().unwrap());

    let rsp = h.forward(Method::PUT, "/api/cache/k", Some(b"v1".to_vec()));
    let echo: Value = rsp.await.unwrap().json().await.unwrap();
    assert_eq!(echo["body"], "v1");

    let rsp = h.invoke_timer("CacheHealthCheck", "myTimer", timer_info(true, false));
    let echo: Value = rsp.await.unwrap().json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/CacheHealthCheck");
    let hd = &echo["headers"];
    assert_eq!(hd["transfer-encoding"], "chunked");
    assert!(hd.get("content-length").is_none());
    assert_eq!(hd["content-type"], "application/json; charset=utf-8");
    assert_eq!(hd["user-agent"], format!("Azure-Functions-Host/{HOST_VERSION}"));
    assert!(hd["traceparent"].as_str().unwrap().starts_with("00-"));
    let env: Value = serde_json::from_str(echo["body"].as_str().unwrap()).unwrap();
    assert_eq!(env["Data"]["myTimer"]["IsPastDue"], json!(true));
    assert_eq!(env["Metadata"]["sys"]["MethodName"], "CacheHealthCheck");

    assert!(h.stdout().contains("listening"));
    assert!(h.stderr().contains("req "));
    let status = h.terminate(Duration::from_secs(5)).await.unwrap();
    assert!(status.success());
    // The process is gone; its last line may still be on its way through the pipe.
    let exited = std::time::Instant::now();
    while !h.stdout().contains("got SIGTERM") {
        assert!(
            exited.elapsed() < Duration::from_secs(5),
            "no \"got SIGTERM\" in:\n{}",
            h.stdout()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler that exits during start-up is reported as an error carrying its stderr.
#[tokio::test]
async fn reports_an_early_exit_with_stderr() {
    let bin = fake_handler();
    let root = tempfile::tempdir().unwrap();
    let env = vec![("FAKE_EXIT".to_string(), "1".to_string())];
    let err = HandlerProcess::spawn(&bin, root.path(), &env).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("refusing to start"), "{msg}");
}
