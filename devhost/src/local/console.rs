//! What the local host prints: the start-up banner listing every function
//! (as `func start` does) and one line per invocation as it finishes
//! ([`InvocationLog`]).

use crate::app_manifest::{AppManifest, Trigger};
use std::time::Duration;
use tokio::sync::broadcast;

/// UTC now as `2024-05-01T10:15:00.123Z`, the stamp `func start` prints.
pub fn stamp() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(&format).unwrap_or_default()
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler answered with this HTTP status.
    Status(u16),
    /// The handler answered with this status, and the caller went away
    /// before the whole answer reached it (the host logs this as
    /// information, not as a failure).
    CallerGone(u16),
    /// No answer: the reason.
    Failed(String),
}

/// One finished invocation, as [`InvocationLog::record`] prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The function's name.
    pub function: String,
    /// What triggered it: `GET /api/ping`, `timer (scheduled 10:00:00)`, …
    pub what: String,
    /// How it ended.
    pub outcome: Outcome,
    /// From the request's arrival to the end of the answer.
    pub elapsed: Duration,
    /// The invocation id the host gave it.
    pub id: String,
}

/// The invocation log: one printed line per finished invocation, also sent
/// to whoever follows the log (tests, so they wait on the event itself).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct InvocationLog {
    followers: broadcast::Sender<Invocation>,
}

impl Default for InvocationLog {
    fn default() -> Self {
        Self {
            followers: broadcast::channel(1024).0,
        }
    }
}

impl InvocationLog {
    /// Invocations recorded from now on (a follower that falls 1024 behind
    /// loses the oldest).
    pub fn follow(&self) -> broadcast::Receiver<Invocation> {
        self.followers.subscribe()
    }

    /// Records an invocation that ended with `outcome`, started at `started`.
    pub fn record_outcome(&self, function: &str, what: &str, outcome: Outcome, started: std::time::Instant, id: &str) {
        self.record(Invocation {
            function: function.to_string(),
            what: what.to_string(),
            outcome,
            elapsed: started.elapsed(),
            id: id.to_string(),
        });
    }

    /// Prints `[stamp] <function> <what> -> <status> (<ms> ms) id=<short id>`
    /// and hands the invocation to the followers.
    pub fn record(&self, inv: Invocation) {
        let ms = inv.elapsed.as_secs_f64() * 1000.0;
        let result = match &inv.outcome {
            Outcome::Status(s) => s.to_string(),
            Outcome::CallerGone(s) => format!("{s}, caller gone before the end of the answer"),
            Outcome::Failed(why) => format!("failed: {why}"),
        };
        let id = inv.id.get(..8).unwrap_or(&inv.id);
        println!(
            "[{}] {} {} -> {result} ({ms:.1} ms) id={id}",
            stamp(),
            inv.function,
            inv.what
        );
        // No follower is the usual case.
        let _ = self.followers.send(inv);
    }
}

/// Prints the `Logs` of an envelope answer, as the host logs them on the
/// invocation's logger.
pub fn logs(function: &str, lines: &[String]) {
    for l in lines {
        println!("    {function} log: {l}");
    }
}

/// The function list: each HTTP function's methods and URL, each timer's
/// schedule, each other trigger's type.
pub fn functions(manifest: &AppManifest, base_url: &str, timers: &[(String, String)]) {
    println!("\nFunctions:\n");
    for f in &manifest.functions {
        match &f.trigger {
            Trigger::Http(h) => {
                let methods = h.methods.as_ref().map_or_else(|| "ALL".to_string(), |m| m.join(","));
                println!(
                    "        {}: [{methods}] {base_url}{}",
                    f.name,
                    manifest.http_path(&h.route)
                );
            }
            Trigger::Timer(_) => {
                let desc = timers
                    .iter()
                    .find(|(n, _)| *n == f.name)
                    .map_or("timerTrigger", |(_, d)| d.as_str());
                println!("        {}: {desc}", f.name);
            }
            Trigger::Other { kind, .. } => {
                println!("        {}: {kind} (not triggered locally; use devhost invoke)", f.name);
            }
        }
    }
    println!();
}

/// The closing lines of the banner.
pub fn ready(base_url: &str) {
    println!("Invoke by hand: cargo devhost invoke <Function> (see --help). Ctrl+C stops everything.");
    println!("Ready: {base_url}");
}
