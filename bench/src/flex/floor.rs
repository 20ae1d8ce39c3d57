//! The handler against the floor under the same quota: each floor case
//! paired with the handler's case of the same size and cache, and their
//! medians side by side at each concurrency, with the reading of the
//! ratios written from them.

use super::{cores_text, Case, FlexPoint, FlexResults, Participant, P99_LIMIT_MS, THROTTLED_SHARE};
use crate::stats::group;
use crate::template::{fill, text};
use std::fmt::Write;

/// The pairs to compare, `(handler, floor)` by index into `cases`, in the
/// floor cases' order: each floor case with the handler's case of the same
/// size and cache delay; a floor case without one is left out.
pub fn pairs(cases: &[Case]) -> Vec<(usize, usize)> {
    cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.program == Participant::Floor)
        .filter_map(|(f, floor)| {
            let h = cases.iter().position(|c| {
                c.program == Participant::Handler && c.size == floor.size && c.cache_delay == floor.cache_delay
            })?;
            Some((h, f))
        })
        .collect()
}

/// Handler ÷ floor at one concurrency, from the medians of the runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    /// Concurrent connections.
    pub conns: u32,
    /// Handler ÷ floor req/s.
    pub rps: f64,
    /// Handler ÷ floor CPU per request.
    pub cpu: f64,
    /// Whether both were throttled in more than [`THROTTLED_SHARE`] of
    /// their periods there: then each served about its quota over its CPU
    /// per request, and `rps × cpu` is about 1.
    pub both_used_up: bool,
}

impl Ratio {
    /// The ratios of a handler's point and the floor's at the same
    /// concurrency.
    pub fn of(handler: &FlexPoint, floor: &FlexPoint) -> Ratio {
        let used_up = |p: &FlexPoint| {
            let st = p.stat();
            st.throttled as f64 > THROTTLED_SHARE * st.periods as f64
        };
        Ratio {
            conns: handler.conns,
            rps: handler.rps() / floor.rps().max(1e-9),
            cpu: handler.cpu_us() / floor.cpu_us().max(1e-9),
            both_used_up: used_up(handler) && used_up(floor),
        }
    }
}

/// What the ratios of one quota say, in a paragraph: their ranges, where
/// the handler served more than the floor (which it should not: it does
/// more), where p99 passes 10 ms for each, and where both used up the
/// quota, the product of the two ratios there.
pub fn reading(cores: f64, ratios: &[Ratio], crossings: (String, String)) -> String {
    let (rps_lo, rps_hi) = bounds(ratios.iter().map(|r| r.rps));
    let (cpu_lo, cpu_hi) = bounds(ratios.iter().map(|r| r.cpu));
    let mut s = format!(
        "At {} the handler served {} of the floor's requests per second, using {} its CPU per request.",
        cores_text(cores),
        span(format!("{:.0}%", rps_lo * 100.0), format!("{:.0}%", rps_hi * 100.0)),
        span(format!("{cpu_lo:.2}×"), format!("{cpu_hi:.2}×")),
    );
    let more: Vec<String> = ratios
        .iter()
        .filter(|r| r.rps > 1.0)
        .map(|r| r.conns.to_string())
        .collect();
    if !more.is_empty() {
        let _ = write!(
            s,
            " At {} connections the handler served more requests per second than the floor, which does less per \
             request: see the runs of each in their tables above.",
            more.join(", ")
        );
    }
    let _ = write!(
        s,
        " p99 passes {P99_LIMIT_MS:.0} ms: for the handler {}, for the floor {}.",
        crossings.0, crossings.1
    );
    let used_up: Vec<&Ratio> = ratios.iter().filter(|r| r.both_used_up).collect();
    if used_up.is_empty() {
        let _ = write!(
            s,
            " At no concurrency were both throttled in more than {:.0}% of their periods: the quota was not what \
             bounded both.",
            THROTTLED_SHARE * 100.0
        );
    } else {
        let (lo, hi) = bounds(used_up.iter().map(|r| r.rps * r.cpu));
        let conns: Vec<String> = used_up.iter().map(|r| r.conns.to_string()).collect();
        let _ = write!(
            s,
            " Both were throttled in more than {:.0}% of their periods at {} connections, where each serves about \
             its quota over its CPU per request, so that the two ratios should be each other's inverse: their \
             product was {}.",
            THROTTLED_SHARE * 100.0,
            conns.join(", "),
            span(format!("{lo:.2}"), format!("{hi:.2}"))
        );
    }
    s.push('\n');
    s
}

/// The least and the greatest of `values`.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// `lo to hi`, or one of them when they read the same.
fn span(lo: String, hi: String) -> String {
    if lo == hi {
        lo
    } else {
        format!("{lo} to {hi}")
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

impl FlexResults {
    /// The "### The handler against the floor under the same quota"
    /// subsection, ending with a newline; empty without a floor case.
    pub(super) fn floor_section(&self) -> String {
        let pairs = pairs(&self.cases);
        let Some(&(_, first)) = pairs.first() else {
            return String::new();
        };
        let quotas: Vec<String> = pairs
            .iter()
            .map(|&(h, _)| {
                format!(
                    "{} ({} MB)",
                    cores_text(self.cases[h].size.cores),
                    self.cases[h].size.memory_mb
                )
            })
            .collect();
        let labels: Vec<String> = pairs
            .iter()
            .map(|&(_, f)| format!("\"{}\"", self.cases[f].label()))
            .collect();
        let conns: Vec<String> = self.points_of(first).iter().map(|p| p.conns.to_string()).collect();
        let mut s = fill(
            text::FLEX_FLOOR,
            &[
                ("quotas", and_list(&quotas)),
                ("labels", and_list(&labels)),
                ("conns", conns.join(", ")),
                ("rounds", self.rounds.to_string()),
                ("seconds", format!("{}", self.seconds)),
            ],
        );
        let mut readings = Vec::new();
        for &(h, f) in &pairs {
            let floor_points = self.points_of(f);
            let mut ratios = Vec::new();
            for hp in self.points_of(h) {
                let Some(fp) = floor_points.iter().find(|p| p.conns == hp.conns) else {
                    continue;
                };
                let r = Ratio::of(hp, fp);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.2} | {:.3} | {:.3} |",
                    cores_text(self.cases[h].size.cores),
                    hp.conns,
                    group(hp.rps().round() as u64),
                    group(fp.rps().round() as u64),
                    r.rps,
                    hp.cpu_us(),
                    fp.cpu_us(),
                    r.cpu,
                    hp.p99(),
                    fp.p99()
                );
                ratios.push(r);
            }
            if ratios.is_empty() {
                continue;
            }
            let crossing = |i| self.crossing(i).map_or("–".into(), |c| c.describe());
            readings.push(reading(self.cases[h].size.cores, &ratios, (crossing(h), crossing(f))));
        }
        for r in readings {
            s.push('\n');
            s.push_str(&r);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex::SIZES;
    use std::time::Duration;

    /// Each floor case meets the handler of its size and cache, whatever
    /// the order; a floor without one, and the handlers, pair with nothing.
    #[test]
    fn pairs_floor_with_handler() {
        let slow = |mut c: Case| {
            c.cache_delay = Some(Duration::from_millis(5));
            c
        };
        let cases = [
            Case::floor(SIZES[1]),
            Case::handler(SIZES[0]),
            slow(Case::handler(SIZES[1])),
            Case::handler(SIZES[1]),
            Case::floor(SIZES[0]),
            Case::floor(SIZES[2]),
            slow(Case::floor(SIZES[1])),
        ];
        assert_eq!(pairs(&cases), vec![(3, 0), (1, 4), (2, 6)]);
        assert_eq!(pairs(&cases[1..4]), vec![]);
    }

    /// The ranges, the handler ahead of the floor, and the product where
    /// both used up the quota; without such a point, says so.
    #[test]
    fn reads_the_ratios() {
        let r = |conns, rps, cpu, both_used_up| Ratio {
            conns,
            rps,
            cpu,
            both_used_up,
        };
        let crossings = || ("already at 4".to_owned(), "between 4 and 16".to_owned());
        let md = reading(
            0.25,
            &[r(4, 0.5, 2.0, true), r(16, 0.8, 1.3, true), r(64, 0.6, 1.5, false)],
            crossings(),
        );
        assert!(
            md.starts_with(
                "At 0.25 core the handler served 50% to 80% of the floor's requests per second, using 1.30× to \
                 2.00× its CPU per request. p99 passes 10 ms: for the handler already at 4, for the floor \
                 between 4 and 16."
            ),
            "{md}"
        );
        assert!(md.contains("at 4, 16 connections"), "{md}");
        assert!(md.contains("their product was 1.00 to 1.04."), "{md}");
        assert!(!md.contains("served more requests per second than the floor"), "{md}");
        let odd = reading(1.0, &[r(4, 1.1, 0.9, false), r(16, 0.9, 1.1, false)], crossings());
        assert!(
            odd.contains("At 4 connections the handler served more requests per second than the floor"),
            "{odd}"
        );
        let one = reading(1.0, &[r(4, 0.5, 2.0, true)], crossings());
        assert!(
            one.contains("served 50% of the floor's requests per second, using 2.00× its"),
            "{one}"
        );
        assert!(one.contains("their product was 1.00."), "{one}");
        assert!(odd.contains("At no concurrency were both throttled"), "{odd}");
    }

    /// Lists read as English.
    #[test]
    fn lists() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(and_list(&s(&[])), "");
        assert_eq!(and_list(&s(&["a"])), "a");
        assert_eq!(and_list(&s(&["a", "b"])), "a and b");
        assert_eq!(and_list(&s(&["a", "b", "c"])), "a, b and c");
    }
}
