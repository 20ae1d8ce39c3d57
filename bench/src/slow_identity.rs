//! Token refresh against a slow identity endpoint: every token
//! answer takes [`SlowPlan::delay`], tokens are due for refresh every few
//! seconds while still valid for several more, and GET load runs at
//! [`SlowPlan::conns`] connections. A handler that makes invocations wait
//! for a refresh while its token is valid shows it here as requests held
//! for the whole fetch; one that refreshes beside them shows p99 as without
//! refreshes.
//!
//! One run, in this order, so that drift in the machine's speed hits both
//! sides alike: a handler with 1 h tokens (no refresh) for half of
//! [`SlowPlan::steady`], the refreshing handler (started just before, so
//! never idle until its token expires) for [`SlowPlan::refreshing`], the
//! 1 h handler again for the other half. Every request's send time and
//! latency are kept ([`crate::timed`]), and the identity endpoint's log
//! gives when each fetch was in flight, so requests can be split into
//! those in flight during a fetch and the rest.

use crate::rig::{Rig, Server};
use crate::stats::{group, Target};
use crate::template::{fill, text};
use crate::timed::{self, Latency, Sample, TimedRun};
use anyhow::ensure;
use devhost::identity::TokenRequest;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// After a token answer, how long the handler is still taken to be busy
/// with it (installing the token, re-AUTH on the live connection): requests
/// in flight then count as during the refresh too.
pub const AFTER_ANSWER: Duration = Duration::from_millis(10);

/// The scenario's parameters.
#[derive(Debug, Clone, Copy)]
pub struct SlowPlan {
    /// How long the identity endpoint takes for every answer.
    pub delay: Duration,
    /// Lifetime of the refreshing handler's tokens, s.
    pub lifetime_s: u64,
    /// Its `Redis__tokenRefreshOffsetSeconds`. Must exceed the delay plus
    /// the jitter (a fifth of it) by a margin, so each fetch is due while
    /// the token is valid and answered well before it expires.
    pub offset_s: u64,
    /// Concurrent keep-alive connections of the GET load.
    pub conns: u32,
    /// Unrecorded load on each handler before its first measured run.
    pub warm: Duration,
    /// Recorded load on the 1 h handler, split in two halves around the
    /// refreshing run.
    pub steady: Duration,
    /// Recorded load on the refreshing handler.
    pub refreshing: Duration,
}

impl SlowPlan {
    /// Seconds between refreshes at the shortest and longest: the fetch,
    /// then the new token's life less the offset, plus up to the jitter.
    pub fn refresh_every_s(&self) -> (f64, f64) {
        let base = self.delay.as_secs_f64() + (self.lifetime_s - self.offset_s) as f64;
        (base - 1.0, base + self.offset_s as f64 / 5.0)
    }
}

/// What the scenario measured.
#[derive(Debug, Clone, Default)]
pub struct SlowRefresh {
    /// The parameters it ran with.
    pub plan: Option<SlowPlan>,
    /// The 1 h handler, both halves.
    pub steady: Latency,
    /// Requests per second of the 1 h handler.
    pub steady_rps: f64,
    /// The refreshing handler: requests in flight at any moment between a
    /// token request reaching the endpoint and [`AFTER_ANSWER`] after its
    /// answer.
    pub during: Latency,
    /// The refreshing handler: the other requests.
    pub outside: Latency,
    /// The refreshing handler: every request.
    pub whole: Latency,
    /// Requests per second of the refreshing handler.
    pub refreshing_rps: f64,
    /// Token requests in flight at some moment of the refreshing run.
    pub token_requests: usize,
    /// Token requests the refreshing handler made in all, start-up included.
    pub token_requests_total: usize,
    /// Most token requests in flight at once (1 = single flight).
    pub most_in_flight: usize,
    /// Seconds of the refreshing run during which a fetch was in flight.
    pub fetch_seconds: f64,
    /// Seconds of recorded load on the refreshing handler.
    pub refreshing_seconds: f64,
    /// Of the refreshes (token requests after the first), the least time
    /// the token in use still had when the fetch was sent, s.
    pub least_valid_at_fetch_s: f64,
    /// The same when the new token arrived, s: positive means no fetch ever
    /// found the token expired, so no invocation had to wait for a token.
    pub least_valid_at_answer_s: f64,
    /// Failed requests in all runs.
    pub errors: u64,
}

/// Runs the scenario (see the module's comment).
pub fn run(rig: &Rig, handler: &crate::rig::Program, plan: SlowPlan) -> anyhow::Result<SlowRefresh> {
    let steady_server = Server::start(handler, &rig.root, &rig.app_settings(&rig.identity, 300))?;
    timed::get(steady_server.port, plan.conns, plan.warm)?;
    let first = timed::get(steady_server.port, plan.conns, plan.steady / 2)?;

    let identity = rig.identity_with_lifetime(Duration::from_secs(plan.lifetime_s))?;
    identity.set_delay(plan.delay);
    let refreshing_server = Server::start(handler, &rig.root, &rig.app_settings(&identity, plan.offset_s))?;
    timed::get(refreshing_server.port, plan.conns, plan.warm)?;
    let refreshing = timed::get(refreshing_server.port, plan.conns, plan.refreshing)?;
    // Let a fetch still in flight finish, so the log has its answer.
    let settle = Instant::now() + plan.delay * 2;
    while identity.request_log().iter().any(|r| r.answered.is_none()) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(refreshing_server);
    let log = identity.request_log();

    let second = timed::get(steady_server.port, plan.conns, plan.steady / 2)?;
    for (run, what) in [
        (&first, "1 h tokens, first half"),
        (&refreshing, "refreshing"),
        (&second, "1 h tokens, second half"),
    ] {
        timed::ensure_clean(run, what)?;
    }
    let steady: Vec<Sample> = first.samples.iter().chain(&second.samples).copied().collect();
    let mut out = split(&refreshing, &log, plan)?;
    out.steady = Latency::of(&steady);
    out.steady_rps = steady.len() as f64 / plan.steady.as_secs_f64();
    out.errors = first.errors + refreshing.errors + second.errors;
    eprintln!(
        "bench: slow identity: p99 {:.3} ms with 1 h tokens, {:.3} ms during {} refresh(es), slowest {:.3} ms",
        out.steady.p99_ms, out.during.p99_ms, out.token_requests, out.whole.max_ms
    );
    Ok(out)
}

/// Splits the refreshing run by the fetches in `log`, and checks that the
/// run measured what it is meant to: fetches in flight during it, one at a
/// time, each sent and answered while the token in use was still valid.
fn split(run: &TimedRun, log: &[TokenRequest], plan: SlowPlan) -> anyhow::Result<SlowRefresh> {
    let (now_instant, now_unix) = (Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH)?);
    let unix_s = |at: Instant| now_unix.as_secs_f64() - (now_instant - at).as_secs_f64();
    let ns = |at: Instant| match at.checked_duration_since(run.start) {
        Some(d) => d.as_nanos() as i64,
        None => -((run.start - at).as_nanos() as i64),
    };
    let end_ns = run.samples.iter().map(Sample::done_ns).max().unwrap_or(0) as i64;
    // In-flight windows, ns after the run's start, in order of arrival.
    let windows: Vec<(i64, i64)> = log
        .iter()
        .map(|r| {
            let answered = r.answered.map_or(i64::MAX, |a| ns(a + AFTER_ANSWER));
            (ns(r.received), answered)
        })
        .collect();
    let overlapping: Vec<(i64, i64)> = windows
        .iter()
        .copied()
        .filter(|&(from, to)| to >= 0 && from <= end_ns)
        .collect();
    let most_in_flight = windows
        .iter()
        .map(|&(from, _)| windows.iter().filter(|&&(f, t)| f <= from && from <= t).count())
        .max()
        .unwrap_or(0);
    let in_a_fetch = |s: &Sample| {
        let (sent, done) = (s.sent_ns as i64, s.done_ns() as i64);
        overlapping.iter().any(|&(from, to)| sent <= to && from <= done)
    };
    let (during, outside): (Vec<Sample>, Vec<Sample>) = run.samples.iter().copied().partition(in_a_fetch);
    let fetch_ns: i64 = overlapping
        .iter()
        .map(|&(from, to)| to.min(run.duration.as_nanos() as i64) - from.max(0))
        .filter(|d| *d > 0)
        .sum();
    // Each refresh against the token it replaces (the previous answer's exp).
    let mut least_at_fetch = f64::INFINITY;
    let mut least_at_answer = f64::INFINITY;
    for pair in log.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let (Some(exp), Some(answered)) = (old.exp, new.answered) else {
            anyhow::bail!("a token request of the slow-identity run failed or was never answered: {new:?}");
        };
        least_at_fetch = least_at_fetch.min(exp as f64 - unix_s(new.received));
        least_at_answer = least_at_answer.min(exp as f64 - unix_s(answered));
    }
    ensure!(
        !overlapping.is_empty() && !during.is_empty(),
        "no token fetch was in flight during the {:?} refreshing run ({} token requests in all): \
         the scenario measured no refresh",
        plan.refreshing,
        log.len()
    );
    ensure!(
        most_in_flight == 1,
        "{most_in_flight} token requests were in flight at once (want 1: one fetch per refresh)"
    );
    ensure!(
        least_at_answer > 0.0,
        "a new token arrived {:.3} s after the one it replaced had expired: the scenario is meant to measure \
         refreshes of a valid token (lifetime {} s, offset {} s, delay {:?})",
        -least_at_answer,
        plan.lifetime_s,
        plan.offset_s,
        plan.delay
    );
    Ok(SlowRefresh {
        plan: Some(plan),
        during: Latency::of(&during),
        outside: Latency::of(&outside),
        whole: Latency::of(&run.samples),
        refreshing_rps: run.rps(),
        token_requests: overlapping.len(),
        token_requests_total: log.len(),
        most_in_flight,
        fetch_seconds: fetch_ns as f64 / 1e9,
        refreshing_seconds: run.duration.as_secs_f64(),
        least_valid_at_fetch_s: least_at_fetch,
        least_valid_at_answer_s: least_at_answer,
        ..SlowRefresh::default()
    })
}

impl SlowRefresh {
    /// p99 during refreshes over p99 with 1 h tokens.
    fn ratio(&self) -> f64 {
        self.during.p99_ms / self.steady.p99_ms
    }

    /// The two targets for this scenario; none when it did not run.
    pub fn targets(&self) -> Vec<Target> {
        let Some(plan) = self.plan else {
            return Vec::new();
        };
        let delay = plan.delay.as_secs_f64();
        vec![
            Target {
                goal: format!(
                    "p99 during refreshes with a {delay:.0} s identity endpoint (GET, {} connections) within 10% \
                     of p99 with 1 h tokens",
                    plan.conns
                ),
                measured: format!(
                    "{:.3} vs {:.3} ms = {:.2}×",
                    self.during.p99_ms,
                    self.steady.p99_ms,
                    self.ratio()
                ),
                met: self.ratio() <= 1.10,
            },
            Target {
                goal: format!("slowest request while refreshing with a {delay:.0} s identity endpoint < 50 ms"),
                measured: format!("{:.3} ms", self.whole.max_ms),
                met: self.whole.max_ms < 50.0,
            },
        ]
    }

    /// One line for the headline list; `None` when it did not run.
    pub fn headline(&self) -> Option<String> {
        let plan = self.plan?;
        let (lo, hi) = plan.refresh_every_s();
        Some(format!(
            "- Refresh with a {:.0} s identity endpoint (GET, {} connections, a refresh every {lo:.0}–{hi:.0} s): \
             p99 {:.3} ms during refreshes vs {:.3} ms with 1 h tokens ({:.2}×); slowest request {:.3} ms; \
             token requests in flight during the {:.0} s run: {}.",
            plan.delay.as_secs_f64(),
            plan.conns,
            self.during.p99_ms,
            self.steady.p99_ms,
            self.ratio(),
            self.whole.max_ms,
            self.refreshing_seconds,
            self.token_requests
        ))
    }

    /// The report's section; empty when it did not run.
    pub fn section(&self) -> String {
        let Some(plan) = self.plan else {
            return String::new();
        };
        let (lo, hi) = plan.refresh_every_s();
        let row = |name: &str, l: &Latency, rps: Option<f64>| {
            format!(
                "| {name} | {} | {} | {:.3} | {:.3} | {:.3} |\n",
                group(l.requests as u64),
                rps.map_or("–".to_owned(), |r| group(r.round() as u64)),
                l.p50_ms,
                l.p99_ms,
                l.max_ms
            )
        };
        let intro = fill(
            text::SLOW_IDENTITY,
            &[
                ("delay", format!("{:.0}", plan.delay.as_secs_f64())),
                ("life", plan.lifetime_s.to_string()),
                ("offset", plan.offset_s.to_string()),
                ("every_low", format!("{lo:.0}")),
                ("every_high", format!("{hi:.0}")),
                ("jitter", format!("{:.1}", plan.offset_s as f64 / 5.0)),
                ("conns", plan.conns.to_string()),
                ("steady", format!("{:.0}", plan.steady.as_secs_f64())),
                ("refreshing", format!("{:.0}", plan.refreshing.as_secs_f64())),
                ("warm", plan.warm.as_secs_f64().to_string()),
                ("after_ms", AFTER_ANSWER.as_millis().to_string()),
            ],
        );
        let mut s = format!("\n{intro}");
        s.push_str(&row("1 h tokens (no refresh)", &self.steady, Some(self.steady_rps)));
        s.push_str(&row("refreshing, during a refresh", &self.during, None));
        s.push_str(&row("refreshing, outside refreshes", &self.outside, None));
        s.push_str(&row("refreshing, all", &self.whole, Some(self.refreshing_rps)));
        let fetches = fill(
            text::SLOW_IDENTITY_FETCHES,
            &[
                ("seconds", format!("{:.0}", self.refreshing_seconds)),
                ("token_requests", self.token_requests.to_string()),
                ("fetch_seconds", format!("{:.1}", self.fetch_seconds)),
                ("most_in_flight", self.most_in_flight.to_string()),
                ("total", self.token_requests_total.to_string()),
                ("valid_at_fetch", format!("{:.1}", self.least_valid_at_fetch_s)),
                ("valid_at_answer", format!("{:.1}", self.least_valid_at_answer_s)),
            ],
        );
        s.push('\n');
        s.push_str(&fetches);
        s
    }
}
