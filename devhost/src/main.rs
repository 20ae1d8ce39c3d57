//! `devhost`: run the function app locally, invoke a function by hand, and
//! package the app for Azure, without the Functions Core Tools.
//!
//! ```text
//! cargo devhost start                     # = cargo run -p devhost -- start
//! cargo devhost start --cluster           # against a local 3-master TLS Redis Cluster
//! cargo devhost invoke CacheHealthCheck
//! cargo devhost invoke Ping
//! cargo devhost package                   # dist/functionapp.zip
//! cargo devhost doctor                    # check sign-in, network, certificate, access policy
//! cargo devhost maintenance restart       # play Azure's maintenance against a running `start`
//! ```
//!
//! The work is done in the library: [`devhost::local`], [`devhost::invoke`],
//! [`devhost::package`], [`devhost::doctor`].

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Run, invoke and package the Azure Functions custom handler locally.
#[derive(Parser)]
#[command(name = "devhost", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the function app locally: build the handler, start a local TLS redis-server and managed-identity
    /// endpoint (unless settings name a real cache), serve http://127.0.0.1:7071/api/..., fire timers.
    Start(StartArgs),
    /// Send one function its invocation, straight to a running handler, and print the answer.
    Invoke(InvokeArgs),
    /// Build the release handler for Linux x86-64 and write the deployable zip.
    Package(PackageArgs),
    /// Check, without serving anything, the cache connection the app would make with its local settings:
    /// credential, token and user name, network, certificate, access policy, PING; each step with its timing.
    Doctor(DoctorArgs),
    /// Play Azure's routine maintenance against the built-in cache of a running `devhost start`, to watch the
    /// app ride through it: a node restarting, a failover, or the endpoint moving (Redis's MOVING handoff).
    Maintenance(MaintenanceArgs),
}

#[derive(Args)]
struct MaintenanceArgs {
    /// What to play: restart (AzureRedisEvents around a 2 s restart; on a cluster, a killed master), failover
    /// (AzureRedisEvents around every connection closed; on a cluster, CLUSTER FAILOVER), moving (MOVING to a
    /// second front end; one server only).
    #[arg(value_parser = ["restart", "failover", "moving"])]
    play: String,
    /// The local host's URL [default: the running `devhost start`'s].
    #[arg(long)]
    url: Option<String>,
    /// The function app root [default: the nearest one up from here].
    #[arg(long)]
    app_root: Option<PathBuf>,
}

#[derive(Args)]
struct DoctorArgs {
    /// The function app root (holding host.json and local.settings.json) [default: the nearest one up from here].
    #[arg(long)]
    app_root: Option<PathBuf>,
    /// Run this handler binary's check instead of building one with `cargo build --bin handler`.
    #[arg(long)]
    handler: Option<PathBuf>,
}

#[derive(Args)]
struct StartArgs {
    /// Port to serve on [default: local.settings.json Host.LocalHttpPort, else 7071].
    #[arg(long)]
    port: Option<u16>,
    /// The function app root (holding host.json) [default: the nearest one up from here].
    #[arg(long)]
    app_root: Option<PathBuf>,
    /// Run this handler binary instead of building one with `cargo build --bin handler`.
    #[arg(long)]
    handler: Option<PathBuf>,
    /// Build the handler with --release.
    #[arg(long)]
    release: bool,
    /// Use the built-in local cache even when local.settings.json or the environment name a real one.
    #[arg(long)]
    local: bool,
    /// Make the built-in local cache a TLS Redis Cluster (3 masters with a replica each, ACL users and the
    /// identity's tokens on every node, certificate naming only localhost) instead of one redis-server;
    /// implies --local. The handler gets Redis__redisHostName=localhost and one master's port.
    #[arg(long)]
    cluster: bool,
    /// Replace a timer's schedule, e.g. CacheHealthCheck="*/10 * * * * *" (repeatable).
    #[arg(long, value_name = "FUNCTION=NCRONTAB", value_parser = parse_pair)]
    schedule_override: Vec<(String, String)>,
    /// Draw each invocation's trace (its spans on a time line, from the handler's OpenTelemetry export to
    /// devhost's receiver) as it arrives, and each background trace (a token refresh, a re-AUTH).
    #[arg(long)]
    traces: bool,
}

#[derive(Args)]
struct InvokeArgs {
    /// The function's name (its folder name).
    function: String,
    /// The handler's base URL [default: the handler of the running `devhost start`].
    #[arg(long)]
    url: Option<String>,
    /// The function app root [default: the nearest one up from here].
    #[arg(long)]
    app_root: Option<PathBuf>,
    /// The trigger's value as JSON (a TimerInfo for a timer) [default for a timer: one from its schedule].
    #[arg(long, value_parser = parse_json, conflicts_with = "past_due")]
    data: Option<serde_json::Value>,
    /// Timer: send IsPastDue: true.
    #[arg(long)]
    past_due: bool,
    /// HTTP: the method [default: the function's first method].
    #[arg(long, short = 'X')]
    method: Option<String>,
    /// HTTP: path and query, e.g. /api/cache/k1?ttl=60 [default: the route, if it has no parameters].
    #[arg(long)]
    path: Option<String>,
    /// HTTP: the request body.
    #[arg(long, short = 'd')]
    body: Option<String>,
    /// HTTP: a header, `Name: value` (repeatable).
    #[arg(long, short = 'H', value_parser = parse_header)]
    header: Vec<(String, String)>,
    /// HTTP: send the host's envelope (Data.req) even when forwarding applies.
    #[arg(long)]
    envelope: bool,
    /// Do not draw the invocation's trace after the answer.
    #[arg(long)]
    no_trace: bool,
}

#[derive(Args)]
struct PackageArgs {
    /// Where to write the zip [default: <app root>/dist/functionapp.zip].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rust target to build for [default: x86_64-unknown-linux-musl, a static binary].
    #[arg(long)]
    target: Option<String>,
    /// Package this handler binary instead of building one.
    #[arg(long)]
    handler: Option<PathBuf>,
    /// The function app root [default: the nearest one up from here].
    #[arg(long)]
    app_root: Option<PathBuf>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected FUNCTION=SCHEDULE")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once(':').ok_or("expected `Name: value`")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

/// `given`, or the nearest folder from the current one upwards holding host.json.
fn app_root(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return std::fs::canonicalize(&p).with_context(|| format!("--app-root {}", p.display()));
    }
    let cwd = std::env::current_dir()?;
    cwd.ancestors()
        .find(|d| d.join("host.json").is_file())
        .map(Path::to_path_buf)
        .with_context(|| format!("no host.json in {} or above; pass --app-root", cwd.display()))
}

// One thread: children tied to this process (PR_SET_PDEATHSIG) are tied to
// the thread that spawned them, which must live as long as they do.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("devhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Start(a) => {
            let opts = devhost::local::StartOptions {
                app_root: app_root(a.app_root)?,
                port: a.port,
                handler: a.handler,
                release: a.release,
                schedule_overrides: a.schedule_override,
                force_local: a.local,
                cluster: a.cluster,
                traces: a.traces,
            };
            devhost::local::run(opts).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Invoke(a) => {
            let req = devhost::invoke::InvokeRequest {
                app_root: app_root(a.app_root)?,
                function: a.function,
                url: a.url,
                data: a.data,
                past_due: a.past_due,
                method: a.method,
                path: a.path,
                body: a.body,
                headers: a.header,
                envelope: a.envelope,
            };
            let answer = devhost::invoke::invoke(&req).await?;
            let ms = answer.elapsed.as_secs_f64() * 1000.0;
            eprintln!("{} -> {} ({ms:.1} ms)", answer.sent, answer.status);
            println!("{}", answer.body_text());
            if !a.no_trace {
                eprint!("{}", devhost::invoke::trace_view(&req, &answer).await);
            }
            let ok = (200..300).contains(&answer.status);
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Doctor(a) => {
            let opts = devhost::doctor::DoctorOptions {
                app_root: app_root(a.app_root)?,
                handler: a.handler,
            };
            devhost::doctor::run(&opts).await
        }
        Command::Maintenance(a) => {
            let url = match a.url {
                Some(url) => url,
                None => devhost::local::run_file::read(&app_root(a.app_root)?)?.host_url,
            };
            println!(
                "devhost maintenance {}: playing against {url} (its console shows the invocations)",
                a.play
            );
            let res = reqwest::Client::new()
                .post(format!("{url}/admin/devhost/maintenance/{}", a.play))
                .send()
                .await
                .with_context(|| format!("reaching the local host at {url}"))?;
            let status = res.status();
            if !status.is_success() {
                anyhow::bail!("{status}: {}", res.text().await.unwrap_or_default().trim());
            }
            let body: serde_json::Value = res.json().await?;
            for step in body["steps"].as_array().into_iter().flatten() {
                println!(
                    "  {:>7.1} s  {}",
                    step["at_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                    step["what"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Package(a) => {
            let root = app_root(a.app_root)?;
            let req = devhost::package::PackageRequest {
                out: a.out.unwrap_or_else(|| root.join("dist").join("functionapp.zip")),
                app_root: root,
                target: a.target,
                handler: a.handler,
            };
            let (handler, entries) = devhost::package::build_and_package(&req)?;
            println!(
                "{} ({} entries, handler from {}):",
                req.out.display(),
                entries.len(),
                handler.display()
            );
            for e in entries {
                println!("  {e}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
