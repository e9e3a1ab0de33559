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
use crate::protocol::{Properties, ResultMeta, TaskState};

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

    /// Records that the chord `group_id` has `size` header tasks, before they are sent
    /// (Celery's `set_chord_size`). A backend that cannot join chords refuses, so the
    /// chord fails at send time as Celery's does on `rpc://`.
    fn set_chord_size<'a>(&'a self, group_id: &'a str, size: usize) -> BoxFuture<'a, Result<()>> {
        let _ = (group_id, size);
        Box::pin(async move { Err(chords_unsupported(&self.describe())) })
    }

    /// Records one header task's final state (SUCCESS, FAILURE or REVOKED) in its chord
    /// (Celery's `on_chord_part_return`). A part counts once however often its task runs.
    /// The call that records the last part gets [`ChordJoin::Complete`], with the claim
    /// to send the body: exactly one caller across every worker gets it.
    fn chord_part_return<'a>(
        &'a self,
        part: &'a ChordPart<'a>,
    ) -> BoxFuture<'a, Result<ChordJoin>> {
        let _ = part;
        Box::pin(async move { Err(chords_unsupported(&self.describe())) })
    }

    /// After the body of a complete chord was sent under `claim`: removes the chord's
    /// keys and marks it done, so a late copy of a header task cannot send the body again.
    /// With `failed`, only the size is dropped, as Celery leaves a failed chord's parts to
    /// expire.
    fn chord_finish<'a>(
        &'a self,
        group_id: &'a str,
        claim: &'a str,
        failed: bool,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (group_id, claim, failed);
        Box::pin(async move { Err(chords_unsupported(&self.describe())) })
    }

    /// Saves group `group_id` of `task_ids`, in Celery's `celery-taskset-meta-<id>` form,
    /// so [`restore_group`](Self::restore_group) (or Python's `GroupResult.restore`) reads
    /// it back.
    fn save_group<'a>(
        &'a self,
        group_id: &'a str,
        task_ids: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (group_id, task_ids);
        Box::pin(async move { Err(groups_unsupported(&self.describe())) })
    }

    /// The task ids of a saved group, in order; `None` when no group of that id is saved.
    fn restore_group<'a>(
        &'a self,
        group_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>>> {
        let _ = group_id;
        Box::pin(async move { Err(groups_unsupported(&self.describe())) })
    }

    /// Deletes a saved group (not its tasks' results).
    fn delete_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<()>> {
        let _ = group_id;
        Box::pin(async move { Err(groups_unsupported(&self.describe())) })
    }
}

/// One header task of a chord, finished.
#[derive(Debug, Clone)]
pub struct ChordPart<'a> {
    /// The chord's group id (the task's `group` header).
    pub group_id: &'a str,
    /// The header task's id.
    pub task_id: &'a str,
    /// Its position in the header (`group_index`); results reach the body in this order.
    pub group_index: Option<u64>,
    /// SUCCESS, FAILURE or REVOKED.
    pub state: TaskState,
    /// The return value, or the exception as Celery stores it.
    pub result: &'a serde_json::Value,
}

/// What recording a chord part found.
#[derive(Debug, Clone, PartialEq)]
pub enum ChordJoin {
    /// Parts are still missing, or the chord already completed (a late copy of a part).
    Waiting,
    /// This call recorded the last part and holds the claim to send the body.
    Complete {
        /// The claim, passed back to [`ResultBackend::chord_finish`].
        claim: String,
        /// Every part, in header order.
        parts: Vec<ChordPartResult>,
    },
}

/// One recorded chord part.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordPartResult {
    /// The header task's id.
    pub task_id: String,
    /// Its final state.
    pub state: TaskState,
    /// Its return value, or its exception as Celery stores it.
    pub result: serde_json::Value,
}

/// Celery's `celery-taskset-meta-<id>` value for a group of `task_ids`:
/// `{"result": [[gid, null], [[[tid, null], null], …]]}` (`GroupResult.as_tuple`).
#[cfg(feature = "redis")]
pub(crate) fn group_meta(group_id: &str, task_ids: &[String]) -> serde_json::Value {
    let members: Vec<serde_json::Value> = task_ids
        .iter()
        .map(|id| serde_json::json!([[id, null], null]))
        .collect();
    serde_json::json!({"result": [[group_id, null], members]})
}

/// The task ids of a saved group's value; `None` when it is not a flat group of tasks.
#[cfg(feature = "redis")]
pub(crate) fn group_members(meta: &serde_json::Value) -> Option<Vec<String>> {
    let members = meta.get("result")?.get(1)?.as_array()?;
    members
        .iter()
        .map(|member| {
            // `[[tid, parent], null]` is a task; a nested group has its members second.
            if !member.get(1).is_none_or(serde_json::Value::is_null) {
                return None;
            }
            member.get(0)?.get(0)?.as_str().map(str::to_owned)
        })
        .collect()
}

fn chords_unsupported(backend: &str) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::ErrorKind::Unsupported,
        format!(
            "the result backend {backend} cannot join chords; use a Redis result backend \
             (Celery's rpc backend cannot either)"
        ),
    )
}

fn groups_unsupported(backend: &str) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::ErrorKind::Unsupported,
        format!("the result backend {backend} cannot save groups; use a Redis result backend"),
    )
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
