//! What a running task sees (its context) and returns (its result or error).

use std::fmt;
use std::time::Duration;

use crate::client::Client;
use crate::protocol::ExceptionInfo;
use crate::traceback::Traceback;

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
    /// The schedule that sent this run, when a scheduler sent it (the `periodic_task_name`
    /// header, which Celery tasks read as `self.request.periodic_task_name`).
    pub periodic_task_name: Option<String>,
    pub(crate) client: Client,
    pub(crate) soft_deadline: Option<tokio::time::Instant>,
}

impl TaskContext {
    /// A context for unit tests of a component, like the one the worker makes for the
    /// task `name`: a fresh id (also the root id), no retries, the queue `celery`, no time
    /// limit, and a client on an embedded in-memory broker and backend of its own, so
    /// tasks the component sends go nowhere unless the test passes its own client with
    /// [`with_client`](Self::with_client).
    ///
    /// ```
    /// use celerity::TaskContext;
    ///
    /// let ctx = TaskContext::for_test("tasks.send_email").with_retries(2);
    /// assert_eq!(ctx.name, "tasks.send_email");
    /// assert_eq!(ctx.retries, 2);
    /// assert_eq!(ctx.root_id.as_deref(), Some(ctx.id.as_str()));
    /// assert!(!ctx.soft_time_limit_exceeded());
    /// ```
    pub fn for_test(name: impl Into<String>) -> TaskContext {
        let id = uuid::Uuid::new_v4().to_string();
        let client = crate::App::memory().client().child_of(&id, &id);
        TaskContext {
            root_id: Some(id.clone()),
            id,
            name: name.into(),
            retries: 0,
            queue: "celery".to_owned(),
            parent_id: None,
            eta: None,
            expires: None,
            periodic_task_name: None,
            client,
            soft_deadline: None,
        }
    }

    /// The same context with task id `id`; tasks sent through [`client`](Self::client)
    /// name it as their parent.
    pub fn with_id(mut self, id: impl Into<String>) -> TaskContext {
        let id = id.into();
        if self.root_id.as_deref() == Some(self.id.as_str()) {
            self.root_id = Some(id.clone());
        }
        self.id = id;
        self.relink();
        self
    }

    /// The same context as seen on the `retries`-th retry.
    pub fn with_retries(mut self, retries: u32) -> TaskContext {
        self.retries = retries;
        self
    }

    /// The same context, for a message taken from `queue`.
    pub fn with_queue(mut self, queue: impl Into<String>) -> TaskContext {
        self.queue = queue.into();
        self
    }

    /// The same context sending through `client` (e.g. `App::memory().client()` of an
    /// app the test also runs a worker on); tasks sent are children of this context.
    pub fn with_client(mut self, client: Client) -> TaskContext {
        self.client = client;
        self.relink();
        self
    }

    /// The same context with a soft time limit of `limit` from now, so that
    /// [`soft_time_limit`](Self::soft_time_limit) completes after it.
    pub fn with_soft_time_limit(mut self, limit: Duration) -> TaskContext {
        self.soft_deadline = Some(tokio::time::Instant::now() + limit);
        self
    }

    /// Makes the client's children point at this context's id and root.
    fn relink(&mut self) {
        let root = self.root_id.clone().unwrap_or_else(|| self.id.clone());
        self.client = self.client.child_of(&self.id, &root);
    }

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
///
/// A failure is stored with a traceback shaped like Python's: the error's `source()`
/// chain, then the file and line where the `TaskError` was made (by its constructor, or
/// by the `?` that converted the error), then the exception. A traceback given with
/// [`with_traceback`](Self::with_traceback) is stored instead. Two errors are equal
/// when they are the same failure or retry request, wherever they were made.
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
        traceback: Traceback,
    },
    Retry {
        countdown: Option<Duration>,
        /// The error that caused the retry, with its own traceback.
        cause: Option<(ExceptionInfo, Traceback)>,
        /// Where the retry was asked for: the traceback of `MaxRetriesExceededError`.
        traceback: Traceback,
    },
}

/// The `exc_module` Celerity writes for errors raised by tasks. Python's Celery cannot
/// import it, so it recreates an exception class of the same name
/// (`celery/backends/base.py::exception_to_python`).
pub const TASK_ERROR_MODULE: &str = "celerity.exceptions";

impl TaskError {
    /// A failure of type `exc_type` (the name Celery clients see) with `message`.
    #[track_caller]
    pub fn new(exc_type: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError::python(exc_type, TASK_ERROR_MODULE, message)
    }

    /// A failure with an explicit Python module for the exception class, e.g.
    /// `TaskError::python("ValueError", "builtins", "bad input")` arrives in Python as a
    /// real `ValueError`.
    #[track_caller]
    pub fn python(
        exc_type: impl Into<String>,
        module: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let exception = ExceptionInfo::new(exc_type, module, message);
        TaskError::failure(exception, Traceback::here())
    }

    /// A failure with several arguments, as Python stores `raise ValueError('account acme
    /// over quota', 5)`; a Python client raises the exception with them all, and a Rust
    /// client reads them as [`TaskFailure::args`](crate::TaskFailure::args).
    ///
    /// ```
    /// use celerity::TaskError;
    /// use celerity::serde_json::json;
    ///
    /// let error = TaskError::python_args("ValueError", "builtins", vec![json!("account acme over quota"), json!(5)]);
    /// assert_eq!(error.to_string(), "ValueError: ('account acme over quota', 5)");
    /// ```
    #[track_caller]
    pub fn python_args(
        exc_type: impl Into<String>,
        module: impl Into<String>,
        args: Vec<serde_json::Value>,
    ) -> Self {
        let exception = ExceptionInfo {
            exc_type: exc_type.into(),
            exc_message: serde_json::Value::Array(args),
            exc_module: Some(module.into()),
        };
        TaskError::failure(exception, Traceback::here())
    }

    /// A failure recording `exception` with `traceback`.
    pub(crate) fn failure(exception: ExceptionInfo, traceback: Traceback) -> Self {
        TaskError {
            kind: Box::new(TaskErrorKind::Failure {
                exception,
                traceback,
            }),
        }
    }

    /// Asks for a retry after `countdown` (`None`: the retry policy's delay).
    #[track_caller]
    pub fn retry(countdown: Option<Duration>) -> Self {
        TaskError {
            kind: Box::new(TaskErrorKind::Retry {
                countdown,
                cause: None,
                traceback: Traceback::here(),
            }),
        }
    }

    /// Adds the error that caused a retry request; stored with the RETRY state and raised
    /// as the final failure, with its traceback, when retries run out.
    pub fn because(mut self, cause: TaskError) -> Self {
        let cause = match *cause.kind {
            TaskErrorKind::Failure {
                exception,
                traceback,
            } => Some((exception, traceback)),
            TaskErrorKind::Retry { cause, .. } => cause,
        };
        if let TaskErrorKind::Retry { cause: slot, .. } = &mut *self.kind {
            *slot = cause;
        }
        self
    }

    /// Attaches a traceback text to a failure, stored as it is instead of the one
    /// Celerity writes (e.g. a Python traceback a task relays). An empty text is ignored.
    pub fn with_traceback(mut self, text: impl Into<String>) -> Self {
        if let TaskErrorKind::Failure { traceback, .. } = &mut *self.kind {
            traceback.give(text.into());
        }
        self
    }

    /// The exception of a failure (or the cause of a retry).
    pub fn exception(&self) -> Option<&ExceptionInfo> {
        match &*self.kind {
            TaskErrorKind::Failure { exception, .. } => Some(exception),
            TaskErrorKind::Retry { cause, .. } => cause.as_ref().map(|(exception, _)| exception),
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

    /// The countdown a retry request asks for (`None` for a failure, or for a retry that
    /// leaves the delay to the retry policy).
    pub fn retry_countdown(&self) -> Option<Duration> {
        match &*self.kind {
            TaskErrorKind::Retry { countdown, .. } => *countdown,
            TaskErrorKind::Failure { .. } => None,
        }
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
    /// The failure `error` is: its type name, its message, and for the traceback its
    /// `source()` chain and the place of the `?` (or `.into()`) that converted it.
    #[track_caller]
    fn from(error: E) -> Self {
        let exception =
            ExceptionInfo::new(short_type_name::<E>(), TASK_ERROR_MODULE, error.to_string());
        TaskError::failure(exception, Traceback::here().with_sources_of(&error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("mail server down")]
    struct SmtpUnavailable;

    static CHILD: crate::TaskSpec = crate::TaskSpec::new("tasks.child", &[]);

    /// `(parent_id, root_id)` of a task sent through `ctx`'s client.
    fn child_lineage(ctx: &TaskContext) -> (Option<String>, Option<String>) {
        let message = ctx
            .client()
            .message(&CHILD, vec![], Default::default(), &Default::default());
        (message.headers.parent_id, message.headers.root_id)
    }

    fn ids(parent: &str, root: &str) -> (Option<String>, Option<String>) {
        (Some(parent.to_owned()), Some(root.to_owned()))
    }

    #[test]
    fn a_test_context_sends_children_of_itself() {
        let ctx = TaskContext::for_test("tasks.parent").with_id("parent-1");
        assert_eq!(ctx.id, "parent-1");
        assert_eq!(ctx.root_id.as_deref(), Some("parent-1"));
        assert_eq!(child_lineage(&ctx), ids("parent-1", "parent-1"));
    }

    #[test]
    fn a_test_context_keeps_an_explicit_root_and_a_given_client() {
        let app = crate::App::memory();
        let mut ctx = TaskContext::for_test("tasks.parent").with_queue("email");
        ctx.root_id = Some("root-9".into());
        let ctx = ctx.with_client(app.client()).with_id("parent-2");
        assert_eq!(ctx.queue, "email");
        assert_eq!(ctx.root_id.as_deref(), Some("root-9"));
        assert_eq!(child_lineage(&ctx), ids("parent-2", "root-9"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_test_context_has_the_soft_time_limit_it_is_given() {
        let ctx = TaskContext::for_test("tasks.slow").with_soft_time_limit(Duration::from_secs(5));
        assert!(!ctx.soft_time_limit_exceeded());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(ctx.soft_time_limit_exceeded());
    }

    #[test]
    fn a_retry_request_carries_its_countdown() {
        let retry = TaskError::retry(Some(Duration::from_secs(3)));
        assert!(retry.is_retry());
        assert_eq!(retry.retry_countdown(), Some(Duration::from_secs(3)));
        assert_eq!(TaskError::new("E", "m").retry_countdown(), None);
    }

    #[test]
    fn errors_made_alike_are_equal_wherever_they_were_made() {
        let first = TaskError::new("CardDeclined", "card 4242 declined");
        let second = TaskError::new("CardDeclined", "card 4242 declined");
        assert_eq!(first, second);
        assert_ne!(first, second.clone().with_traceback("given"));
        let retry = || TaskError::retry(None).because(TaskError::new("E", "m"));
        assert_eq!(retry(), retry());
    }

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
