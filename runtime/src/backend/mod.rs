//! Result backends: where task states and results are stored.

mod memory;
pub(crate) mod redis;

use futures::future::BoxFuture;

pub use memory::MemoryBackend;
pub use redis::{RedisBackend, TASK_META_PREFIX};

use crate::error::Result;
use crate::protocol::ResultMeta;

/// Stores and serves task results.
pub trait ResultBackend: Send + Sync + 'static {
    /// Stores `meta` under its task id. A SUCCESS already stored is never overwritten
    /// (Celery's rule: a late duplicate cannot undo a success).
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, Result<()>>;

    /// The stored result of `task_id`, if any.
    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>>>;

    /// Waits until `task_id` is in a ready state and returns it. The caller bounds the wait.
    fn wait_ready<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultMeta>>;

    /// Deletes the stored result of `task_id`.
    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>>;

    /// A short description for logs and banners, without credentials.
    fn describe(&self) -> String;
}
