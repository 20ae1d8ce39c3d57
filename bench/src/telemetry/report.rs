//! The "Telemetry export" section of `BENCHMARKS.md`: the cost of export
//! at full speed against the 0.95× target, the spans the bounded queue
//! took and dropped, and the paced run against "no span lost".

use super::{Export, Run, SpanCounts, TelemetryResults};
use crate::rig::KEYSPACE;
use crate::stats::{group, median, Target};
use crate::template::{fill, text};
use std::fmt::Write;

/// Export on must keep at least this share of the throughput with export off.
pub const TARGET_RATIO: f64 = 0.95;

fn median_of(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(&runs.iter().map(f).collect::<Vec<_>>())
}

impl TelemetryResults {
    /// Median req/s of `export` over median req/s with export off.
    pub fn ratio(&self, export: Export) -> Option<f64> {
        let off = median_of(&self.off, |r| r.load.rps);
        let runs = self.runs(export);
        (off > 0.0 && !runs.is_empty()).then(|| median_of(runs, |r| r.load.rps) / off)
    }

    /// The median of each round's `export` ÷ off: the runs of a round ran
    /// back to back, so drift in the machine's speed cancels out.
    pub fn paired_ratio(&self, export: Export) -> Option<f64> {
        let ratios: Vec<f64> = self
            .runs(export)
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
        if let Some(ratio) = self.ratio(Export::Counter) {
            t.push(Target {
                goal: format!(
                    "GET req/s at {} connections with OTLP export on (to a local receiver that counts every span) ≥ {TARGET_RATIO} × export off",
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
        let secs = |d: std::time::Duration| d.as_secs_f64().to_string();
        let f = self.counter_full_speed;
        let mut values = crate::machine::stamp(&self.machine, &self.commit, &self.command);
        values.extend([
            ("max_queue", group(f.max_queue)),
            ("conns", plan.conns.to_string()),
            ("keys", group(u64::from(KEYSPACE))),
            ("rounds", plan.rounds.to_string()),
            ("seconds", secs(plan.timing.measure)),
            ("warm", secs(plan.timing.warm)),
        ]);
        let mut s = fill(text::TELEMETRY, &values);
        for export in [Export::Off, Export::Counter, Export::Receiver] {
            let runs = self.runs(export);
            let each: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.load.rps)).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.1} | {:.1} |",
                export.label(),
                each.join(", "),
                group(median_of(runs, |r| r.load.rps).round() as u64),
                median_of(runs, |r| r.load.p99_ms),
                median_of(runs, Run::handler_us),
                median_of(runs, Run::bench_us)
            );
        }
        s.push('\n');
        let ratios = |e| Some((self.ratio(e)?, self.paired_ratio(e)?));
        if let Some((ratio, paired)) = ratios(Export::Counter) {
            let _ = writeln!(
                s,
                "Target: req/s with export on (to the counting receiver) ≥ {TARGET_RATIO} × with export off (GET, {} \
                 connections): {ratio:.3}× (medians; the median of the rounds' own ratios {paired:.3}×) — {}.",
                plan.conns,
                if ratio >= TARGET_RATIO { "met" } else { "**not met**" }
            );
            let _ = writeln!(
                s,
                "The counting receiver counted {} spans, all the handler says it exported ({}), and refused {} \
                 exports as malformed.\n",
                group(self.counted),
                group(self.counter_exported),
                self.refused
            );
        }
        if let Some((ratio, paired)) = ratios(Export::Receiver) {
            let _ = writeln!(
                s,
                "To devhost's receiver, the same handler keeps {ratio:.3}× (paired {paired:.3}×). Its own CPU per \
                 request is the counting receiver's row's or below (a span dropped on a full queue is never encoded \
                 or sent); the rest of the gap is the receiver's decoding and keeping of every span in the bench's \
                 process, on the same cores (the bench process's CPU per request), which a collector on another \
                 machine, as on Azure, does not take from the handler.\n"
            );
        }
        for (export, f) in [
            (Export::Counter, self.counter_full_speed),
            (Export::Receiver, self.receiver_full_speed),
        ] {
            s.push_str(&spans_line(export, &f, self.runs(export)));
        }
        let dropped = self.counter_full_speed.dropped + self.receiver_full_speed.dropped;
        let _ = writeln!(
            s,
            "\n{}\n",
            if dropped > 0 {
                "Dropping at full speed is the bounded queue doing its job: when spans come faster than one \
                 export at a time takes them, new ones are dropped and counted (Health, the \
                 `azure_redis.telemetry.spans_dropped` metric, a warning at most once a minute) instead of \
                 holding memory or an invocation. It is not a loss the paced run below allows."
            } else {
                "No span was dropped at full speed."
            }
        );
        let p = &self.paced;
        s.push_str(&fill(
            text::TELEMETRY_PACED,
            &[
                ("rate", group(u64::from(plan.rate))),
                ("paced", secs(plan.paced)),
                ("paced_conns", super::delivery::PACED_CONNS.to_string()),
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

/// One exporting handler's span counts over its full-speed runs, a line
/// of the list.
fn spans_line(export: Export, f: &SpanCounts, runs: &[Run]) -> String {
    let recorded = f.exported + f.failed + f.dropped;
    let requests: f64 = runs.iter().map(|r| r.requests).sum();
    format!(
        "- Export {} over its {} runs (Health's `telemetry`, from before the first to after the last): {} spans \
         exported, {} dropped on a full queue ({:.1}% of the {} recorded, for about {} requests), {} in failed \
         exports, {} still queued at the end.\n",
        export.label(),
        runs.len(),
        group(f.exported),
        group(f.dropped),
        100.0 * f.dropped as f64 / recorded.max(1) as f64,
        group(recorded),
        group(requests.round() as u64),
        group(f.failed),
        group(f.queued)
    )
}

#[cfg(test)]
mod tests {
    use crate::load::LoadResult;
    use crate::telemetry::paced::PacedRun;
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
            counter: vec![run(on), run(on)],
            receiver: vec![run(800.0), run(850.0)],
            counter_full_speed: SpanCounts {
                max_queue: 2048,
                exported: 9000,
                dropped: 1000,
                ..SpanCounts::default()
            },
            counted: 9200,
            counter_exported: 9200,
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
        let has = |text: &str| assert!(good.contains(text), "no {text:?} in:\n{good}");
        has("| off | 1000, 1100 | 1,050 | 4.000 | 95.5 | 19.1 |");
        has("| on, to devhost's receiver | 800, 850 | 825 |");
        has("0.952× (medians; the median of the rounds' own ratios 0.955×) — met.");
        has("counted 9,200 spans, all the handler says it exported (9,200), and refused 0");
        has("the same handler keeps 0.786× (paired 0.786×)");
        has("1,000 dropped on a full queue (10.0% of the 10,000 recorded");
        has("the bounded queue doing its job");
        has("| 10,000 | 10,000 | 0 |");
        has("| yes |");
        assert!(!good.contains("**not met**") && !good.contains("{{"));
        let bad = results(900.0, 9_999).section();
        assert!(bad.contains("0.857× (medians; the median of the rounds' own ratios 0.859×) — **not met**."));
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
