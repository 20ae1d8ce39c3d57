//! The timer's last result, kept in the cache so every instance sees it.
//!
//! On Flex Consumption the timer runs on instances of its own (per-function
//! scaling, docs/azure.md "Hosting plans"), so a result kept in process
//! memory would never reach `Health` on the HTTP instances. `CacheHealthCheck`
//! therefore writes its report, with the instance that ran it, as one small
//! JSON value under a key named for the app ([`key`]), with a TTL of a few
//! schedule periods; `Health` reads it back and says how old it is and
//! whether a run has been missed since (`stale`), so nothing stale shows as
//! current. On a cluster the key lives on the shard its slot gives, and the
//! per-shard results travel inside the value.

use super::AppState;
use crate::cache::CacheError;
use crate::host::ScheduleStatus;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Schedule periods the stored result outlives its run by: long enough
/// that one late or failed run leaves the last result readable (marked
/// stale), short enough that an app whose timer stopped shows nothing.
pub(crate) const TTL_PERIODS: u32 = 3;

/// The period assumed when neither the host's schedule status nor the
/// declared schedule gives one: the shipped schedule's five minutes.
const DEFAULT_PERIOD: Duration = Duration::from_secs(300);

/// The key the last result of `app`'s timer is kept under.
pub(crate) fn key(app: &str) -> String {
    format!("CacheHealthCheck:last:{app}")
}

/// The value stored for `report`: the report's own fields, then who ran it
/// and when (`instance`, `worker_id`, `checked_at_unix_ms`) and the schedule
/// period it was stored for (`period_s`), which `Health` judges its age by.
pub(crate) fn record(state: &AppState, report: &impl serde::Serialize, period: Duration) -> Value {
    let mut value = serde_json::to_value(report).unwrap_or_else(|_| json!({}));
    if let Some(fields) = value.as_object_mut() {
        fields.insert("app".into(), json!(state.app_name()));
        fields.insert("instance".into(), json!(state.instance_id()));
        fields.insert("worker_id".into(), json!(state.worker_id()));
        fields.insert("checked_at_unix_ms".into(), json!(unix_ms(SystemTime::now())));
        fields.insert("period_s".into(), json!(period.as_secs_f64()));
    }
    value
}

/// Writes `record` under the app's key for [`TTL_PERIODS`] periods; gives
/// the key and the TTL in seconds.
pub(crate) async fn store(state: &AppState, record: &Value, period: Duration) -> Result<(String, u64), CacheError> {
    let key = key(state.app_name());
    let ttl = ttl_seconds(period);
    let set = redis::cmd("SET")
        .arg(&key)
        .arg(record.to_string())
        .arg("EX")
        .arg(ttl)
        .clone();
    state.cache().query::<()>(&set).await?;
    Ok((key, ttl))
}

/// The last stored result as `Health` shows it: the record with `age_s`
/// and `stale` (a run was due since and none stored a newer result);
/// `None` when there is none (never run, or expired).
pub(crate) async fn load(state: &AppState) -> Result<Option<Value>, CacheError> {
    let stored: Option<String> = state
        .cache()
        .query(redis::cmd("GET").arg(key(state.app_name())))
        .await?;
    Ok(stored.and_then(|text| {
        let record = serde_json::from_str::<Value>(&text).ok()?;
        Some(judged(record, SystemTime::now()))
    }))
}

/// `record` with its age at `now` and whether it is stale: older than its
/// period plus a grace for a late run (half a period, between 5 s and 2 min).
/// A record without its time or period (written by something else) is
/// shown as stale, never as current.
fn judged(mut record: Value, now: SystemTime) -> Value {
    let checked_at = record["checked_at_unix_ms"].as_u64();
    let period = record["period_s"].as_f64().filter(|p| p.is_finite() && *p > 0.0);
    let age_s = checked_at.map(|at| (unix_ms(now).saturating_sub(at)) as f64 / 1000.0);
    let stale = match (age_s, period) {
        (Some(age), Some(period)) => age > period + (period / 2.0).clamp(5.0, 120.0),
        _ => true,
    };
    if let Some(fields) = record.as_object_mut() {
        fields.insert("age_s".into(), json!(age_s.map(|a| (a * 10.0).round() / 10.0)));
        fields.insert("stale".into(), json!(stale));
    }
    record
}

/// The TTL for a result stored every `period`: [`TTL_PERIODS`] periods,
/// at least a minute.
pub(crate) fn ttl_seconds(period: Duration) -> u64 {
    (period.as_secs_f64() * f64::from(TTL_PERIODS)).ceil().max(60.0) as u64
}

/// How often the timer runs, from what the host sent: `Next` minus `Last`
/// of its schedule status (when it fires, `Next` is the occurrence firing
/// now and `Last` the one before: docs/azure.md "Timer value"), else the
/// time to `Next` when that is ahead, else the declared schedule's period,
/// else five minutes.
pub(crate) fn period(status: Option<&ScheduleStatus>, schedule: &str, now: SystemTime) -> Duration {
    let at = |t: &Option<String>| t.as_deref().and_then(parse_host_time);
    let (last, next) = status.map_or((None, None), |s| (at(&s.last), at(&s.next)));
    // Before the first run `Last` is `0001-01-01T00:00:00`.
    let last = last.filter(|t| *t > UNIX_EPOCH);
    let at_least_a_second = |d: Duration| Some(d).filter(|d| *d >= Duration::from_secs(1));
    let between = last
        .zip(next)
        .and_then(|(last, next)| next.duration_since(last).ok())
        .and_then(at_least_a_second);
    let to_next = next
        .and_then(|next| next.duration_since(now).ok())
        .and_then(at_least_a_second);
    between
        .or(to_next)
        .or_else(|| schedule_period(schedule))
        .unwrap_or(DEFAULT_PERIOD)
}

/// A time as the host writes it in `ScheduleStatus` (`2026-11-24T01:05:00+00:00`,
/// RFC 3339; without an offset it is UTC, the platform's time zone).
fn parse_host_time(text: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(text, &Rfc3339).or_else(|_| {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");
        time::PrimitiveDateTime::parse(text, &format).map(|t| t.assume_utc())
    });
    parsed.ok().map(SystemTime::from)
}

/// The period of an NCRONTAB schedule (six fields, seconds first, or five
/// without them) or a TimeSpan (`hh:mm:ss`), for the forms schedules
/// usually take: the first field from the smallest unit up that is not one
/// fixed value gives it (`*` one unit, `*/N` N units, a list or range one
/// unit). `None` for a form it does not know (`%Setting%`).
fn schedule_period(schedule: &str) -> Option<Duration> {
    let schedule = schedule.trim();
    if !schedule.contains(' ') {
        let parts: Vec<u64> = schedule.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        return match parts[..] {
            [h, m, s] if h + m + s > 0 => Some(Duration::from_secs(h * 3600 + m * 60 + s)),
            _ => None,
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    const UNITS: [u64; 5] = [1, 60, 3600, 86_400, 86_400];
    let fields = match fields.len() {
        6 => &fields[..5],
        5 => &fields[..4],
        _ => return None,
    };
    let units = if fields.len() == 5 { &UNITS[..] } else { &UNITS[1..] };
    for (field, unit) in fields.iter().zip(units) {
        if field.parse::<u64>().is_ok() {
            continue;
        }
        let steps = match field.split_once('/') {
            Some((_, step)) => step.parse::<u64>().ok().filter(|s| *s > 0)?,
            None => 1,
        };
        return Some(Duration::from_secs(steps * unit));
    }
    // Every field fixed up to the day of the month: once a month at most;
    // a day is the safe (shorter) guess.
    Some(Duration::from_secs(86_400))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Common schedules give their period; unknown forms give none.
    #[test]
    fn schedule_periods() {
        let cases = [
            ("0 */5 * * * *", Some(300)),
            ("*/10 * * * * *", Some(10)),
            ("30 * * * * *", Some(60)),
            ("0 0 * * * *", Some(3600)),
            ("0 0 */2 * * *", Some(7200)),
            ("0 30 9 * * 1-5", Some(86_400)),
            ("*/15 * * * *", Some(900)),
            ("00:05:00", Some(300)),
            ("01:00:00", Some(3600)),
            ("%HealthSchedule%", None),
            ("00:00:00", None),
            ("0 */0 * * * *", None),
        ];
        for (schedule, secs) in cases {
            assert_eq!(schedule_period(schedule), secs.map(Duration::from_secs), "{schedule}");
        }
    }

    /// `Next` minus `Last` wins (not before the first run, when `Last` is
    /// `0001-01-01`); then a `Next` ahead; an unreadable or past status falls
    /// back to the schedule, then to five minutes.
    #[test]
    fn period_from_the_hosts_schedule_status() {
        let now = parse_host_time("2026-12-03T10:00:00+00:00").unwrap();
        let status = |last: &str, next: &str| ScheduleStatus {
            last: Some(last.into()),
            next: Some(next.into()),
            last_updated: None,
        };
        let schedule = "0 */5 * * * *";
        let period_of = |s: &ScheduleStatus| period(Some(s), schedule, now).as_secs();
        // Fired on time: Next is now, Last one period ago.
        assert_eq!(
            period_of(&status("2026-12-03T09:58:00+00:00", "2026-12-03T10:00:00+00:00")),
            120
        );
        assert_eq!(
            period_of(&status("2026-12-03T09:50:00", "2026-12-03T10:00:00.0000000Z")),
            600
        );
        // The first run: Last is year 1, which is far before.
        // The first run: Last is year 1, which says nothing of the period.
        assert_eq!(
            period_of(&status("0001-01-01T00:00:00", "2026-12-03T10:00:00+00:00")),
            300
        );
        assert_eq!(period_of(&status("garbage", "2026-12-03T10:07:00+00:00")), 420);
        assert_eq!(period_of(&status("garbage", "2026-12-03T09:55:00+00:00")), 300);
        assert_eq!(period(None, "*/20 * * * * *", now), Duration::from_secs(20));
        assert_eq!(period(None, "%S%", now), DEFAULT_PERIOD);
    }

    /// Three periods, never under a minute.
    #[test]
    fn ttl_is_a_few_periods() {
        assert_eq!(ttl_seconds(Duration::from_secs(300)), 900);
        assert_eq!(ttl_seconds(Duration::from_secs(10)), 60);
        assert_eq!(ttl_seconds(Duration::from_millis(100_500)), 302);
    }

    /// A result within its period (plus grace) is current; one a run has
    /// been missed since, or without its time, is stale.
    #[test]
    fn age_and_staleness() {
        let at = parse_host_time("2026-12-03T10:00:00Z").unwrap();
        let record = json!({"ok": true, "checked_at_unix_ms": unix_ms(at), "period_s": 300.0});
        let seconds = |s| at + Duration::from_secs(s);
        let fresh = judged(record.clone(), seconds(30));
        assert_eq!(
            (fresh["age_s"].as_f64(), fresh["stale"].as_bool()),
            (Some(30.0), Some(false))
        );
        assert_eq!(judged(record.clone(), seconds(419))["stale"], false);
        assert_eq!(judged(record.clone(), seconds(421))["stale"], true);
        let short = json!({"checked_at_unix_ms": unix_ms(at), "period_s": 2.0});
        assert_eq!(judged(short.clone(), seconds(6))["stale"], false);
        assert_eq!(judged(short, seconds(8))["stale"], true);
        assert_eq!(judged(json!({"ok": true}), seconds(1))["stale"], true);
        assert_eq!(judged(record, at - Duration::from_secs(5))["age_s"], 0.0);
    }

    /// The key carries the app's name, so apps sharing a cache keep theirs apart.
    #[test]
    fn key_is_named_for_the_app() {
        assert_eq!(key("orders-api"), "CacheHealthCheck:last:orders-api");
        assert_ne!(key("a"), key("b"));
    }
}
