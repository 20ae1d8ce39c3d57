//! A timer trigger's schedule: NCRONTAB, parsed with the `croner` crate, or
//! a TimeSpan.
//!
//! Follows docs/azure.md "function.json" (a timerTrigger's `schedule`:
//! NCRONTAB with seconds, six fields, or a TimeSpan). As the WebJobs timer extension
//! does, six fields are `second minute hour day month day-of-week` and five
//! fields have no seconds. NCRONTAB's day of week is 0-6 from Sunday (7 is
//! Sunday too) and a day must match BOTH the day-of-month and the
//! day-of-week fields (NCrontab checks the weekday after the date), which is
//! croner's `dom_and_dow` mode. Times are UTC (Azure's default without
//! `WEBSITE_TIME_ZONE`). A TimeSpan (`hh:mm:ss`, `d.hh:mm:ss`) fires every
//! interval after the previous run.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use std::time::Duration;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// An NCRONTAB expression.
    Cron {
        /// The expression as written.
        expr: String,
        /// The parsed pattern.
        cron: Box<croner::Cron>,
    },
    /// A TimeSpan: every `interval`.
    Interval(Duration),
}

impl Schedule {
    /// Parses an NCRONTAB expression (5 or 6 fields) or a TimeSpan.
    pub fn parse(expr: &str) -> anyhow::Result<Schedule> {
        let expr = expr.trim();
        if expr.contains(':') && !expr.contains(' ') {
            return parse_timespan(expr).map(Schedule::Interval);
        }
        let fields = expr.split_whitespace().count();
        let seconds = match fields {
            5 => Seconds::Disallowed,
            6 => Seconds::Required,
            n => bail!("{expr:?} has {n} fields; NCRONTAB needs 6 (second minute hour day month day-of-week)"),
        };
        let cron = CronParser::builder()
            .seconds(seconds)
            .year(Year::Disallowed)
            .dom_and_dow(true)
            .sloppy_ranges(true)
            .build()
            .parse(expr)
            .with_context(|| format!("{expr:?} is not a valid NCRONTAB expression"))?;
        Ok(Schedule::Cron {
            expr: expr.to_string(),
            cron: Box::new(cron),
        })
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, expr } => cron
                .find_next_occurrence(&t, false)
                .with_context(|| format!("{expr:?} has no occurrence after {t}")),
            Schedule::Interval(d) => Ok(t + chrono::Duration::from_std(*d)?),
        }
    }

    /// The last occurrence strictly before `t`.
    pub fn prev_before(&self, t: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, expr } => cron
                .find_previous_occurrence(&t, false)
                .with_context(|| format!("{expr:?} has no occurrence before {t}")),
            Schedule::Interval(d) => Ok(t - chrono::Duration::from_std(*d)?),
        }
    }

    /// Fires more often than once a minute (then the host keeps no schedule
    /// status: `ScheduleStatus` is null).
    pub fn is_sub_minute(&self) -> bool {
        match self {
            Schedule::Interval(d) => *d < Duration::from_secs(60),
            Schedule::Cron { .. } => {
                let now = Utc::now();
                let gaps = (|| -> anyhow::Result<bool> {
                    let mut t = self.next_after(now)?;
                    for _ in 0..4 {
                        let n = self.next_after(t)?;
                        if n - t < chrono::Duration::seconds(60) {
                            return Ok(true);
                        }
                        t = n;
                    }
                    Ok(false)
                })();
                gaps.unwrap_or(false)
            }
        }
    }

    /// A short description: the expression, or `every 1h 30m`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron { expr, .. } => format!("\"{expr}\""),
            Schedule::Interval(d) => format!("every {}s", d.as_secs()),
        }
    }
}

/// .NET `TimeSpan` text: `[d.]hh:mm[:ss]`, greater than zero.
fn parse_timespan(s: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow::anyhow!("{s:?} is neither NCRONTAB nor a TimeSpan ([d.]hh:mm[:ss])");
    let (days, clock) = match s.split_once('.') {
        Some((d, c)) if !d.contains(':') => (d.parse::<u64>().map_err(|_| bad())?, c),
        _ => (0, s),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (h, m, sec) = match parts[..] {
        [h, m] => (h, m, 0),
        [h, m, sec] => (h, m, sec),
        _ => return Err(bad()),
    };
    if h > 23 || m > 59 || sec > 59 {
        return Err(bad());
    }
    let total = Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec);
    if total.is_zero() {
        bail!("{s:?}: a TimeSpan schedule must be longer than zero");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn six_fields_start_with_seconds() {
        let s = Schedule::parse("0 */5 * * * *").unwrap();
        assert_eq!(
            s.next_after(at(2024, 5, 1, 10, 12, 7)).unwrap(),
            at(2024, 5, 1, 10, 15, 0)
        );
        assert!(!s.is_sub_minute());
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            s.next_after(at(2024, 5, 1, 10, 0, 0)).unwrap(),
            at(2024, 5, 1, 10, 0, 2)
        );
        assert!(s.is_sub_minute());
        // Five fields: no seconds, as the WebJobs timer extension reads them.
        let s = Schedule::parse("30 9 * * *").unwrap();
        assert_eq!(
            s.next_after(at(2024, 5, 1, 10, 0, 0)).unwrap(),
            at(2024, 5, 2, 9, 30, 0)
        );
    }

    #[test]
    fn ncrontab_weekdays_and_day_matching() {
        // 2024-05-01 is a Wednesday. Day of week 0 is Sunday.
        let sunday = Schedule::parse("0 0 9 * * 0").unwrap();
        assert_eq!(
            sunday.next_after(at(2024, 5, 1, 0, 0, 0)).unwrap(),
            at(2024, 5, 5, 9, 0, 0)
        );
        let weekdays = Schedule::parse("0 30 9 * * 1-5").unwrap();
        assert_eq!(
            weekdays.next_after(at(2024, 5, 3, 10, 0, 0)).unwrap(),
            at(2024, 5, 6, 9, 30, 0)
        );
        let named = Schedule::parse("0 30 9 * Jan Mon").unwrap();
        assert_eq!(
            named.next_after(at(2024, 5, 1, 0, 0, 0)).unwrap(),
            at(2025, 1, 6, 9, 30, 0)
        );
        // Day 13 AND a Friday (NCrontab), not "13th or any Friday" (Vixie cron).
        let friday13 = Schedule::parse("0 0 0 13 * 5").unwrap();
        assert_eq!(
            friday13.next_after(at(2024, 5, 1, 0, 0, 0)).unwrap(),
            at(2024, 9, 13, 0, 0, 0)
        );
    }

    #[test]
    fn timespans_and_rejections() {
        let s = Schedule::parse("00:05:00").unwrap();
        assert_eq!(
            s.next_after(at(2024, 5, 1, 10, 0, 1)).unwrap(),
            at(2024, 5, 1, 10, 5, 1)
        );
        assert!(matches!(Schedule::parse("1.02:00:00").unwrap(), Schedule::Interval(d) if d.as_secs() == 93_600));
        assert!(Schedule::parse("00:00:30").unwrap().is_sub_minute());
        for bad in [
            "* * * *",
            "0 0 0 * * * 2024",
            "61 * * * * *",
            "00:00:00",
            "25:00:00",
            "every minute",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
