//! The worker's record of the tasks it holds (Celery's `celery/worker/state.py`): which
//! are waiting for their ETA (`scheduled`), waiting for a slot (`reserved`) or running
//! (`active`), and how many of each task name it has started (`total`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::observe::Lifecycle;

/// Where a held task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for its ETA.
    Scheduled,
    /// Waiting for a slot (or its rate limit).
    Reserved,
    /// Running.
    Active,
}

/// One task the worker holds, as `Request.info()` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub id: String,
    pub name: String,
    pub args: Value,
    pub kwargs: Value,
    pub queue: Arc<str>,
    pub priority: u8,
    pub eta: Option<String>,
    /// Seconds since the epoch when it started running.
    pub time_start: Option<f64>,
    pub phase: Phase,
    /// Since when it has waited for a slot (received, or its ETA came), then since when it
    /// has run.
    pub since: Instant,
}

/// Where a task the worker held came from and how long its last phase lasted, as one
/// step of its life moved it on: what the worker's metrics record.
#[derive(Debug)]
pub(crate) struct Moved {
    pub queue: Arc<str>,
    /// The task's name, once it leaves the worker's hands.
    pub name: Option<String>,
    /// How long it waited for a slot (for `Started`) or ran (for the last step).
    pub waited: std::time::Duration,
}

#[derive(Default)]
struct Tasks {
    held: HashMap<String, Held>,
    /// Tasks started, per name (`state.total_count`).
    total: BTreeMap<String, u64>,
}

impl Held {
    /// The task as `Request.info()` describes it in `inspect active` and `reserved`:
    /// `args`/`kwargs` as values, or as Python's repr with `safe`.
    pub(crate) fn info(&self, hostname: &str, safe: bool) -> Value {
        let (args, kwargs) = if safe {
            let args = self.args.as_array().map(Vec::as_slice).unwrap_or_default();
            let kwargs = self.kwargs.as_object().cloned().unwrap_or_default();
            (
                Value::from(crate::protocol::args_repr(args)),
                Value::from(crate::protocol::kwargs_repr(&kwargs)),
            )
        } else {
            (self.args.clone(), self.kwargs.clone())
        };
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "args": args,
            "kwargs": kwargs,
            "type": self.name,
            "hostname": hostname,
            "time_start": self.time_start,
            "acknowledged": self.phase == Phase::Active,
            "delivery_info": {
                "exchange": "",
                "routing_key": &*self.queue,
                "priority": self.priority,
                "redelivered": false,
            },
            // The process running it, once it runs (`Request.worker_pid`).
            "worker_pid": self.time_start.map(|_| std::process::id()),
        })
    }
}

/// What the worker holds and has run; shared by everything that reports on it.
#[derive(Default)]
pub(crate) struct WorkerState {
    tasks: Mutex<Tasks>,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl WorkerState {
    fn lock(&self) -> MutexGuard<'_, Tasks> {
        // Every update is one insert or removal: a poisoned lock is consistent.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one step of a task's life; for a task it holds, says where it came from
    /// and how long its phase before this step lasted.
    pub(crate) fn record(&self, step: &Lifecycle<'_>) -> Option<Moved> {
        let mut tasks = self.lock();
        match step {
            Lifecycle::Received {
                message,
                queue,
                eta_held,
            } => {
                let headers = &message.headers;
                let held = Held {
                    id: headers.id.clone(),
                    name: headers.task.clone(),
                    args: Value::Array(message.args.clone()),
                    kwargs: Value::Object(message.kwargs.clone()),
                    queue: Arc::from(*queue),
                    priority: message.properties.priority.unwrap_or(0),
                    eta: headers.eta.clone(),
                    time_start: None,
                    since: Instant::now(),
                    phase: if *eta_held {
                        Phase::Scheduled
                    } else {
                        Phase::Reserved
                    },
                };
                let moved = Moved {
                    queue: held.queue.clone(),
                    name: None,
                    waited: std::time::Duration::ZERO,
                };
                tasks.held.insert(held.id.clone(), held);
                Some(moved)
            }
            Lifecycle::Due { id } => {
                let held = tasks.held.get_mut(*id)?;
                held.phase = Phase::Reserved;
                held.since = Instant::now();
                None
            }
            Lifecycle::Started { id, name } => {
                *tasks.total.entry((*name).to_owned()).or_default() += 1;
                let held = tasks.held.get_mut(*id)?;
                held.phase = Phase::Active;
                held.time_start = Some(now());
                let waited = held.since.elapsed();
                held.since = Instant::now();
                Some(Moved {
                    queue: held.queue.clone(),
                    name: None,
                    waited,
                })
            }
            Lifecycle::Succeeded { id, .. }
            | Lifecycle::Failed { id, .. }
            | Lifecycle::Retried { id, .. }
            | Lifecycle::Revoked { id, .. }
            | Lifecycle::Rejected { id, .. } => {
                let held = tasks.held.remove(*id)?;
                Some(Moved {
                    waited: held.since.elapsed(),
                    queue: held.queue,
                    name: Some(held.name),
                })
            }
            Lifecycle::Unregistered { .. } => None,
        }
    }

    /// How many tasks are in each phase: (scheduled, reserved, active).
    pub(crate) fn phases(&self) -> (usize, usize, usize) {
        let tasks = self.lock();
        let mut counts = (0, 0, 0);
        for held in tasks.held.values() {
            match held.phase {
                Phase::Scheduled => counts.0 += 1,
                Phase::Reserved => counts.1 += 1,
                Phase::Active => counts.2 += 1,
            }
        }
        counts
    }

    /// The tasks in `phase`, oldest start first for active ones.
    pub(crate) fn in_phase(&self, phase: Phase) -> Vec<Held> {
        let tasks = self.lock();
        let mut held: Vec<Held> = tasks
            .held
            .values()
            .filter(|h| h.phase == phase)
            .cloned()
            .collect();
        held.sort_by(|a, b| {
            a.time_start
                .partial_cmp(&b.time_start)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        held
    }

    /// One held task by id.
    pub(crate) fn get(&self, id: &str) -> Option<Held> {
        self.lock().held.get(id).cloned()
    }

    /// How many tasks are running, and how many were started so far, in all: what
    /// heartbeats report (`active`, `processed`).
    pub(crate) fn counts(&self) -> (usize, u64) {
        let tasks = self.lock();
        let active = tasks
            .held
            .values()
            .filter(|h| h.phase == Phase::Active)
            .count();
        (active, tasks.total.values().sum())
    }

    /// Tasks started so far, per name.
    pub(crate) fn totals(&self) -> BTreeMap<String, u64> {
        self.lock().total.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskMessage;

    fn message(id: &str) -> TaskMessage {
        let client = crate::App::memory().client();
        static SPEC: crate::TaskSpec = crate::TaskSpec::new("t.add", &[]);
        client.message(
            &SPEC,
            vec![1.into(), 2.into()],
            Default::default(),
            &crate::SendOptions {
                task_id: Some(id.into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_task_moves_from_scheduled_to_reserved_to_active_and_is_counted_once() {
        let state = WorkerState::default();
        let sent = message("a");
        state.record(&Lifecycle::Received {
            message: &sent,
            queue: "celery",
            eta_held: true,
        });
        assert_eq!(state.in_phase(Phase::Scheduled).len(), 1);
        state.record(&Lifecycle::Due { id: "a" });
        assert_eq!(
            state.in_phase(Phase::Reserved)[0].args,
            serde_json::json!([1, 2])
        );
        state.record(&Lifecycle::Started {
            id: "a",
            name: "t.add",
        });
        assert_eq!(state.counts(), (1, 1));
        assert!(state.get("a").unwrap().time_start.is_some());
        state.record(&Lifecycle::Succeeded {
            id: "a",
            runtime: std::time::Duration::ZERO,
            result: &Value::Null,
        });
        assert!(state.get("a").is_none());
        assert_eq!(state.totals().get("t.add"), Some(&1));
        assert_eq!(state.counts(), (0, 1));
    }
}
