//! The "Telemetry export" section of `BENCHMARKS.md`: the cost of export
//! at full speed against the 0.95× target, the spans the bounded queue
//! took and dropped, and the paced run against "no span lost".

use crate::rig::KEYSPACE;
use crate::stats::{group, median, Target};
use crate::telemetry::{Run, TelemetryResults};
use crate::template::{fill, text};
use std::fmt::Write;

/// Export on must keep at least this share of the throughput with export off.
pub const TARGET_RATIO: f64 = 0.95;

fn median_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

impl TelemetryResults {
    /// Median req/s with export on over median req/s with it off.
    pub fn ratio(&self) -> Option<f64> {
        let off = median_of(&self.off, |r| r.load.rps);
        (off > 0.0 && !self.on.is_empty()).then(|| median_of(&self.on, |r| r.load.rps) / off)
    }

    /// The median of each round's on ÷ off: the two runs of a round ran
    /// back to back, so drift in the machine's speed cancels out.
    pub fn paired_ratio(&self) -> Option<f64> {
        let ratios: Vec<f64> = self
            .on
            .iter()
            .zip(&self.off)
            .map(|(a, b)| a.load.rps / b.load.rps)
            .collect();
        (!ratios.is_empty()).then(|| median(&ratios))
    }

    /// Whether every paced invocation's server span arrived.
    pub fn no_span_lost(&self) -> bool {
        self.paced.run.sent > 0 && self.paced.spans == self.paced.run.sent
    }

    /// The two targets with this run's figures, for the report's Targets.
    pub fn targets(&self) -> Vec<Target> {
        let Some(plan) = &self.plan else {
            return Vec::new();
        };
        let mut t = Vec::new();
        if let Some(ratio) = self.ratio() {
            t.push(Target {
                goal: format!(
                    "GET req/s at {} connections with OTLP export on ≥ {TARGET_RATIO} × export off",
                    plan.conns
                ),
                measured: format!("{ratio:.3}×"),
                met: ratio >= TARGET_RATIO,
            });
        }
        let p = &self.paced;
        t.push(Target {
            goal: format!(
                "at {} invocations a second, every invocation's server span received",
                group(u64::from(plan.rate))
            ),
            measured: format!(
                "{} of {} ({} dropped)",
                group(p.spans),
                group(p.run.sent),
                p.counts.dropped
            ),
            met: self.no_span_lost() && p.run.failed == 0,
        });
        t
    }

    /// The section, ending with a newline.
    pub fn section(&self) -> String {
        let Some(plan) = &self.plan else {
            return String::new();
        };
        let get = |k: &str| crate::machine::value(&self.machine, k);
        let secs = |d: std::time::Duration| d.as_secs_f64().to_string();
        let f = self.full_speed;
        let mut s = fill(
            text::TELEMETRY,
            &[
                ("date", get("date")),
                ("cores", get("cores")),
                ("cpu", get("CPU")),
                ("kernel", get("kernel")),
                ("load", get("load average")),
                ("commit", self.commit.clone()),
                ("command", self.command.clone()),
                ("max_queue", group(f.max_queue)),
                ("conns", plan.conns.to_string()),
                ("keys", group(u64::from(KEYSPACE))),
                ("rounds", plan.rounds.to_string()),
                ("seconds", secs(plan.timing.measure)),
                ("warm", secs(plan.timing.warm)),
            ],
        );
        for (what, runs) in [("off", &self.off), ("on", &self.on)] {
            let each: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.load.rps)).collect();
            let _ = writeln!(
                s,
                "| {what} | {} | {} | {:.3} | {:.1} | {:.1} |",
                each.join(", "),
                group(median_of(runs, |r| r.load.rps).round() as u64),
                median_of(runs, |r| r.load.p99_ms),
                median_of(runs, Run::handler_us),
                median_of(runs, Run::bench_us)
            );
        }
        s.push('\n');
        if let (Some(ratio), Some(paired)) = (self.ratio(), self.paired_ratio()) {
            let _ = writeln!(
                s,
                "Target: req/s with export on ≥ {TARGET_RATIO} × with export off (GET, {} connections): \
                 {ratio:.3}× (medians; the median of the rounds' own ratios {paired:.3}×) — {}.\n",
                plan.conns,
                if ratio >= TARGET_RATIO { "met" } else { "**not met**" }
            );
        }
        let recorded = f.exported + f.failed + f.dropped;
        let requests: f64 = self.on.iter().map(|r| r.requests).sum();
        let _ = writeln!(
            s,
            "Spans over the {} runs with export on (Health's `telemetry`, from before the first to after the \
             last): {} exported, {} dropped on a full queue ({:.1}% of the {} that left the queue or were \
             dropped, for about {} requests), {} in failed exports, {} still queued at the end. {}\n",
            self.on.len(),
            group(f.exported),
            group(f.dropped),
            100.0 * f.dropped as f64 / (recorded.max(1)) as f64,
            group(recorded),
            group(requests.round() as u64),
            group(f.failed),
            group(f.queued),
            if f.dropped > 0 {
                "Dropping at full speed is the bounded queue doing its job: when spans come faster than one \
                 export at a time takes them, new ones are dropped and counted (Health, the \
                 `azure_redis.telemetry.spans_dropped` metric, a warning at most once a minute) instead of holding memory \
                 or an invocation; it is not a loss the paced run below allows."
            } else {
                "None was dropped at full speed."
            }
        );
        let p = &self.paced;
        s.push_str(&fill(
            text::TELEMETRY_PACED,
            &[
                ("rate", group(u64::from(plan.rate))),
                ("paced", secs(plan.paced)),
                ("paced_conns", crate::telemetry::PACED_CONNS.to_string()),
                ("wait", secs(plan.span_wait)),
            ],
        ));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.1} | {:.3} | {} | {:.1} | {} | {} | {} |\n",
            group(p.run.sent),
            group(p.run.answered),
            group(p.run.failed),
            p.run.achieved_rate(),
            p.run.max_late.as_secs_f64() * 1e3,
            p.run.latency.p99_ms,
            group(p.spans),
            p.waited.as_secs_f64(),
            group(p.counts.dropped),
            group(p.counts.failed),
            if self.no_span_lost() { "yes" } else { "**no**" }
        );
        let _ = writeln!(
            s,
            "Target: at {} invocations a second every invocation's server span reaches the collector and no \
             request fails — {}.",
            group(u64::from(plan.rate)),
            if self.no_span_lost() && p.run.failed == 0 {
                "met"
            } else {
                "**not met**"
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::load::LoadResult;
    use crate::paced::PacedRun;
    use crate::telemetry::{Paced, Run, SpanCounts, TelemetryResults};
    use std::time::Duration;

    fn run(rps: f64) -> Run {
        Run {
            load: LoadResult {
                rps,
                p50_ms: 1.0,
                p99_ms: 4.0,
                errors: 0,
            },
            handler_cpu: Duration::from_millis(500),
            bench_cpu: Duration::from_millis(100),
            requests: rps * 5.0,
        }
    }

    fn results(on: f64, spans: u64) -> TelemetryResults {
        TelemetryResults {
            plan: Some(crate::plan::Plan::full().telemetry),
            off: vec![run(1000.0), run(1100.0)],
            on: vec![run(on), run(on)],
            full_speed: SpanCounts {
                max_queue: 2048,
                exported: 9000,
                dropped: 1000,
                ..SpanCounts::default()
            },
            paced: Paced {
                run: PacedRun {
                    planned: 10_000,
                    sent: 10_000,
                    answered: 10_000,
                    ..PacedRun::default()
                },
                spans,
                ..Paced::default()
            },
            ..TelemetryResults::default()
        }
    }

    /// Met and missed targets read as such, every placeholder is filled,
    /// and the drops at full speed are explained.
    #[test]
    fn section_renders() {
        let good = results(1000.0, 10_000).section();
        assert!(good.starts_with("## Telemetry export\n"), "{good}");
        assert!(
            good.contains("| off | 1000, 1100 | 1,050 | 4.000 | 95.5 | 19.1 |"),
            "{good}"
        );
        assert!(good.contains("0.952× (medians; the median of the rounds' own ratios 0.955×) — met"));
        assert!(good.contains("1,000 dropped on a full queue (10.0% of the 10,000"));
        assert!(good.contains("the bounded queue doing its job"));
        assert!(
            good.contains("| 10,000 | 10,000 | 0 |") && good.contains("| yes |"),
            "{good}"
        );
        assert!(!good.contains("**not met**") && !good.contains("{{"));
        let bad = results(900.0, 9_999).section();
        assert!(bad.contains("— **not met**.\n\nSpans"), "{bad}");
        assert!(bad.contains("| 9,999 |") && bad.contains("| **no** |"));
    }

    /// Health's counters read from its JSON; `null` is export off.
    #[test]
    fn span_counts_from_health() {
        let on = serde_json::json!({"telemetry": {"queued": 3, "max_queue": 2048, "exported": 10, "failed": 1, "dropped": 2}});
        let c = SpanCounts::of(&on).unwrap();
        assert_eq!((c.queued, c.exported, c.failed, c.dropped), (3, 10, 1, 2));
        assert_eq!(SpanCounts::of(&serde_json::json!({"telemetry": null})), None);
        let later = SpanCounts { exported: 15, ..c };
        assert_eq!(later.since(&c).exported, 5);
    }
}
