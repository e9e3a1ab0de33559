//! Result backends: where task states and results are stored.

use futures::future::BoxFuture;

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub use crate::amqp::RpcBackend;
pub use crate::memory::MemoryBackend;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::redis::{RedisBackend, TASK_META_PREFIX};

use crate::error::Result;
use crate::protocol::{Properties, ResultMeta};

/// Celery's `result_expires` default: results (and rpc reply queues) last a day.
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) const DEFAULT_RESULT_EXPIRES: std::time::Duration =
    std::time::Duration::from_secs(86_400);

/// The results a process holds itself (the memory backend's store, the replies the rpc
/// backend received): the latest state of each task, at most `CAPACITY` tasks, the
/// oldest forgotten first. A SUCCESS is never overwritten, so a late duplicate cannot undo
/// it (as Celery's `Backend.store_result`).
#[derive(Default)]
pub(crate) struct ResultTable<const CAPACITY: usize> {
    states: std::sync::Mutex<crate::bounded::Bounded<ResultMeta, CAPACITY>>,
    stored: tokio::sync::Notify,
}

impl<const CAPACITY: usize> ResultTable<CAPACITY> {
    fn lock(&self) -> std::sync::MutexGuard<'_, crate::bounded::Bounded<ResultMeta, CAPACITY>> {
        // Each operation is one insert, read or remove: a poisoned table is consistent.
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `meta` as the state of `task_id` unless a SUCCESS is already recorded, and
    /// wakes the waiters.
    pub(crate) fn record(&self, task_id: String, meta: ResultMeta) {
        {
            let mut states = self.lock();
            match states.get_mut(&task_id) {
                Some(current) if current.status == crate::TaskState::Success => {}
                Some(current) => *current = meta,
                None => states.insert_new(task_id, meta),
            }
        }
        self.stored.notify_waiters();
    }

    /// The latest state of `task_id`, if any.
    pub(crate) fn get(&self, task_id: &str) -> Option<ResultMeta> {
        self.lock().get(task_id).cloned()
    }

    /// Forgets `task_id`.
    pub(crate) fn remove(&self, task_id: &str) {
        self.lock().remove(task_id);
    }

    /// Waits until `task_id` has a ready result. The waiter registers before each check,
    /// so a result recorded between the check and the wait is not missed.
    pub(crate) async fn wait_ready(&self, task_id: &str) -> ResultMeta {
        loop {
            let notified = self.stored.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(meta) = self.get(task_id).filter(|m| m.status.is_ready()) {
                return meta;
            }
            notified.await;
        }
    }
}

/// A result as Celery's JSON, the same bytes for every backend that stores bytes.
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) fn encode_result(meta: &ResultMeta) -> Result<Vec<u8>> {
    crate::protocol::to_python_json(meta).map_err(|e| {
        crate::error::Error::new(crate::error::ErrorKind::Encode, "could not encode a result")
            .with_source(e)
    })
}

/// Stores and serves task results.
pub trait ResultBackend: Send + Sync + 'static {
    /// Stores `meta` under its task id. A SUCCESS already stored is never overwritten
    /// (Celery's rule: a late duplicate cannot undo a success).
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, Result<()>>;

    /// Stores the result of a task that arrived in a message with the `request`
    /// properties. The rpc backend sends it to the message's `reply_to` under its
    /// `correlation_id` (`celery/backends/rpc.py::RPCBackend.destination_for`); the others
    /// store it as [`store`](Self::store) does.
    fn store_for<'a>(
        &'a self,
        meta: &'a ResultMeta,
        request: &'a Properties,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = request;
        self.store(meta)
    }

    /// The queue this backend receives results on, which clients send as every task
    /// message's `reply_to` (the rpc backend's). `None` for backends that store results
    /// elsewhere: clients then send their own id, as Celery always sets `reply_to`.
    fn reply_to(&self) -> Option<String> {
        None
    }

    /// The stored result of `task_id`, if any.
    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>>>;

    /// Waits until `task_id` is in a ready state and returns it. The caller bounds the wait.
    fn wait_ready<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultMeta>>;

    /// Deletes the stored result of `task_id`.
    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>>;

    /// A short description for logs and banners, without credentials.
    fn describe(&self) -> String;
}

#[cfg(test)]
mod result_table_tests {
    use serde_json::json;

    use super::ResultTable;
    use crate::TaskState;
    use crate::protocol::ResultMeta;

    fn meta(id: &str, state: TaskState) -> ResultMeta {
        ResultMeta::new(id, state, json!(null))
    }

    #[test]
    fn a_success_is_never_replaced_and_old_states_are_forgotten_first() {
        let table = ResultTable::<3>::default();
        table.record("a".into(), meta("a", TaskState::Started));
        table.record("a".into(), meta("a", TaskState::Success));
        table.record("a".into(), meta("a", TaskState::Failure));
        assert_eq!(table.get("a").unwrap().status, TaskState::Success);
        for id in ["b", "c", "d"] {
            table.record(id.into(), meta(id, TaskState::Success));
        }
        assert!(table.get("a").is_none(), "the oldest went first");
        assert!(table.get("d").is_some());
        table.remove("d");
        assert!(table.get("d").is_none());
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_the_ready_state_only() {
        let table = std::sync::Arc::new(ResultTable::<8>::default());
        let waiter = tokio::spawn({
            let table = table.clone();
            async move { table.wait_ready("a").await }
        });
        tokio::task::yield_now().await;
        table.record("a".into(), meta("a", TaskState::Started));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        table.record("a".into(), meta("a", TaskState::Success));
        assert_eq!(waiter.await.unwrap().status, TaskState::Success);
    }
}
