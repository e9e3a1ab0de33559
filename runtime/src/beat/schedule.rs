//! What a schema's `schedules:` block becomes: each periodic task with its task, its
//! arguments and when it runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::crontab::Crontab;
use crate::error::Result;
use crate::spec::TaskSpec;

/// A periodic task: an entry of the `SCHEDULES` table generated from a schema (Celery
/// beat's schedule entry).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The schedule's name (its key under `schedules:`), sent as the `periodic_task_name`
    /// header.
    pub name: &'static str,
    /// The task it sends.
    pub task: &'static TaskSpec,
    /// Builds the positional arguments of each run.
    pub args: fn() -> Result<Vec<Value>>,
    /// When runs are due.
    pub recurrence: Recurrence,
    /// The queue, instead of the task's.
    pub queue: Option<&'static str>,
    /// The message priority, instead of the task's.
    pub priority: Option<u8>,
    /// Each run is revoked if not started within this long after it was sent.
    pub expires: Option<Duration>,
}

impl Schedule {
    /// A schedule called `name` sending `task` with the arguments `args` builds.
    pub const fn new(
        name: &'static str,
        task: &'static TaskSpec,
        args: fn() -> Result<Vec<Value>>,
        recurrence: Recurrence,
    ) -> Self {
        Schedule {
            name,
            task,
            args,
            recurrence,
            queue: None,
            priority: None,
            expires: None,
        }
    }

    /// Sends each run to `queue`.
    #[must_use]
    pub const fn queue(mut self, queue: &'static str) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Sends each run with `priority` (0–9).
    #[must_use]
    pub const fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Revokes a run not started within `after` of its sending.
    #[must_use]
    pub const fn expires(mut self, after: Duration) -> Self {
        self.expires = Some(after);
        self
    }

    /// The queue runs are sent to.
    pub fn queue_name(&self) -> &'static str {
        self.queue.unwrap_or(self.task.queue)
    }
}

/// When a schedule's runs are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// At every multiple of the interval since the Unix epoch: every replica of the
    /// scheduler agrees on which run is due, whenever it started.
    Every(Duration),
    /// When the wall clock of the crontab's time zone matches it.
    Crontab(Crontab),
}

impl Recurrence {
    /// The first run strictly after `after`; `None` when there is none (a crontab that
    /// never matches in the next four centuries, or a time zone this build does not know).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Recurrence::Every(every) => {
                let every = i64::try_from(every.as_millis()).ok().filter(|ms| *ms > 0)?;
                let ms = after.timestamp_millis();
                let next = (ms.div_euclid(every) + 1).checked_mul(every)?;
                DateTime::from_timestamp_millis(next)
            }
            Recurrence::Crontab(crontab) => crontab.next_after(after),
        }
    }

    /// The latest run in `(after, until]`, if any: the one run a scheduler that was away
    /// sends for every run it missed (Celery's policy: once, not once per missed run).
    pub fn latest_in(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if until <= after {
            return None;
        }
        if let Recurrence::Every(every) = self {
            let every = i64::try_from(every.as_millis()).ok().filter(|ms| *ms > 0)?;
            let latest = until.timestamp_millis().div_euclid(every) * every;
            return (latest > after.timestamp_millis())
                .then(|| DateTime::from_timestamp_millis(latest))
                .flatten();
        }
        // Search back from `until` in growing windows, so that a long absence costs a few
        // searches rather than one step per missed run.
        let mut window = chrono::Duration::hours(1);
        loop {
            let from = (until - window).max(after);
            if let Some(mut run) = self.next_after(from).filter(|run| *run <= until) {
                while let Some(next) = self.next_after(run).filter(|next| *next <= until) {
                    run = next;
                }
                return Some(run);
            }
            if from == after {
                return None;
            }
            window = window * 4;
        }
    }
}

impl std::fmt::Display for Recurrence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recurrence::Every(every) => write!(f, "every {}", show_duration(*every)),
            Recurrence::Crontab(crontab) => {
                write!(f, "crontab {} {}", crontab.expression(), crontab.timezone())
            }
        }
    }
}

/// `30s`, `5m`, `2h`, `1d`, `1500ms`: a duration as the schema language writes it.
fn show_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn intervals_fall_on_multiples_of_themselves_since_the_epoch() {
        let every = Recurrence::Every(Duration::from_secs(30));
        assert_eq!(
            every.next_after(at("2026-03-01T10:00:10Z")),
            Some(at("2026-03-01T10:00:30Z"))
        );
        assert_eq!(
            every.next_after(at("2026-03-01T10:00:30Z")),
            Some(at("2026-03-01T10:01:00Z")),
            "strictly after"
        );
        let seven = Recurrence::Every(Duration::from_secs(7 * 60));
        let next = seven.next_after(at("2026-03-01T10:00:00Z")).unwrap();
        assert_eq!(next.timestamp() % 420, 0);
        assert!(next > at("2026-03-01T10:00:00Z") && next <= at("2026-03-01T10:07:00Z"));
    }

    #[test]
    fn an_interval_keeps_real_time_spacing_across_a_clock_change() {
        // Berlin moves its clocks forward at 01:00 UTC on 2026-03-29: an hourly interval
        // does not notice.
        let hourly = Recurrence::Every(Duration::from_secs(3600));
        let runs: Vec<DateTime<Utc>> =
            std::iter::successors(hourly.next_after(at("2026-03-28T23:30:00Z")), |run| {
                hourly.next_after(*run)
            })
            .take(4)
            .collect();
        assert_eq!(
            runs,
            [
                at("2026-03-29T00:00:00Z"),
                at("2026-03-29T01:00:00Z"),
                at("2026-03-29T02:00:00Z"),
                at("2026-03-29T03:00:00Z"),
            ]
        );
    }

    #[test]
    fn missed_runs_collapse_into_the_latest() {
        let every = Recurrence::Every(Duration::from_secs(60));
        assert_eq!(
            every.latest_in(at("2026-03-01T10:00:00Z"), at("2026-03-01T10:05:30Z")),
            Some(at("2026-03-01T10:05:00Z"))
        );
        assert_eq!(
            every.latest_in(at("2026-03-01T10:00:00Z"), at("2026-03-01T10:00:59Z")),
            None,
            "nothing was missed"
        );
        let daily = Recurrence::Crontab(Crontab::new("0 3 * * *", "UTC").minutes(&[0]).hours(&[3]));
        assert_eq!(
            daily.latest_in(at("2026-01-01T03:00:00Z"), at("2026-03-01T12:00:00Z")),
            Some(at("2026-03-01T03:00:00Z")),
            "two months away, one run"
        );
        assert_eq!(
            daily.latest_in(at("2026-03-01T03:00:00Z"), at("2026-03-02T02:59:00Z")),
            None
        );
    }

    #[test]
    fn recurrences_print_as_the_schema_writes_them() {
        assert_eq!(
            Recurrence::Every(Duration::from_secs(90)).to_string(),
            "every 90s"
        );
        assert_eq!(
            Recurrence::Every(Duration::from_secs(300)).to_string(),
            "every 5m"
        );
        assert_eq!(
            Recurrence::Every(Duration::from_millis(1500)).to_string(),
            "every 1500ms"
        );
        let crontab = Crontab::new("@daily", "Europe/Berlin")
            .minutes(&[0])
            .hours(&[0]);
        assert_eq!(
            Recurrence::Crontab(crontab).to_string(),
            "crontab @daily Europe/Berlin"
        );
    }
}
