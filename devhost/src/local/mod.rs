//! `devhost start`: the function app on this machine in one command, doing
//! for a custom handler what `func start` does, without the .NET Core Tools.
//!
//! It reads `host.json` and the function folders ([`crate::app_manifest`]),
//! builds the handler with Cargo unless given one, starts the built-in cache
//! ([`stack`]; one TLS `redis-server`, or with `--cluster` a TLS Redis
//! Cluster of 3 masters with a replica each) unless `local.settings.json` or
//! the environment names a real one ([`crate::local_settings`]), starts the
//! handler as the host does ([`crate::functions_host`]), serves the functions at
//! `http://127.0.0.1:<port>/api/...` ([`http`], [`routes`]; proxied as
//! host.json's `enableProxyingHttpRequest` says in `proxy.rs`), fires timers
//! on their schedule ([`timer`]), and prints each invocation ([`console`]).
//! The handler exports its OpenTelemetry traces and metrics to an OTLP
//! receiver of devhost's own unless the app names an endpoint
//! ([`telemetry`]); with `--traces` each invocation's spans are drawn as
//! they arrive, and `devhost invoke` draws its own through [`traces`].
//! Ctrl-C or SIGTERM stops the timers and the listener, lets the handler
//! drain, then stops the cache: nothing is left running.

pub mod console;
pub mod http;
pub mod maintenance;
mod proxy;
pub mod routes;
pub mod run_file;
pub mod stack;
pub mod state;
pub mod telemetry;
pub mod timer;
pub mod traces;

use crate::app_manifest::AppManifest;
use crate::cargo_build;
use crate::local_settings::{CacheTarget, LocalSettings, MergedSettings};
use crate::otlp::{Behaviour, Receiver};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The port `func start` uses by default.
pub const DEFAULT_PORT: u16 = 7071;

/// What `devhost start` runs.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The app root (host.json, function folders, Cargo workspace).
    pub app_root: PathBuf,
    /// The port; `None`: `local.settings.json` `Host.LocalHttpPort`, else 7071.
    pub port: Option<u16>,
    /// A handler binary to run instead of building one.
    pub handler: Option<PathBuf>,
    /// Build the handler with `--release`.
    pub release: bool,
    /// `(function, schedule)` pairs replacing timer schedules.
    pub schedule_overrides: Vec<(String, String)>,
    /// Use the built-in local cache even when settings name a real one.
    pub force_local: bool,
    /// Make the built-in cache a Redis Cluster (implies `force_local`).
    pub cluster: bool,
    /// Draw each invocation's spans (and each background trace's) on the
    /// console as they arrive at devhost's OTLP receiver.
    pub traces: bool,
}

/// Runs the app until Ctrl-C/SIGTERM/SIGHUP (then `Ok`) or until the
/// handler exits by itself (then an error).
pub async fn run(opts: StartOptions) -> anyhow::Result<()> {
    let manifest = AppManifest::load(&opts.app_root)?;
    let file = LocalSettings::load(&opts.app_root)?;
    let settings = MergedSettings::merge(&file, |k| std::env::var(k).ok());
    for k in &settings.skipped {
        println!("Skipping '{k}' from local settings as it's already defined in current environment variables.");
    }
    let timers = timer::plan(&manifest, &opts.schedule_overrides, |k| settings.get(k))?;
    let port = opts.port.or(file.local_http_port).unwrap_or(DEFAULT_PORT);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} (in use? pick another with --port)"))?;
    let base_url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());

    let binary = cargo_build::handler_binary(&opts.app_root, &manifest, opts.handler.as_deref(), opts.release)?;
    let cache = match opts.force_local || opts.cluster {
        true => CacheTarget::Local,
        false => settings.cache_target(),
    };
    let topology = match opts.cluster {
        true => stack::LocalTopology::Cluster,
        false => stack::LocalTopology::Single,
    };
    let (receiver, otel_env, otel_line) = start_telemetry(&settings, opts.traces).await?;
    let mut stack = stack::Stack::start(&manifest, &settings, &cache, topology, &binary, &otel_env).await?;
    print_processes(&stack, &cache, &binary).await;
    println!("{otel_line}");
    let described: Vec<(String, String)> = timers.iter().map(|t| (t.function.clone(), t.describe())).collect();
    console::functions(&manifest, &base_url, &described);

    let shared = Arc::new(state::HostState {
        routes: routes::RouteTable::new(&manifest),
        manifest,
        handler: stack.handler.client(),
        timers: timers.into_iter().map(Arc::new).collect(),
        log: console::InvocationLog::default(),
        local: stack.local.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    // The caller's address is the proxy's X-Forwarded-For.
    let app = http::router(shared.clone())
        .merge(traces::router(receiver.clone()))
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = server_stop.wait_for(|s| *s).await;
    });
    let server = tokio::spawn(async move { server.await });
    let timer_tasks: Vec<_> = shared
        .timers
        .iter()
        .map(|t| {
            let (t, s, stop) = (t.clone(), shared.clone(), stop_rx.clone());
            tokio::spawn(async move { t.run(&s.handler, &s.log, stop).await })
        })
        .collect();
    let drawing = match (&receiver, opts.traces) {
        (Some(r), true) => Some(tokio::spawn(telemetry::print_traces(r.clone()))),
        _ => None,
    };
    let run_file = run_file::RunFile::write(
        &opts.app_root,
        run_file::RunInfo {
            pid: std::process::id(),
            host_url: base_url.clone(),
            handler_url: stack.handler.base_url(),
        },
    )?;
    console::ready(&base_url);

    let outcome = tokio::select! {
        signal = shutdown_signal() => Ok(signal),
        status = stack.handler.wait() => Err(anyhow::anyhow!(
            "the handler exited by itself ({}); stopping",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        )),
    };
    match &outcome {
        Ok(signal) => println!("\n{signal}: stopping (Ctrl+C again to kill at once)"),
        Err(e) => println!("\n{e}"),
    }
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("devhost: killed");
        std::process::exit(130);
    });
    let _ = stop_tx.send(true);
    for t in timer_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    // The receiver outlives the handler, which flushes its spans on the way out.
    let status = stack.stop().await;
    if let Some(d) = drawing {
        d.abort();
    }
    drop(receiver);
    drop(run_file);
    println!("devhost: handler stopped ({status}); local cache and identity stopped; done");
    outcome.map(|_| ())
}

/// devhost's OTLP receiver (`None` when the app's settings name their own
/// endpoint), the handler's variables for it, and the banner's line.
async fn start_telemetry(
    settings: &MergedSettings,
    traces: bool,
) -> anyhow::Result<(Option<Arc<Receiver>>, Vec<(String, String)>, String)> {
    let receiver = Receiver::start(Behaviour::Accept)
        .await
        .context("starting the OTLP receiver")?;
    let endpoint = receiver.endpoint();
    Ok(match telemetry::destination(|k| settings.get(k), &endpoint) {
        telemetry::Destination::Own(env) => {
            let shown = match traces {
                true => "each invocation's spans drawn below",
                false => "--traces draws each invocation's spans",
            };
            let line = format!(
                "  otlp          {endpoint}  (OpenTelemetry receiver for the handler's traces and metrics; {shown})"
            );
            (Some(Arc::new(receiver)), env, line)
        }
        telemetry::Destination::Theirs(name, value) => {
            let line = format!(
                "  otlp          {value}  ({name} from the app's settings: the handler's telemetry goes there, \
                 not to devhost; no trace view)"
            );
            (None, Vec::new(), line)
        }
    })
}

async fn print_processes(stack: &stack::Stack, cache: &CacheTarget, binary: &std::path::Path) {
    println!();
    if let Some(local) = &stack.local {
        match &local.redis {
            stack::LocalRedis::Single(r) => {
                // The admin password stays out of the output, like every secret.
                println!(
                    "  redis-server  pid {}  TLS 127.0.0.1:{} (built-in local cache; admin port {}, password not printed)",
                    r.pid().unwrap_or(0),
                    r.tls_port(),
                    r.plain_port(),
                );
                if let Some(front) = &local.front {
                    println!(
                        "  front end     TLS 127.0.0.1:{}  (checks tokens as Azure does; `cargo devhost maintenance \
                         restart|failover|moving` plays maintenance through it)",
                        front.port()
                    );
                }
            }
            stack::LocalRedis::Cluster(c) => print_cluster(c).await,
        }
        println!(
            "  identity      {}  (App Service managed identity; Redis user {}{})",
            local.identity.endpoint_url(),
            local.identity.oid(),
            match &local.redis {
                stack::LocalRedis::Single(_) => String::new(),
                stack::LocalRedis::Cluster(c) => format!(", its tokens accepted on all {} nodes", c.len()),
            }
        );
    }
    if let CacheTarget::Real(desc) = cache {
        println!("  cache         {desc}  (from the environment / local.settings.json)");
    }
    let h = &stack.handler;
    println!(
        "  handler       pid {}  {}  ({})",
        h.pid(),
        h.base_url(),
        binary.display()
    );
}

/// One line for the cluster, then one per node: role, slots, ports, pid.
async fn print_cluster(c: &crate::redis_cluster::RedisCluster) {
    let masters = c.masters().await.unwrap_or_default();
    let first = c.node(0).tls_port();
    println!(
        "  redis-cluster {}:{first}  (built-in local cache: Redis Cluster, {} masters and {} replicas, TLS; \
         certificate for {} only, nodes announced as 127.0.0.1; admin password not printed)",
        c.host_name(),
        masters.len(),
        c.len() - masters.len(),
        c.host_name(),
    );
    let port_of = |i: usize| c.node(i).tls_port();
    for i in 0..c.len() {
        let node = c.node(i);
        let role = match masters.iter().find(|m| m.index == i) {
            Some(m) => {
                let slots: Vec<String> = m.slots.iter().map(|r| format!("{}-{}", r.start(), r.end())).collect();
                format!("master   slots {}", slots.join(","))
            }
            None => match masters.iter().find(|m| m.replicas.contains(&i)) {
                Some(m) => format!("replica  of :{}", port_of(m.index)),
                None => "node".to_owned(),
            },
        };
        println!(
            "  redis-server  pid {}  TLS 127.0.0.1:{}  {role}  (admin port {})",
            node.pid().unwrap_or(0),
            node.tls_port(),
            node.plain_port(),
        );
    }
}

/// Waits for Ctrl-C (SIGINT), SIGTERM or SIGHUP; returns its name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl+C",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}
