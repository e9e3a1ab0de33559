//! Task options: each task's own merged over `defaults:`, then checked, with every
//! mistake pointed at the place its value came from.

use crate::checked::{Options, Retry};
use crate::locate::{KeyPath, Segment};
use crate::report::{Reporter, child, item};
use crate::schema::{BackoffKind, RetrySpec, TaskOptions};

use super::DEFAULT_QUEUE;
use super::values::{DURATION_HELP, duration_ms, parse_rate};

/// Celery's `max_retries` when a retry policy does not say.
const DEFAULT_MAX_RETRIES: u32 = 3;

/// Celery's `default_retry_delay`, in milliseconds.
const DEFAULT_RETRY_DELAY_MS: u64 = 180_000;

/// The options of a task declared at `task_path`: its own (`options:`) over `defaults:`.
pub(super) fn options(
    reporter: &mut Reporter<'_>,
    task_path: &[Segment],
    defaults: &TaskOptions,
    own: Option<&TaskOptions>,
) -> Options {
    let options_path = child(task_path, "options");
    if own.is_some_and(|own| own.component.is_some()) {
        reporter.error_at_key(
            &child(&options_path, "component"),
            "`component` has no effect in a task's `options`",
            Some("move it up beside `args:`; only `defaults:` sets it for every task".into()),
        );
    }
    let merged = merge(defaults, own);
    let own = own.cloned().unwrap_or_default();
    let defaults_path = vec![Segment::Key("defaults".into())];
    // Where a value came from: the task's own options, else `defaults:`.
    let at = |key: &str, own_has: bool| -> KeyPath {
        child(
            if own_has {
                &options_path
            } else {
                &defaults_path
            },
            key,
        )
    };

    let queue = merged.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    if queue.trim().is_empty() {
        reporter.error_at_value(
            &at("queue", own.queue.is_some()),
            "a queue name cannot be empty",
            None,
        );
    }
    if let Some(priority) = merged.priority.filter(|p| *p > 9) {
        reporter.error_at_value(
            &at("priority", own.priority.is_some()),
            format!("priority {priority} is out of range"),
            Some("use a priority from 0 to 9".into()),
        );
    }
    let mut duration = |key: &str, value: &Option<serde_yaml::Value>, own_has: bool| {
        let value = value.as_ref()?;
        duration_ms(value)
            .map_err(|message| {
                reporter.error_at_value(&at(key, own_has), message, Some(DURATION_HELP.into()))
            })
            .ok()
    };
    let expires = duration("expires", &merged.expires, own.expires.is_some());
    let soft_time_limit = duration(
        "soft_time_limit",
        &merged.soft_time_limit,
        own.soft_time_limit.is_some(),
    );
    let time_limit = duration("time_limit", &merged.time_limit, own.time_limit.is_some());
    if let (Some(soft), Some(hard)) = (soft_time_limit, time_limit) {
        if soft > hard {
            reporter.error_at_value(
                &at("soft_time_limit", own.soft_time_limit.is_some()),
                "the soft time limit is longer than the hard time limit",
                Some("the soft limit warns the task before the hard limit aborts it: make it shorter".into()),
            );
        }
    }
    let rate_limit = merged.rate_limit.as_ref().and_then(|rate| {
        let parsed = parse_rate(rate);
        if parsed.is_none() {
            reporter.error_at_value(
                &at("rate_limit", own.rate_limit.is_some()),
                format!("invalid rate limit `{rate}`"),
                Some("write a count per unit: `10/s`, `100/m`, `1000/h`".into()),
            );
        }
        parsed
    });
    let retry = merged
        .retry
        .as_ref()
        .and_then(|retry| self::retry(reporter, &at("retry", own.retry.is_some()), retry));
    Options {
        queue: (queue != DEFAULT_QUEUE).then_some(queue),
        routing_key: merged.routing_key,
        priority: merged.priority,
        expires,
        soft_time_limit,
        time_limit,
        acks_late: merged.acks_late == Some(true),
        ignore_result: merged.ignore_result == Some(true),
        track_started: merged.track_started == Some(true),
        rate_limit,
        retry,
    }
}

/// A retry policy, or `None` when it has a mistake.
fn retry(reporter: &mut Reporter<'_>, path: &[Segment], spec: &RetrySpec) -> Option<Retry> {
    let mut ok = true;
    let mut duration = |key: &str, value: &Option<serde_yaml::Value>| {
        let value = value.as_ref()?;
        duration_ms(value)
            .map_err(|message| {
                reporter.error_at_value(&child(path, key), message, Some(DURATION_HELP.into()));
                ok = false;
            })
            .ok()
    };
    let delay = duration("delay", &spec.delay);
    let max_delay = duration("max_delay", &spec.max_delay);
    if let Some(max) = max_delay {
        if max < delay.unwrap_or(DEFAULT_RETRY_DELAY_MS) {
            reporter.error_at_value(
                &child(path, "max_delay"),
                "`max_delay` is shorter than `delay`",
                Some("raise `max_delay` or lower `delay`".into()),
            );
        }
    }
    if let Some(on) = &spec.on {
        for (index, name) in on.iter().enumerate() {
            if name.trim().is_empty() || name.contains(char::is_whitespace) {
                reporter.error_at_value(
                    &item(&child(path, "on"), index),
                    format!("`{name}` is not an error type name"),
                    Some("list the `exc_type` names to retry, e.g. `ConnectionError`".into()),
                );
                ok = false;
            }
        }
    }
    ok.then(|| Retry {
        max_retries: spec.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        delay,
        max_delay,
        exponential: spec.backoff == Some(BackoffKind::Exponential),
        jitter: spec.jitter,
        on: spec.on.clone(),
    })
}

/// Task options merged key by key: the task's own value wins over `defaults:`.
fn merge(defaults: &TaskOptions, own: Option<&TaskOptions>) -> TaskOptions {
    let Some(own) = own else {
        return defaults.clone();
    };
    let retry = match (&defaults.retry, &own.retry) {
        (Some(base), Some(own)) => Some(RetrySpec {
            max_retries: own.max_retries.or(base.max_retries),
            backoff: own.backoff.or(base.backoff),
            delay: own.delay.clone().or_else(|| base.delay.clone()),
            max_delay: own.max_delay.clone().or_else(|| base.max_delay.clone()),
            jitter: own.jitter.or(base.jitter),
            on: own.on.clone().or_else(|| base.on.clone()),
        }),
        (base, own) => own.clone().or_else(|| base.clone()),
    };
    TaskOptions {
        component: own.component.clone().or_else(|| defaults.component.clone()),
        queue: own.queue.clone().or_else(|| defaults.queue.clone()),
        routing_key: own
            .routing_key
            .clone()
            .or_else(|| defaults.routing_key.clone()),
        priority: own.priority.or(defaults.priority),
        retry,
        expires: own.expires.clone().or_else(|| defaults.expires.clone()),
        soft_time_limit: own
            .soft_time_limit
            .clone()
            .or_else(|| defaults.soft_time_limit.clone()),
        time_limit: own
            .time_limit
            .clone()
            .or_else(|| defaults.time_limit.clone()),
        acks_late: own.acks_late.or(defaults.acks_late),
        ignore_result: own.ignore_result.or(defaults.ignore_result),
        track_started: own.track_started.or(defaults.track_started),
        rate_limit: own
            .rate_limit
            .clone()
            .or_else(|| defaults.rate_limit.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(source: &str) -> (Options, Vec<String>) {
        let root: serde_yaml::Value = serde_yaml::from_str(source).unwrap();
        let defaults: TaskOptions = root
            .get("defaults")
            .map(|d| serde_yaml::from_value(d.clone()).unwrap())
            .unwrap_or_default();
        let own: Option<TaskOptions> = root
            .get("tasks")
            .and_then(|t| t.get("a"))
            .and_then(|a| a.get("options"))
            .map(|o| serde_yaml::from_value(o.clone()).unwrap());
        let mut reporter = Reporter::new(source);
        let task = child(&child(&[], "tasks"), "a");
        let options = options(&mut reporter, &task, &defaults, own.as_ref());
        let messages = reporter
            .finish()
            .into_iter()
            .map(|d| format!("{} {}", d.path, d.message))
            .collect();
        (options, messages)
    }

    #[test]
    fn a_tasks_own_options_win_key_by_key_over_the_defaults() {
        let (options, messages) = checked(
            "defaults: {queue: bulk, priority: 3, acks_late: true, retry: {max_retries: 5, delay: 10s}}\n\
             tasks:\n  a:\n    options: {priority: 7, retry: {backoff: exponential}}\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        assert_eq!(
            options,
            Options {
                queue: Some("bulk".into()),
                priority: Some(7),
                acks_late: true,
                retry: Some(Retry {
                    max_retries: 5,
                    delay: Some(10_000),
                    exponential: true,
                    ..Retry::default()
                }),
                ..Options::default()
            }
        );
    }

    #[test]
    fn celerys_default_queue_is_no_option_at_all() {
        let (options, _) = checked("tasks:\n  a:\n    options: {queue: celery}\n");
        assert_eq!(options.queue, None);
    }

    #[test]
    fn a_mistake_points_where_the_value_came_from() {
        let (_, messages) = checked(
            "defaults: {expires: 5x}\ntasks:\n  a:\n    options: {priority: 12, soft_time_limit: 2m, time_limit: 1m, rate_limit: 5/d}\n",
        );
        assert_eq!(
            messages,
            [
                "defaults.expires invalid duration `5x`: unknown unit `x`",
                "tasks.a.options.priority priority 12 is out of range",
                "tasks.a.options.soft_time_limit the soft time limit is longer than the hard time limit",
                "tasks.a.options.rate_limit invalid rate limit `5/d`",
            ]
        );
    }

    #[test]
    fn a_retry_policy_with_a_mistake_is_left_out() {
        let (options, messages) = checked(
            "tasks:\n  a:\n    options: {retry: {delay: 1m, max_delay: 30s, on: [\"Bad Name\"]}}\n",
        );
        assert_eq!(options.retry, None);
        assert_eq!(
            messages,
            [
                "tasks.a.options.retry.max_delay `max_delay` is shorter than `delay`",
                "tasks.a.options.retry.on[0] `Bad Name` is not an error type name",
            ]
        );
    }
}
