//! The worker's task lifecycle events, worded as Celery's log lines
//! (`celery/app/trace.py`: `LOG_RECEIVED`, `LOG_SUCCESS`, `LOG_RETRY`, `LOG_FAILURE`) so
//! that people and log queries used to Celery read them as they are.
//!
//! Every event has the target `celerity::worker` and carries `task` and `id` fields
//! besides its message, so JSON logs can be filtered without parsing messages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::protocol::ExceptionInfo;

/// Longest result shown in a "succeeded" line, as Celery's `resultrepr_maxsize` bounds it.
const RESULT_REPR_MAX: usize = 1024;

/// `Task tasks.ping[<id>] received`, when a message for a known task arrives.
pub(super) fn received(task: &str, id: &str, queue: &str, eta: Option<DateTime<Utc>>) {
    let eta = eta.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    tracing::info!(target: "celerity::worker", task, id, queue, eta, "Task {task}[{id}] received");
}

/// `Task tasks.ping[<id>] started`, when the task gets a slot and runs.
pub(super) fn started(task: &str, id: &str, retries: u32) {
    tracing::debug!(target: "celerity::worker", task, id, retries, "Task {task}[{id}] started");
}

/// `Task tasks.ping[<id>] succeeded in 0.000412s: "pong"`.
pub(super) fn succeeded(task: &str, id: &str, elapsed: Duration, result: &Value) {
    // The result's repr serialises the whole value: only when the line is written.
    if !tracing::enabled!(target: "celerity::worker", tracing::Level::INFO) {
        return;
    }
    let duration_ms = millis(elapsed);
    let repr = result_repr(result);
    tracing::info!(
        target: "celerity::worker",
        task,
        id,
        duration_ms,
        "Task {task}[{id}] succeeded in {}s: {repr}",
        seconds(elapsed)
    );
}

/// `Task tasks.send_email[<id>] retry: Retry in 2s: SmtpUnavailable: …`, once the retry
/// is published.
pub(super) fn retried(
    task: &str,
    id: &str,
    retries: u32,
    countdown: Duration,
    eta: DateTime<Utc>,
    cause: Option<&ExceptionInfo>,
) {
    let reason = cause.map_or_else(|| "retry requested".to_owned(), describe);
    let countdown_ms = u64::try_from(countdown.as_millis()).unwrap_or(u64::MAX);
    let eta = eta.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tracing::warn!(
        target: "celerity::worker",
        task,
        id,
        retries,
        countdown_ms,
        eta,
        reason,
        "Task {task}[{id}] retry: Retry in {}s: {reason}",
        seconds(countdown)
    );
}

/// `Task tasks.send_email[<id>] failed in 0.004s: InvalidAddress: not an email address`.
pub(super) fn failed(task: &str, id: &str, elapsed: Duration, exception: &ExceptionInfo) {
    let duration_ms = millis(elapsed);
    let error = exception.message();
    tracing::error!(
        target: "celerity::worker",
        task,
        id,
        duration_ms,
        exc_type = %exception.exc_type,
        error,
        "Task {task}[{id}] failed in {}s: {}",
        seconds(elapsed),
        describe(exception)
    );
}

/// `Discarding revoked task: tasks.ping[<id>] (expired)`, Celery's wording.
pub(super) fn discarded(task: &str, id: &str, reason: &str) {
    tracing::warn!(target: "celerity::worker", task, id, reason, "Discarding revoked task: {task}[{id}] ({reason})");
}

/// Milliseconds to the microsecond, so JSON shows `0.079` rather than float noise.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

fn describe(exception: &ExceptionInfo) -> String {
    format!("{}: {}", exception.exc_type, exception.message())
}

/// Seconds to the microsecond, without trailing zeros: `0.000412`, `4`, `1.5`.
fn seconds(duration: Duration) -> String {
    let text = format!("{:.6}", duration.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The result as compact JSON, cut at [`RESULT_REPR_MAX`] characters.
fn result_repr(result: &Value) -> String {
    let text = result.to_string();
    match text.char_indices().nth(RESULT_REPR_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_drop_trailing_zeros() {
        assert_eq!(seconds(Duration::from_millis(2)), "0.002");
        assert_eq!(seconds(Duration::from_secs(4)), "4");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds(Duration::from_micros(412)), "0.000412");
        assert_eq!(seconds(Duration::from_nanos(400)), "0");
    }

    #[test]
    fn long_results_are_cut() {
        let long = Value::String("x".repeat(2000));
        let repr = result_repr(&long);
        assert_eq!(repr.chars().count(), RESULT_REPR_MAX + 1);
        assert!(repr.starts_with("\"xxx") && repr.ends_with('…'));
        assert_eq!(result_repr(&Value::String("pong".into())), "\"pong\"");
    }
}
