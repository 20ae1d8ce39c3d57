//! The report's prose: Markdown templates in `bench/templates/`, compiled
//! in, with `{{name}}` placeholders filled from the run's figures. Keeping
//! the words out of the code lets the code say only which figures go where.

/// `template` with every `{{name}}` replaced by its value in `values`.
///
/// A placeholder without a value, or a value without a placeholder, is a
/// mistake in the bench, not in the run: it panics, and the unit tests
/// render every template.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut used = vec![false; values.len()];
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed {{{{ in template: {}", &rest[open..]));
        let name = &after[..close];
        let i = values
            .iter()
            .position(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("no value for {{{{{name}}}}}"));
        used[i] = true;
        out.push_str(&values[i].1);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        panic!("value {:?} has no placeholder", values[i].0);
    }
    out
}

/// The templates, by file name.
pub mod text {
    /// The report's first paragraph.
    pub const INTRO: &str = include_str!("../templates/intro.md");
    /// What the throughput table measured.
    pub const THROUGHPUT: &str = include_str!("../templates/throughput.md");
    /// The cold start section up to its table's rows.
    pub const COLD_START: &str = include_str!("../templates/cold_start.md");
    /// The handler's first answer step by step, up to its table's rows.
    pub const COLD_START_STEPS: &str = include_str!("../templates/cold_start_steps.md");
    /// The memory section up to its table's rows.
    pub const MEMORY: &str = include_str!("../templates/memory.md");
    /// The binary size section's first paragraph.
    pub const BINARY_SIZE: &str = include_str!("../templates/binary_size.md");
    /// The binary's code by crate (cargo bloat), up to its table's rows.
    pub const BINARY_SIZE_CRATES: &str = include_str!("../templates/binary_size_crates.md");
    /// The token refresh section with its table.
    pub const TOKEN_REFRESH: &str = include_str!("../templates/token_refresh.md");
    /// The refresh burst.
    pub const BURST: &str = include_str!("../templates/burst.md");
    /// The slow identity section up to its table's rows.
    pub const SLOW_IDENTITY: &str = include_str!("../templates/slow_identity.md");
    /// The slow identity run's token requests.
    pub const SLOW_IDENTITY_FETCHES: &str = include_str!("../templates/slow_identity_fetches.md");
    /// The cluster section up to its table's rows.
    pub const CLUSTER: &str = include_str!("../templates/cluster.md");
    /// Why `redis-benchmark` does not check host names.
    pub const CLUSTER_TLS: &str = include_str!("../templates/cluster_tls.md");
    /// The maintenance section up to its table's rows.
    pub const MAINTENANCE: &str = include_str!("../templates/maintenance.md");
    /// What `before` is, in the maintenance section.
    pub const MAINTENANCE_BEFORE: &str = include_str!("../templates/maintenance_before.md");
    /// How to read the maintenance table.
    pub const MAINTENANCE_READING: &str = include_str!("../templates/maintenance_reading.md");
    /// The Method section.
    pub const METHOD: &str = include_str!("../templates/method.md");
    /// The Flex Consumption sizes section up to its tables.
    pub const FLEX: &str = include_str!("../templates/flex.md");
    /// How to read the Flex tables: waiting out the quota.
    pub const FLEX_READING: &str = include_str!("../templates/flex_reading.md");
    /// What changes with a slow cache.
    pub const FLEX_SLOW: &str = include_str!("../templates/flex_slow.md");
    /// The slow cache, measured.
    pub const FLEX_SLOW_MEASURED: &str = include_str!("../templates/flex_slow_measured.md");
    /// Why a request costs more CPU at low concurrency.
    pub const FLEX_SLOW_CPU_NOTE: &str = include_str!("../templates/flex_slow_cpu_note.md");
    /// The slow cache past 10 ms with quota to spare.
    pub const FLEX_SLOW_NOT_QUOTA: &str = include_str!("../templates/flex_slow_not_quota.md");
    /// Sizes this machine bounded more than their quota.
    pub const FLEX_MACHINE_BOUND: &str = include_str!("../templates/flex_machine_bound.md");
    /// The handler against the floor under the same quota, up to its table's rows.
    pub const FLEX_FLOOR: &str = include_str!("../templates/flex_floor.md");
    /// The slow cache, computed only.
    pub const FLEX_SLOW_COMPUTED: &str = include_str!("../templates/flex_slow_computed.md");
    /// The telemetry export section up to its full-speed table's rows.
    pub const TELEMETRY: &str = include_str!("../templates/telemetry.md");
    /// The telemetry section's paced run, up to its table's row.
    pub const TELEMETRY_PACED: &str = include_str!("../templates/telemetry_paced.md");
    /// The recommended size and `perInstanceConcurrency`.
    pub const FLEX_RECOMMEND: &str = include_str!("../templates/flex_recommend.md");
    /// The "Where the time goes" section up to its per-request table's rows.
    pub const PROFILE: &str = include_str!("../templates/profile.md");
    /// Its experiments, up to their table's rows.
    pub const PROFILE_EXPERIMENTS: &str = include_str!("../templates/profile_experiments.md");
    /// Its flame graphs, up to their links.
    pub const PROFILE_FLAME: &str = include_str!("../templates/profile_flame.md");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_placeholder() {
        let v = [("a", "1".to_owned()), ("b", "two".to_owned())];
        assert_eq!(fill("x {{a}} y {{b}}{{a}} {key}", &v), "x 1 y two1 {key}");
    }

    #[test]
    #[should_panic(expected = "no value for {{c}}")]
    fn a_placeholder_without_a_value_panics() {
        fill("{{c}}", &[]);
    }

    #[test]
    #[should_panic(expected = "has no placeholder")]
    fn a_value_without_a_placeholder_panics() {
        fill("text", &[("a", String::new())]);
    }
}
