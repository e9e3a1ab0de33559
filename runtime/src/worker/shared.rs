//! The state every part of a running worker shares: its client and task table, its
//! concurrency and prefetch limits, the tasks it holds for their ETA, and what it was
//! told by remote control (revoked ids) or rate limits.

use std::sync::Arc;

use tokio::sync::watch;

use super::dispatch::TaskTable;
use super::held::HeldTasks;
use super::pool::Pool;
use crate::client::Client;
use crate::container::Container;

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
    /// Next start time allowed per rate-limited task name.
    pub rate_limits:
        std::sync::Mutex<std::collections::HashMap<&'static str, tokio::time::Instant>>,
    /// The worker's node name, recorded in STARTED results as Celery does.
    pub hostname: String,
    /// Whether results record the task's name, arguments, worker, retries and queue
    /// (Celery's `result_extended`).
    pub result_extended: bool,
    /// Messages larger than this many bytes are refused before they are decoded.
    pub max_message_size: usize,
    /// The tasks held and run, for inspection.
    pub state: super::state::WorkerState,
}

/// Revoked task ids, bounded like Celery's `LimitedSet` (`worker_state.revoked`, 50,000
/// entries): the oldest are forgotten first.
pub(crate) type RevokedSet = crate::bounded::Bounded<(), 50_000>;

impl Shared {
    /// Waits for the task's turn under its rate limit: starts are spaced `period / count`
    /// apart, per worker, as Celery's `rate_limit` is (`10/m`: one start every 6 s).
    pub(super) async fn rate_limit(&self, spec: &'static crate::spec::TaskSpec) {
        let Some(limit) = spec.rate_limit else { return };
        let interval = limit.period / limit.count.max(1);
        let turn = {
            let mut next = self.rate_limits.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let slot = next
                .get(spec.name)
                .copied()
                .filter(|t| *t > now)
                .unwrap_or(now);
            next.insert(spec.name, slot + interval);
            slot
        };
        tokio::time::sleep_until(turn).await;
    }

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
