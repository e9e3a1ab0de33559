//! Stopping a running task on request: Celery's `revoke(task_id, terminate=True)`.
//!
//! Celery sends a signal to the pool process running the task
//! (`celery/worker/request.py::Request.terminate`). A Celerity task is a future in the
//! worker's own process, so it is stopped by no longer polling it: each running task has a
//! [`Stop`] its handler races the task's future against. On a stop the future is dropped
//! at the await it is waiting at (the values it holds run their `Drop`), the component's
//! cleanup runs, and the worker records REVOKED with `TaskRevokedError('terminated')`, as
//! Celery does (`Request._announce_revoked('terminated', …)`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// What a running task's handler waits on besides the task: a stop request.
pub(crate) struct Stop(Arc<Notify>);

impl Stop {
    /// Resolves once the task is to stop: at once if it was asked before this was polled.
    pub(crate) async fn requested(&self) {
        self.0.notified().await;
    }
}

/// The stop handles of the running copies of each task, by task id: usually one; more
/// when a message is delivered twice and both copies run. Each is known by a number.
type Copies = HashMap<String, Vec<(u64, Arc<Notify>)>>;

/// The stop handles of the running tasks, by task id.
#[derive(Default)]
pub(crate) struct RunningTasks {
    tasks: Mutex<Copies>,
    next: AtomicU64,
}

/// A task's place among the running ones; it leaves when this is dropped.
pub(crate) struct Registration<'a> {
    running: &'a RunningTasks,
    id: String,
    token: u64,
}

impl RunningTasks {
    fn lock(&self) -> MutexGuard<'_, Copies> {
        // Every update is one insert or removal: a poisoned lock is consistent.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records task `id` as running, with the [`Stop`] its handler waits on.
    pub(crate) fn register(&self, id: &str) -> (Registration<'_>, Stop) {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.lock()
            .entry(id.to_owned())
            .or_default()
            .push((token, notify.clone()));
        let registration = Registration {
            running: self,
            id: id.to_owned(),
            token,
        };
        (registration, Stop(notify))
    }

    /// Asks every running copy of task `id` to stop; whether one was running.
    pub(crate) fn terminate(&self, id: &str) -> bool {
        let tasks = self.lock();
        let Some(copies) = tasks.get(id) else {
            return false;
        };
        for (_, notify) in copies {
            // A permit is kept for a handler not waiting yet, so no request is lost.
            notify.notify_one();
        }
        !copies.is_empty()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut tasks = self.running.lock();
        if let Some(copies) = tasks.get_mut(&self.id) {
            copies.retain(|(token, _)| *token != self.token);
            if copies.is_empty() {
                tasks.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_reaches_the_running_task_even_before_it_waits() {
        let running = RunningTasks::default();
        assert!(!running.terminate("a"), "nothing runs yet");
        let (registration, stop) = running.register("a");
        assert!(running.terminate("a"));
        tokio::time::timeout(std::time::Duration::from_secs(1), stop.requested())
            .await
            .expect("the request was kept until the task waited for it");
        drop(registration);
        assert!(!running.terminate("a"), "a finished task is forgotten");
    }

    #[tokio::test]
    async fn every_copy_of_a_task_is_stopped_and_each_leaves_on_its_own() {
        let running = RunningTasks::default();
        let (first, first_stop) = running.register("a");
        let (second, second_stop) = running.register("a");
        drop(first);
        assert!(running.terminate("a"), "the second copy still runs");
        second_stop.requested().await;
        drop(second);
        drop(first_stop);
        assert!(running.lock().is_empty());
    }
}
