//! What happens to each task, as the rest of the worker learns it: one [`Lifecycle`]
//! step per change, in the order Celery's task events report them (`task-received`,
//! `task-started`, `task-succeeded`, …). The worker's own record of its tasks (for
//! `inspect active`, `reserved`, `scheduled`, `stats`) is kept from these steps, and
//! while task events are on each step is also sent as one.

use std::time::Duration;

use serde_json::Value;

use super::shared::Shared;
use crate::events::TaskDetail;
use crate::protocol::{ExceptionInfo, TaskMessage, args_repr, kwargs_repr, value_repr};
use crate::traceback::Traceback;

/// One step in a task's life in this worker.
#[derive(Debug)]
pub(crate) enum Lifecycle<'a> {
    /// Taken from `queue` and decoded; it waits for its ETA when it has one in the
    /// future, else for a slot.
    Received {
        message: &'a TaskMessage,
        queue: &'a str,
        eta_held: bool,
    },
    /// A held task's ETA came: it now waits for a slot.
    Due { id: &'a str },
    /// Running.
    Started { id: &'a str, name: &'a str },
    /// Finished with a value.
    Succeeded {
        id: &'a str,
        runtime: Duration,
        result: &'a Value,
    },
    /// Finished with a final error.
    Failed {
        id: &'a str,
        exception: &'a ExceptionInfo,
        traceback: &'a str,
    },
    /// Failed and sent again for a later attempt, because of `exception`; `traceback`
    /// shows where (the cause's, else where the retry was asked for).
    Retried {
        id: &'a str,
        name: &'a str,
        exception: &'a ExceptionInfo,
        traceback: &'a Traceback,
    },
    /// Discarded before it ran, or stopped while running (`terminated`).
    Revoked { id: &'a str, reason: &'a str },
    /// Its message was refused after it ran, back to its queue when `requeue`.
    Rejected { id: &'a str, requeue: bool },
    /// Named a task this worker does not know: recorded as failed, never held.
    Unregistered { id: &'a str, name: &'a str },
}

/// The signal number a revoke that terminates reports (`SIGTERM`, Celery's default):
/// whatever the signal asked for, a Celerity task is stopped by dropping its future.
const TERMINATED_SIGNUM: u32 = 15;

impl Shared {
    /// Records a step of a task's life everywhere the worker keeps track of it.
    pub(crate) fn observe(&self, step: Lifecycle<'_>) {
        let moved = self.state.record(&step);
        if let Some(metrics) = &self.metrics {
            metrics.record(&step, moved.as_ref());
        }
        if self.events.task_events() {
            let (id, detail) = task_event(&step);
            if let Some(detail) = detail {
                self.events.send_task(id.to_owned(), detail);
            }
        }
    }

    /// Sends the worker event `kind` (online, heartbeat, offline) with the tasks running
    /// and processed now.
    pub(crate) fn announce(&self, kind: &'static str) {
        let (active, processed) = self.state.counts();
        self.events.send_worker(kind, active, processed);
    }
}

/// The task `step` is about, and the event Celery sends for it, if any.
fn task_event<'a>(step: &Lifecycle<'a>) -> (&'a str, Option<TaskDetail>) {
    match *step {
        Lifecycle::Received { message, .. } => {
            let headers = &message.headers;
            let args = match &headers.argsrepr {
                Some(repr) => repr.clone(),
                None => args_repr(&message.args),
            };
            let kwargs = match &headers.kwargsrepr {
                Some(repr) => repr.clone(),
                None => kwargs_repr(&message.kwargs),
            };
            let received = TaskDetail::Received {
                name: headers.task.clone(),
                args,
                kwargs,
                root_id: headers.root_id.clone(),
                parent_id: headers.parent_id.clone(),
                retries: headers.retries,
                eta: headers.eta.clone(),
                expires: headers.expires.clone(),
            };
            (message.id(), Some(received))
        }
        Lifecycle::Due { id } => (id, None),
        Lifecycle::Started { id, .. } => (id, Some(TaskDetail::Started)),
        Lifecycle::Succeeded {
            id,
            runtime,
            result,
        } => {
            let succeeded = TaskDetail::Succeeded {
                result: value_repr(result),
                runtime: runtime.as_secs_f64(),
            };
            (id, Some(succeeded))
        }
        Lifecycle::Failed {
            id,
            exception,
            traceback,
        } => {
            let failed = TaskDetail::Failed {
                exception: exception.python_repr(),
                traceback: Some(traceback.to_owned()),
            };
            (id, Some(failed))
        }
        Lifecycle::Retried {
            id,
            name,
            exception,
            traceback,
        } => {
            let retried = TaskDetail::Retried {
                exception: exception.python_repr(),
                traceback: traceback.render(name, exception),
            };
            (id, Some(retried))
        }
        Lifecycle::Revoked { id, reason } => {
            let terminated = reason == "terminated";
            let revoked = TaskDetail::Revoked {
                terminated,
                signum: terminated.then_some(TERMINATED_SIGNUM),
                expired: reason == "expired",
            };
            (id, Some(revoked))
        }
        Lifecycle::Rejected { id, requeue } => (id, Some(TaskDetail::Rejected { requeue })),
        Lifecycle::Unregistered { id, name } => {
            // `Consumer.on_unknown_task`: the exception's repr, no traceback.
            let failed = TaskDetail::Failed {
                exception: format!("NotRegistered({})", value_repr(&Value::from(name))),
                traceback: None,
            };
            (id, Some(failed))
        }
    }
}
