//! The report's "Method" section, written from the plans the bench runs, so
//! that the durations, counts and token settings it states are the ones
//! used.

use crate::flex::Participant;
use crate::plan::Plan;
use crate::rig::{KEYSPACE, VALUE_BYTES};
use crate::stats::group;
use crate::template::{fill, text};

/// The Method section for a report of `full` (the full run), describing
/// `smoke` and `--refresh` (`refresh_only_rounds` rounds) too.
pub fn markdown(full: &Plan, smoke: &Plan, refresh_only_rounds: usize) -> String {
    let secs = |d: std::time::Duration| format!("{} s", d.as_secs_f64());
    let list = |c: &[u32]| c.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let conns = |p: &Plan| list(&p.concurrency);
    let (life, off) = full.short_tokens;
    let burst_life = life.max(4);
    let slow = &full.slow;
    let v = |k, v: String| (k, v);
    // The sizes the Flex plan runs the handler at against Redis as it is,
    // the quotas it runs the floor under, and the delay of the other case.
    let cases = |f: &crate::flex::FlexPlan, program| {
        let plain: Vec<String> = f
            .cases
            .iter()
            .filter(|c| c.program == program && c.cache_delay.is_none())
            .map(|c| match program {
                Participant::Handler => c.label(),
                Participant::Floor => c.size.cores.to_string(),
            })
            .collect();
        if plain.is_empty() {
            "none".to_owned()
        } else {
            plain.join(", ")
        }
    };
    let sizes = |f| cases(f, Participant::Handler);
    let floors = |f| cases(f, Participant::Floor);
    let fl_delay = full
        .flex
        .cases
        .iter()
        .find_map(|c| c.cache_delay)
        .map_or("–".to_owned(), |d| format!("{} ms", d.as_millis()));
    fill(
        text::METHOD,
        &[
            v("keys", KEYSPACE.to_string()),
            v("value", VALUE_BYTES.to_string()),
            v("rounds", full.refresh_rounds.to_string()),
            v("refresh_run", secs(full.refresh_timing.measure)),
            v("refresh_warm", secs(full.refresh_timing.warm)),
            v("life", life.to_string()),
            v("off", off.to_string()),
            v("burst_life", burst_life.to_string()),
            v("burst_off", (burst_life / 2).to_string()),
            v("refresh_only_rounds", refresh_only_rounds.to_string()),
            v("slow_delay", secs(slow.delay)),
            v("slow_life", slow.lifetime_s.to_string()),
            v("slow_off", slow.offset_s.to_string()),
            v("slow_conns", slow.conns.to_string()),
            v("cl_conns", list(&full.cluster.concurrency)),
            v("cl_rounds", full.cluster.rounds.to_string()),
            v("cl_run", secs(full.cluster.timing.measure)),
            v("smoke_cl_conns", list(&smoke.cluster.concurrency)),
            v("smoke_cl_run", secs(smoke.cluster.timing.measure)),
            v("fl_sizes", sizes(&full.flex)),
            v("fl_delay", fl_delay),
            v("fl_floor", floors(&full.flex)),
            v("fl_conns", list(&full.flex.concurrency)),
            v("fl_rounds", full.flex.rounds.to_string()),
            v("fl_run", secs(full.flex.timing.measure)),
            v("fl_warm", secs(full.flex.timing.warm)),
            v("smoke_fl_size", sizes(&smoke.flex)),
            v("smoke_fl_floor", floors(&smoke.flex)),
            v("smoke_fl_conns", list(&smoke.flex.concurrency)),
            v("smoke_fl_run", secs(smoke.flex.timing.measure)),
            v("tl_conns", full.telemetry.conns.to_string()),
            v("tl_rounds", full.telemetry.rounds.to_string()),
            v("tl_run", secs(full.telemetry.timing.measure)),
            v("tl_warm", secs(full.telemetry.timing.warm)),
            v("tl_rate", group(u64::from(full.telemetry.rate))),
            v("tl_paced", secs(full.telemetry.paced)),
            v("tl_wait", secs(full.telemetry.span_wait)),
            v("pf_conns", full.profile.conns.to_string()),
            v("pf_run", secs(full.profile.timing.measure)),
            v("pf_warm", secs(full.profile.timing.warm)),
            v("pf_rounds", full.profile.rounds.to_string()),
            v("pf_exp_run", secs(full.profile.experiment_timing.measure)),
            v("smoke_tl_conns", smoke.telemetry.conns.to_string()),
            v("smoke_tl_run", secs(smoke.telemetry.timing.measure)),
            v("smoke_tl_paced", secs(smoke.telemetry.paced)),
            v("smoke_run", secs(smoke.timing.measure)),
            v("smoke_conns", conns(smoke)),
            v("smoke_cold", smoke.start.cold_starts.to_string()),
            v("smoke_traced", smoke.start.traced_starts.to_string()),
            v("smoke_mem", group(smoke.start.memory_requests)),
            v("smoke_delay", secs(smoke.slow.delay)),
            v("smoke_slow_life", smoke.slow.lifetime_s.to_string()),
            v("smoke_slow_off", smoke.slow.offset_s.to_string()),
            v("smoke_slow_run", secs(smoke.slow.refreshing)),
            v("conns_full", conns(full)),
            v("run", secs(full.timing.measure)),
            v("warm", secs(full.timing.warm)),
            v("pair_rounds", full.pairing.rounds.to_string()),
            v("pair_run", secs(full.pairing.measure)),
            v("cold", full.start.cold_starts.to_string()),
            v("traced", full.start.traced_starts.to_string()),
            v("mem", group(full.start.memory_requests)),
            v("wide_run", secs(full.start.wide_run)),
        ],
    )
}

#[cfg(test)]
mod tests {
    /// Every placeholder of the Method template has its figure.
    #[test]
    fn renders() {
        let md = super::markdown(&crate::plan::Plan::full(), &crate::plan::Plan::smoke(), 12);
        assert!(md.starts_with("## Method"));
        assert!(!md.contains("{{"));
    }

    /// The Flex item names the handler's sizes without the floor's cases,
    /// and the floor's quotas apart, in the full run and the smoke run.
    #[test]
    fn flex_sizes_and_floor() {
        let md = super::markdown(&crate::plan::Plan::full(), &crate::plan::Plan::smoke(), 12);
        let flat = md.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("(512 MB (0.25 core), 2048 MB (1 core), 4096 MB (2 cores); the cgroup"),
            "{flat}"
        );
        assert!(
            flat.contains("the floor under the quotas of 0.25, 1 cores, GET at"),
            "{flat}"
        );
        assert!(
            flat.contains("(512 MB (0.25 core), and the floor under 0.25 core, at 16 connections"),
            "{flat}"
        );
    }
}
