//! The state every part of a running worker shares: its client and task table, its
//! concurrency and prefetch limits, the tasks it holds for their ETA and runs, and what
//! remote control told it (revoked ids, task limits, queues, a shutdown).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::dispatch::TaskTable;
use super::held::HeldTasks;
use super::limits::TaskLimits;
use super::pool::Pool;
use super::queues::ConsumedQueues;
use super::terminate::RunningTasks;
use crate::client::Client;
use crate::container::Container;
use crate::events::EventDispatcher;

pub(crate) struct Shared {
    pub client: Client,
    pub table: TaskTable,
    pub container: Arc<Container>,
    /// The concurrency limit and the prefetch window; remote control resizes them.
    pub pool: Pool,
    /// The messages held until their ETA. They do not count against the window; the
    /// broker's prefetch is raised by as many (Celery's `qos.increment_eventually()`).
    pub held: HeldTasks,
    /// Turns true when the worker stops: tasks not started by then go back to the broker.
    pub stopping: watch::Receiver<bool>,
    /// Task ids revoked by broadcast.
    pub revoked: std::sync::Mutex<RevokedSet>,
    /// Each task's rate and time limits; remote control changes them.
    pub limits: TaskLimits,
    /// The running tasks' stop handles, for a revoke that terminates.
    pub running: RunningTasks,
    /// The queues consumed; remote control changes them.
    pub queues: ConsumedQueues,
    /// The worker's node name, recorded in STARTED results as Celery does.
    pub hostname: String,
    /// Whether results record the task's name, arguments, worker, retries and queue
    /// (Celery's `result_extended`).
    pub result_extended: bool,
    /// Messages larger than this many bytes are refused before they are decoded.
    pub max_message_size: usize,
    /// The Prometheus metrics, when turned on.
    pub metrics: Option<super::metrics::Metrics>,
    /// The tasks held and run, for inspection.
    pub state: super::state::WorkerState,
    /// When the worker started (`inspect stats` reports its uptime).
    pub started: Instant,
    /// Turns true when remote control asks the worker to shut down.
    pub shutdown_requested: watch::Sender<bool>,
    /// The worker's monitoring events; remote control turns its task events on and off.
    pub events: EventDispatcher,
}

/// Revoked task ids, bounded like Celery's `LimitedSet` (`worker_state.revoked`, 50,000
/// entries): the oldest are forgotten first.
pub(crate) type RevokedSet = crate::bounded::Bounded<(), 50_000>;

impl Shared {
    /// Marks `ids` as revoked: each is discarded when received, or when its ETA comes.
    pub(crate) fn revoke(&self, ids: impl IntoIterator<Item = String>) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            revoked.insert_new(id, ());
        }
    }

    /// The revoked ids, oldest first.
    pub(crate) fn revoked_ids(&self) -> Vec<String> {
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        revoked.keys().cloned().collect()
    }

    pub(super) fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }
}
