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

/// Waits until `read` finds a ready result, checking again whenever `stored` is notified
/// (the in-process backends notify it on every store). Registered before each check, so a
/// store between the check and the wait is not missed.
pub(crate) async fn wait_for_ready(
    stored: &tokio::sync::Notify,
    read: impl Fn() -> Option<ResultMeta>,
) -> ResultMeta {
    loop {
        let notified = stored.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(meta) = read().filter(|m| m.status.is_ready()) {
            return meta;
        }
        notified.await;
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
