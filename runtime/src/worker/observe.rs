//! What happens to each task, as the rest of the worker learns it: one [`Lifecycle`]
//! step per change, in the order Celery's task events report them (`task-received`,
//! `task-started`, `task-succeeded`, …). The worker's own record of its tasks (for
//! `inspect active`, `reserved`, `scheduled`, `stats`) is kept from these steps.

use std::time::Duration;

use serde_json::Value;

use super::shared::Shared;
use crate::protocol::{ExceptionInfo, TaskMessage};

/// One step in a task's life in this worker.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the outcome fields are for task events and metrics"
)]
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
        name: &'a str,
        runtime: Duration,
        result: &'a Value,
    },
    /// Finished with a final error.
    Failed {
        id: &'a str,
        name: &'a str,
        runtime: Duration,
        exception: &'a ExceptionInfo,
        traceback: Option<&'a str>,
    },
    /// Failed and sent again for a later attempt.
    Retried {
        id: &'a str,
        name: &'a str,
        exception: &'a ExceptionInfo,
        traceback: Option<&'a str>,
    },
    /// Discarded before it ran, or stopped while running (`terminated`).
    Revoked {
        id: &'a str,
        name: &'a str,
        reason: &'a str,
    },
}

impl Shared {
    /// Records a step of a task's life everywhere the worker keeps track of it.
    pub(crate) fn observe(&self, step: Lifecycle<'_>) {
        let moved = self.state.record(&step);
        if let Some(metrics) = &self.metrics {
            metrics.record(&step, moved.as_ref());
        }
    }
}
