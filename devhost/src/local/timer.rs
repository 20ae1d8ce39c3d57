//! Timer triggers, fired on their schedule as the host's timer listener
//! does: `POST /<Function>` with `{"Data": {<binding>: TimerInfo}}`, one
//! invocation at a time per function, the next occurrence counted from the
//! end of a late run (missed occurrences are skipped, not queued).
//!
//! Follows docs/azure.md "Timer value": the `ScheduleStatus` passed is the
//! monitor's record from before the run (`Last` = the previous run's
//! scheduled time, `0001-01-01T00:00:00` before the first; `Next` = the
//! occurrence firing now; `LastUpdated` = when it was written), and null when
//! `useMonitor` is false or the schedule fires more than once a minute.

use super::console::{self, InvocationLog, Outcome};
use crate::app_manifest::{expand_settings, AppManifest, Trigger};
use crate::functions_host::{new_invocation_id, timer_info_with_status, HandlerClient, ScheduleStatus};
use crate::schedule::Schedule;
use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Instant;
use time::OffsetDateTime;
use tokio::sync::watch;

/// One timer function, ready to run.
#[derive(Debug)]
pub struct Timer {
    /// The function's name.
    pub function: String,
    /// The trigger binding's name.
    pub binding: String,
    /// The schedule in effect (after `%Setting%` expansion and overrides).
    pub schedule: Schedule,
    /// `runOnStartup`.
    pub run_on_startup: bool,
    /// Whether the monitor keeps a `ScheduleStatus` for it.
    pub monitored: bool,
    status: Mutex<Option<ScheduleStatus>>,
}

/// The timer functions of `manifest`, with `overrides` (`(function,
/// schedule)`) replacing schedules and `%Setting%` expanded via `lookup`.
pub fn plan(
    manifest: &AppManifest,
    overrides: &[(String, String)],
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<Timer>> {
    for (name, _) in overrides {
        let is_timer = manifest
            .function(name)
            .is_some_and(|f| matches!(f.trigger, Trigger::Timer(_)));
        anyhow::ensure!(is_timer, "--schedule-override {name}: no timer function of that name");
    }
    let mut timers = Vec::new();
    for f in &manifest.functions {
        let Trigger::Timer(t) = &f.trigger else { continue };
        let written = overrides
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&f.name))
            .map_or(t.schedule.as_str(), |(_, s)| s.as_str());
        let expr = expand_settings(written, &lookup).with_context(|| format!("{}: schedule", f.name))?;
        let schedule = Schedule::parse(&expr).with_context(|| format!("{}: schedule", f.name))?;
        let monitored = t.use_monitor.unwrap_or(true) && !schedule.is_sub_minute();
        timers.push(Timer {
            function: f.name.clone(),
            binding: t.binding.clone(),
            schedule,
            run_on_startup: t.run_on_startup,
            monitored,
            status: Mutex::new(None),
        });
    }
    Ok(timers)
}

fn to_time(t: DateTime<Utc>) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.timestamp_nanos_opt().unwrap_or(0)))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Timer {
    /// `"<schedule>", next <time>` for the banner.
    pub fn describe(&self) -> String {
        let next = self
            .schedule
            .next_after(Utc::now())
            .map(|n| n.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|_| "never".into());
        let startup = if self.run_on_startup { ", runOnStartup" } else { "" };
        format!("timerTrigger {}{startup}, next {next} (UTC)", self.schedule.describe())
    }

    /// The `TimerInfo` the host would pass now.
    pub fn timer_info(&self, is_past_due: bool) -> Value {
        let status = *self.status.lock().unwrap();
        timer_info_with_status(is_past_due, status.as_ref().filter(|_| self.monitored))
    }

    /// Sends one invocation, prints it, and (for a `scheduled` run) records
    /// the run in the schedule status.
    pub async fn fire(
        &self,
        handler: &HandlerClient,
        log: &InvocationLog,
        what: &str,
        scheduled: Option<DateTime<Utc>>,
    ) {
        let id = new_invocation_id();
        let data = json!({ &self.binding: self.timer_info(false) });
        let started = Instant::now();
        let result = handler.invoke_as(&id, &self.function, data, json!({})).await;
        match result {
            Ok(rsp) => {
                let status = rsp.status().as_u16();
                let body: Value = rsp.json().await.unwrap_or(Value::Null);
                log.record_outcome(&self.function, what, Outcome::Status(status), started, &id);
                if (200..300).contains(&status) {
                    let logs: Vec<String> = body["Logs"]
                        .as_array()
                        .map(|l| l.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                        .unwrap_or_default();
                    console::logs(&self.function, &logs);
                } else {
                    console::logs(&self.function, &[format!("answer: {body}")]);
                }
            }
            Err(e) => log.record_outcome(&self.function, what, Outcome::Failed(e.to_string()), started, &id),
        }
        if let Some(at) = scheduled {
            let now = Utc::now();
            if let Ok(next) = self.schedule.next_after(at.max(now)) {
                *self.status.lock().unwrap() = Some(ScheduleStatus {
                    last: Some(to_time(at)),
                    next: to_time(next),
                    last_updated: to_time(now),
                });
            }
        }
    }

    /// Fires on schedule (and once at start with `runOnStartup`) until
    /// `stop` turns true; an invocation in flight is finished first.
    pub async fn run(&self, handler: &HandlerClient, log: &InvocationLog, mut stop: watch::Receiver<bool>) {
        let Ok(first) = self.schedule.next_after(Utc::now()) else {
            return;
        };
        *self.status.lock().unwrap() = Some(ScheduleStatus {
            last: None,
            next: to_time(first),
            last_updated: to_time(Utc::now()),
        });
        if self.run_on_startup {
            self.fire(handler, log, "timer (runOnStartup)", None).await;
        }
        let mut next = first;
        loop {
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if *stop.borrow() {
                return;
            }
            let what = format!("timer (scheduled {})", next.format("%H:%M:%S"));
            self.fire(handler, log, &what, Some(next)).await;
            match self.schedule.next_after(next.max(Utc::now())) {
                Ok(n) => next = n,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_manifest::{Function, HostSettings};
    use std::path::PathBuf;

    fn app(timers: &[(&str, Value)]) -> AppManifest {
        let host = json!({"customHandler": {"description": {"defaultExecutablePath": "handler"}}});
        let functions = timers
            .iter()
            .map(|(name, binding)| Function::from_json(name.to_string(), &json!({ "bindings": [binding] })).unwrap())
            .collect();
        AppManifest {
            root: PathBuf::from("."),
            functions_dir: PathBuf::from("."),
            host: HostSettings::from_json(&host).unwrap(),
            functions,
        }
    }

    fn timer(schedule: &str, extra: Value) -> Value {
        let mut b = json!({"type": "timerTrigger", "direction": "in", "name": "t", "schedule": schedule});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    }

    #[test]
    fn plans_schedules_overrides_and_monitoring() {
        let m = app(&[
            ("Every5", timer("0 */5 * * * *", json!({"runOnStartup": true}))),
            ("FromSetting", timer("%Sched%", json!({}))),
            ("Unmonitored", timer("0 0 * * * *", json!({"useMonitor": false}))),
        ]);
        let lookup = |k: &str| (k == "Sched").then(|| "*/10 * * * * *".to_string());
        let t = plan(&m, &[], lookup).unwrap();
        assert!(t[0].run_on_startup && t[0].monitored);
        assert!(!t[1].monitored, "sub-minute: no ScheduleStatus");
        assert!(!t[2].monitored, "useMonitor: false");
        assert_eq!(
            t[0].timer_info(false)["ScheduleStatus"],
            Value::Null,
            "no status before start"
        );

        let over = [("every5".to_string(), "*/2 * * * * *".to_string())];
        let t = plan(&m, &over, lookup).unwrap();
        assert!(matches!(&t[0].schedule, Schedule::Cron { expr, .. } if expr == "*/2 * * * * *"));
        assert!(!t[0].monitored);

        let unknown = [("Nope".to_string(), "* * * * * *".to_string())];
        assert!(plan(&m, &unknown, lookup).is_err());
        let err = plan(&m, &[], |_: &str| None).unwrap_err();
        assert!(format!("{err:#}").contains("Sched"), "{err:#}");
    }
}
