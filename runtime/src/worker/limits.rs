//! Each task's rate and time limits: those of its schema, unless remote control changed
//! them while the worker runs (Celery's `rate_limit` and `time_limit` commands, which set
//! `task.rate_limit`, `task.soft_time_limit` and `task.time_limit` in the worker's process:
//! `celery/worker/control.py`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::spec::{RateLimit, TaskSpec};

/// The longest wait between two starts: a year, for rates so low that the interval would
/// overflow a clock.
const LONGEST_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A rate limit as Celery writes it (`10/m`), and the interval between starts it allows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rate {
    /// As given, for `inspect registered` (Celery shows the attribute as set).
    pub text: String,
    /// Starts are spaced this far apart (Celery's token bucket holds one token).
    pub interval: Duration,
}

/// Why a rate limit string was refused, as Celery's `rate()` fails
/// (`celery/utils/time.py`): the count is not a number (`ValueError`), or the unit is not
/// `s`, `m` or `h` (`KeyError`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RateError {
    NotANumber(String),
    UnknownUnit(String),
}

impl Rate {
    /// Reads Celery's rate limit syntax: `<count>[/s|/m|/h]`, the count a number of starts
    /// per unit (default per second). `None` when it allows any rate: empty, zero or
    /// negative, which Celery treats as no limit.
    pub(crate) fn parse(text: &str) -> Result<Option<Rate>, RateError> {
        if text.is_empty() {
            return Ok(None);
        }
        let (count, unit) = text.split_once('/').unwrap_or((text, ""));
        let per_second = match unit {
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(RateError::UnknownUnit(other.to_owned())),
        };
        // Python's `float()`, which allows surrounding blanks.
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| RateError::NotANumber(count.to_owned()))?;
        let rate = count / per_second;
        if rate.is_nan() || rate <= 0.0 {
            return Ok(None);
        }
        Ok(Some(Rate {
            text: text.to_owned(),
            interval: Duration::try_from_secs_f64(1.0 / rate)
                .unwrap_or(LONGEST_INTERVAL)
                .min(LONGEST_INTERVAL),
        }))
    }

    /// A schema's rate limit, written as Celery would.
    fn of(limit: RateLimit) -> Rate {
        let count = limit.count.max(1);
        let text = match limit.period.as_millis() {
            1_000 => format!("{count}/s"),
            60_000 => format!("{count}/m"),
            3_600_000 => format!("{count}/h"),
            _ => {
                let per_second = f64::from(count) / limit.period.as_secs_f64();
                format!("{}/s", python_float(per_second))
            }
        };
        Rate {
            text,
            interval: limit.period / count,
        }
    }
}

/// A task's time limits, as Celery's `soft_time_limit` and `time_limit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeLimits {
    pub soft: Option<Duration>,
    pub hard: Option<Duration>,
}

/// The limits of every task, and when each rate-limited task may next start.
#[derive(Default)]
pub(crate) struct TaskLimits {
    state: Mutex<State>,
    /// Wakes the tasks waiting for their turn when a rate limit changes.
    rates_changed: Notify,
}

#[derive(Default)]
struct State {
    /// Rate limits set by remote control, by task name; `None` for none.
    rates: HashMap<String, Option<Rate>>,
    /// Time limits set by remote control, by task name.
    times: HashMap<String, TimeLimits>,
    /// Next start time allowed per rate-limited task name.
    next_start: HashMap<String, Instant>,
}

impl TaskLimits {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is one insert or removal: a poisoned lock is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rate limit `spec`'s task runs under now.
    pub(crate) fn rate(&self, spec: &TaskSpec) -> Option<Rate> {
        match self.lock().rates.get(spec.name) {
            Some(set) => set.clone(),
            None => spec.rate_limit.map(Rate::of),
        }
    }

    /// Sets the rate limit of task `name` (`None`: no limit). Its next start is no longer
    /// held back by the old limit (Celery's `consumer.reset_rate_limits()`), and the tasks
    /// waiting for their turn take a new one.
    pub(crate) fn set_rate(&self, name: &str, rate: Option<Rate>) {
        let mut state = self.lock();
        state.rates.insert(name.to_owned(), rate);
        state.next_start.remove(name);
        drop(state);
        self.rates_changed.notify_waiters();
    }

    /// The time limits `spec`'s task runs under now (a message's own `timelimit` header
    /// still wins over them).
    pub(crate) fn times(&self, spec: &TaskSpec) -> TimeLimits {
        match self.lock().times.get(spec.name) {
            Some(set) => *set,
            None => TimeLimits {
                soft: spec.soft_time_limit,
                hard: spec.time_limit,
            },
        }
    }

    /// Sets both time limits of task `name`, as Celery's `time_limit` command does (a limit
    /// not given is removed).
    pub(crate) fn set_times(&self, name: &str, limits: TimeLimits) {
        self.lock().times.insert(name.to_owned(), limits);
    }

    /// Waits for the task's turn under its rate limit: starts are spaced `1 / rate` apart,
    /// per worker, as Celery's `rate_limit` is (`10/m`: one start every 6 s).
    pub(crate) async fn wait_turn(&self, spec: &TaskSpec) {
        loop {
            // Registered before the turn is taken, so a change in between is not missed.
            let changed = self.rates_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(rate) = self.rate(spec) else { return };
            let turn = {
                let mut state = self.lock();
                let now = Instant::now();
                let slot = state
                    .next_start
                    .get(spec.name)
                    .copied()
                    .filter(|t| *t > now)
                    .unwrap_or(now);
                state
                    .next_start
                    .insert(spec.name.to_owned(), slot + rate.interval);
                slot
            };
            tokio::select! {
                () = tokio::time::sleep_until(turn) => return,
                () = changed => {}
            }
        }
    }
}

/// `value` as Python's `str(float)` writes it: `2.0`, `0.5`.
pub(crate) fn python_float(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_celery_rate_strings() {
        let interval = |text: &str| Rate::parse(text).unwrap().map(|r| r.interval);
        assert_eq!(interval("10/m"), Some(Duration::from_secs(6)));
        assert_eq!(interval("2"), Some(Duration::from_millis(500)));
        assert_eq!(interval("4/s"), Some(Duration::from_millis(250)));
        assert_eq!(interval("1/h"), Some(Duration::from_secs(3600)));
        assert_eq!(interval(" 0.5 /s"), Some(Duration::from_secs(2)));
        for none in ["", "0", "0/m", "-3/s"] {
            assert_eq!(interval(none), None, "{none:?} is no limit");
        }
        assert_eq!(
            Rate::parse("x/y"),
            Err(RateError::UnknownUnit("y".into())),
            "the unit is checked first, as Celery's map lookup comes first"
        );
        assert_eq!(
            Rate::parse("abc/s"),
            Err(RateError::NotANumber("abc".into()))
        );
    }

    #[test]
    fn a_schema_limit_reads_as_celery_writes_it() {
        let text = |count, secs| {
            Rate::of(RateLimit {
                count,
                period: Duration::from_secs(secs),
            })
            .text
        };
        assert_eq!(text(10, 60), "10/m");
        assert_eq!(text(3, 1), "3/s");
        assert_eq!(text(5, 3600), "5/h");
        assert_eq!(text(1, 2), "0.5/s");
        assert_eq!(python_float(2.0), "2.0");
        assert_eq!(python_float(0.25), "0.25");
    }

    static TASK: TaskSpec = TaskSpec::new("t.limited", &[]).time_limit(Duration::from_secs(9));

    #[test]
    fn set_limits_replace_the_schema_s() {
        let limits = TaskLimits::default();
        assert_eq!(limits.rate(&TASK), None);
        assert_eq!(limits.times(&TASK).hard, Some(Duration::from_secs(9)));
        limits.set_rate("t.limited", Rate::parse("10/m").unwrap());
        assert_eq!(limits.rate(&TASK).unwrap().text, "10/m");
        limits.set_times(
            "t.limited",
            TimeLimits {
                soft: Some(Duration::from_secs(1)),
                hard: None,
            },
        );
        assert_eq!(
            limits.times(&TASK),
            TimeLimits {
                soft: Some(Duration::from_secs(1)),
                hard: None
            },
            "both are replaced, as Celery's command replaces both"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn starts_are_spaced_and_a_new_limit_applies_to_tasks_already_waiting() {
        let limits = std::sync::Arc::new(TaskLimits::default());
        limits.set_rate("t.limited", Rate::parse("1/m").unwrap());
        let start = Instant::now();
        limits.wait_turn(&TASK).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first starts at once");
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move {
                limits.wait_turn(&TASK).await;
                start.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        limits.set_rate("t.limited", Rate::parse("2/s").unwrap());
        let waited = waiting.await.unwrap();
        assert!(
            waited < Duration::from_secs(2),
            "the waiting task took a turn under the new limit: {waited:?}"
        );
        let before = Instant::now();
        limits.wait_turn(&TASK).await;
        assert_eq!(before.elapsed(), Duration::from_millis(500));
        limits.set_rate("t.limited", None);
        let before = Instant::now();
        limits.wait_turn(&TASK).await;
        assert_eq!(before.elapsed(), Duration::ZERO, "no limit");
    }
}
