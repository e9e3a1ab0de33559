//! The worker's task lifecycle events, worded as Celery's log lines
//! (`celery/app/trace.py`: `LOG_RECEIVED`, `LOG_SUCCESS`, `LOG_RETRY`, `LOG_FAILURE`) so
//! that people and log queries used to Celery read them as they are.
//!
//! Every event has the target `celerity::worker` and carries `task` and `id` fields
//! besides its message, so JSON logs can be filtered without parsing messages.
//!
//! What comes from a message (an id, an unregistered task name, an error quoting an
//! argument) is cut at `REPR_MAXSIZE` (1024) characters, as Celery's `saferepr` cuts what it
//! logs, so a hostile or broken message cannot make a line of megabytes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::protocol::{ExceptionInfo, REPR_MAXSIZE, short};

/// Longest result shown in a "succeeded" line, as Celery's `resultrepr_maxsize` bounds it
/// (`celery/app/task.py`: 1024).
const RESULT_REPR_MAX: usize = REPR_MAXSIZE;

/// `Task tasks.ping[<id>] received`, when a message for a known task arrives.
pub(super) fn received(task: &str, id: &str, queue: &str, eta: Option<DateTime<Utc>>) {
    let id = short(id);
    let id: &str = &id;
    let eta = eta.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    tracing::info!(target: "celerity::worker", task, id, queue, eta, "Task {task}[{id}] received");
}

/// `Task tasks.ping[<id>] started`, when the task gets a slot and runs.
pub(super) fn started(task: &str, id: &str, retries: u32) {
    let id = short(id);
    let id: &str = &id;
    tracing::debug!(target: "celerity::worker", task, id, retries, "Task {task}[{id}] started");
}

/// `Task tasks.ping[<id>] succeeded in 0.000412s: "pong"`.
pub(super) fn succeeded(task: &str, id: &str, elapsed: Duration, result: &Value) {
    // The result's repr serialises the whole value: only when the line is written.
    if !tracing::enabled!(target: "celerity::worker", tracing::Level::INFO) {
        return;
    }
    let duration_ms = millis(elapsed);
    let id = short(id);
    let id: &str = &id;
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
    let id = short(id);
    let id: &str = &id;
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
    let id = short(id);
    let id: &str = &id;
    let error = exception.message();
    let error = short(&error);
    let error: &str = &error;
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

/// `Task tasks.report[<id>] terminated after 1.5s`: stopped by a revoke with `terminate`.
pub(super) fn terminated(task: &str, id: &str, elapsed: Duration) {
    let duration_ms = millis(elapsed);
    let id = short(id);
    let id: &str = &id;
    tracing::warn!(
        target: "celerity::worker",
        task,
        id,
        duration_ms,
        "Task {task}[{id}] terminated after {}s",
        seconds(elapsed)
    );
}

/// `Discarding revoked task: tasks.ping[<id>] (expired)`, Celery's wording.
pub(super) fn discarded(task: &str, id: &str, reason: &str) {
    let id = short(id);
    let id: &str = &id;
    tracing::warn!(target: "celerity::worker", task, id, reason, "Discarding revoked task: {task}[{id}] ({reason})");
}

/// `Received unregistered task of type 'tasks.nope'`, Celery's wording
/// (`consumer.py::UNKNOWN_TASK_ERROR`), with the name cut as `saferepr` would.
pub(super) fn unregistered(task: &str, id: &str, queue: &str) {
    let (task, id) = (short(task), short(id));
    tracing::error!(
        target: "celerity::worker",
        %task,
        %id,
        queue,
        "Received unregistered task of type '{task}'. The message has been ignored and discarded."
    );
}

/// `Received invalid task message: …`, Celery's wording (`consumer.py::INVALID_TASK_ERROR`):
/// one line for each refused message, whatever refused it (the transport, the size
/// limit, decoding), with the task and id when the message has them.
pub(super) fn refused(
    task: Option<&str>,
    id: Option<&str>,
    queue: &str,
    bytes: usize,
    reason: &str,
) {
    let (task, id) = (task.map(short), id.map(short));
    let said = reason.trim_end_matches('.');
    tracing::warn!(
        target: "celerity::worker",
        task = task.as_deref(),
        id = id.as_deref(),
        queue,
        bytes,
        reason,
        "Received invalid task message: {said}. The message has been rejected and discarded."
    );
}

/// Milliseconds to the microsecond, so JSON shows `0.079` rather than float noise.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// `ValueError: bad value`, each part cut at `REPR_MAXSIZE` characters.
fn describe(exception: &ExceptionInfo) -> String {
    let message = exception.message();
    format!("{}: {}", short(&exception.exc_type), short(&message))
}

/// Seconds to the microsecond, without trailing zeros: `0.000412`, `4`, `1.5`.
fn seconds(duration: Duration) -> String {
    let text = format!("{:.6}", duration.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The result as compact JSON, cut at [`RESULT_REPR_MAX`] characters. Serialising stops
/// once enough is written, so a large result is not copied whole for its log line.
fn result_repr(result: &Value) -> String {
    /// A writer that takes at most `room` bytes (a character is at most 4), then refuses.
    struct Capped {
        out: Vec<u8>,
        room: usize,
    }
    impl std::io::Write for Capped {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let take = bytes.len().min(self.room - self.out.len());
            if take == 0 && !bytes.is_empty() {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.out.extend_from_slice(&bytes[..take]);
            Ok(take)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut capped = Capped {
        out: Vec::new(),
        room: (RESULT_REPR_MAX + 1) * 4,
    };
    // An error only means the cap was reached.
    let _ = serde_json::to_writer(&mut capped, result);
    let text = match String::from_utf8(capped.out) {
        Ok(text) => text,
        // Cut inside a character: drop its partial bytes.
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let mut bytes = error.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).unwrap_or_default()
        }
    };
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
        let wide = Value::String("é".repeat(5000));
        assert_eq!(result_repr(&wide).chars().count(), RESULT_REPR_MAX + 1);
        let exact = Value::String("x".repeat(RESULT_REPR_MAX - 2));
        assert_eq!(result_repr(&exact).chars().count(), RESULT_REPR_MAX);
    }
}
