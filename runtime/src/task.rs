//! What a running task sees (its context) and returns (its result or error).

use std::fmt;
use std::time::Duration;

use crate::client::Client;
use crate::protocol::ExceptionInfo;

/// Facts about the execution in progress, passed to every task method.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// The task id.
    pub id: String,
    /// The wire name.
    pub name: String,
    /// How many times this task has been retried so far.
    pub retries: u32,
    /// The queue the message came from.
    pub queue: String,
    /// Id of the first task of the workflow.
    pub root_id: Option<String>,
    /// Id of the task that sent this one.
    pub parent_id: Option<String>,
    /// When the message asked to run at the earliest.
    pub eta: Option<chrono::DateTime<chrono::Utc>>,
    /// When the message expires.
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) client: Client,
    pub(crate) soft_deadline: Option<tokio::time::Instant>,
}

impl TaskContext {
    /// A client to send further tasks, as children of this one.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the soft time limit has passed. A long task checks this between steps
    /// and stops cleanly; Celery raises `SoftTimeLimitExceeded` inside the task instead.
    pub fn soft_time_limit_exceeded(&self) -> bool {
        self.soft_deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
    }

    /// Completes when the soft time limit passes (never, without one). Select on it to
    /// stop a long await in time:
    ///
    /// ```ignore
    /// tokio::select! {
    ///     rows = export(&query) => Ok(rows?),
    ///     () = ctx.soft_time_limit() => Err(TaskError::new("SoftTimeLimitExceeded", "export took too long")),
    /// }
    /// ```
    pub async fn soft_time_limit(&self) {
        match self.soft_deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}

/// The outcome of a task method.
pub type TaskResult<T> = Result<T, TaskError>;

/// Why a task did not return a value: it failed, or asks to be retried.
///
/// Any `std::error::Error` converts into a failure with `?`; its type name becomes the
/// `exc_type` that Celery clients see.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskError {
    // Boxed: every task returns `Result<T, TaskError>`, and the happy path should not
    // pay for the size of an exception.
    pub(crate) kind: Box<TaskErrorKind>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskErrorKind {
    Failure {
        exception: ExceptionInfo,
        traceback: Option<String>,
    },
    Retry {
        countdown: Option<Duration>,
        cause: Option<ExceptionInfo>,
    },
}

/// The `exc_module` Celerity writes for errors raised by tasks. Python's Celery cannot
/// import it, so it recreates an exception class of the same name
/// (`celery/backends/base.py::exception_to_python`).
pub const TASK_ERROR_MODULE: &str = "celerity.exceptions";

impl TaskError {
    /// A failure of type `exc_type` (the name Celery clients see) with `message`.
    pub fn new(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError::python(exc_type, TASK_ERROR_MODULE, message)
    }

    /// A failure with an explicit Python module for the exception class, e.g.
    /// `TaskError::python("ValueError", "builtins", "bad input")` arrives in Python as a
    /// real `ValueError`.
    pub fn python(
        exc_type: impl Into<String>,
        module: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        TaskError {
            kind: Box::new(TaskErrorKind::Failure {
                exception: ExceptionInfo::new(exc_type, module, message),
                traceback: None,
            }),
        }
    }

    /// Asks for a retry after `countdown` (`None`: the retry policy's delay).
    pub fn retry(countdown: Option<Duration>) -> Self {
        TaskError {
            kind: Box::new(TaskErrorKind::Retry {
                countdown,
                cause: None,
            }),
        }
    }

    /// Adds the error that caused a retry request; stored with the RETRY state and raised
    /// as the final failure when retries run out.
    pub fn because(mut self, cause: TaskError) -> Self {
        if let TaskErrorKind::Retry { cause: slot, .. } = &mut *self.kind {
            *slot = cause.exception().cloned();
        }
        self
    }

    /// Attaches a traceback text to a failure.
    pub fn with_traceback(mut self, text: impl Into<String>) -> Self {
        if let TaskErrorKind::Failure { traceback, .. } = &mut *self.kind {
            *traceback = Some(text.into());
        }
        self
    }

    /// The exception of a failure (or the cause of a retry).
    pub fn exception(&self) -> Option<&ExceptionInfo> {
        match &*self.kind {
            TaskErrorKind::Failure { exception, .. } => Some(exception),
            TaskErrorKind::Retry { cause, .. } => cause.as_ref(),
        }
    }

    /// The error type name (`exc_type`), for failures.
    pub fn exc_type(&self) -> Option<&str> {
        self.exception().map(|e| e.exc_type.as_str())
    }

    /// Whether this is a retry request.
    pub fn is_retry(&self) -> bool {
        matches!(*self.kind, TaskErrorKind::Retry { .. })
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            TaskErrorKind::Failure { exception, .. } => {
                write!(f, "{}: {}", exception.exc_type, exception.message())
            }
            TaskErrorKind::Retry {
                countdown: Some(d), ..
            } => write!(f, "retry in {d:?}"),
            TaskErrorKind::Retry {
                countdown: None, ..
            } => f.write_str("retry"),
        }
    }
}

/// The last path segment of a type name: `std::io::Error` → `Error`,
/// `my_crate::SmtpUnavailable` → `SmtpUnavailable`.
fn short_type_name<E>() -> &'static str {
    let full = std::any::type_name::<E>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(error: E) -> Self {
        TaskError::new(short_type_name::<E>(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("mail server down")]
    struct SmtpUnavailable;

    #[test]
    fn std_errors_convert_with_their_type_name() {
        fn send() -> TaskResult<()> {
            Err(SmtpUnavailable)?
        }
        let error = send().unwrap_err();
        assert_eq!(error.exc_type(), Some("SmtpUnavailable"));
        assert_eq!(error.to_string(), "SmtpUnavailable: mail server down");
    }
}
