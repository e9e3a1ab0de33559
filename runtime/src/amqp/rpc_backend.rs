//! Celery's `rpc://` result backend (`celery/backends/rpc.py`): results travel as messages
//! back to the client that sent the task.
//!
//! - The client owns one reply queue, named by a UUID, and sends it as every task message's
//!   `reply_to`. The queue is declared as Celery 5.7 declares it (durable, auto-deleted when
//!   its consumer goes, `x-expires` = `result_expires`) before anything is published, so a
//!   worker's reply always has somewhere to go.
//! - A worker publishes each state to the default exchange with routing key = the message's
//!   `reply_to` and `correlation_id` = the task id, transient, with the result meta JSON as
//!   body. Python workers do exactly this for Rust clients, and Rust workers for Python.
//! - The client consumes its queue without acknowledgements and keeps the latest state of
//!   each task in memory: nothing is stored on the server, so only the client that sent a
//!   task can read its result, and only while it runs.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

use super::subscription::{Setup, Subscription};
use super::{AmqpBroker, AmqpQueue, Declare, Route};
use crate::backend::{DEFAULT_RESULT_EXPIRES, ResultBackend, ResultTable, encode_result};
use crate::error::Result;
use crate::protocol::{Properties, ResultMeta};

/// How many task states are kept; the oldest are forgotten first.
const CAPACITY: usize = 100_000;

/// The `rpc://` result backend, on an [`AmqpBroker`]'s connections. Cheap to clone.
#[derive(Clone)]
pub struct RpcBackend {
    inner: Arc<Inner>,
}

struct Inner {
    broker: AmqpBroker,
    queue: AmqpQueue,
    /// The latest state received for each task, the oldest forgotten first.
    states: ResultTable<CAPACITY>,
    consumer: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.get() {
            consumer.abort();
        }
    }
}

impl std::fmt::Debug for RpcBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcBackend")
            .field("reply_to", &self.inner.queue.name())
            .finish()
    }
}

impl RpcBackend {
    /// Declares this client's reply queue on `broker` and starts receiving results.
    pub async fn connect(broker: &AmqpBroker) -> Result<Self> {
        Self::connect_with(broker, DEFAULT_RESULT_EXPIRES).await
    }

    /// As [`connect`](Self::connect), with the reply queue deleted after `result_expires`
    /// without use (Celery's `result_expires`).
    pub async fn connect_with(broker: &AmqpBroker, result_expires: Duration) -> Result<Self> {
        let name = uuid::Uuid::new_v4().to_string();
        let expires_ms = i64::try_from(result_expires.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        // `RPCBackend.binding`: the default exchange, durable, auto-delete, x-expires.
        let queue = AmqpQueue::new(&name)
            .exchange("", super::ExchangeType::Direct)
            .auto_delete(true)
            .argument("x-expires", expires_ms);
        broker.declare_before_publishing(queue.clone()).await?;
        let backend = RpcBackend {
            inner: Arc::new(Inner {
                broker: broker.clone(),
                queue,
                states: ResultTable::default(),
                consumer: std::sync::OnceLock::new(),
            }),
        };
        let replies = ReplyQueue(backend.inner.queue.clone());
        let subscription = Subscription::open(broker.clone(), replies).await?;
        let weak = Arc::downgrade(&backend.inner);
        let consumer = tokio::spawn(receive(weak, subscription));
        let _ = backend.inner.consumer.set(consumer);
        Ok(backend)
    }

    /// Sends `meta` to `reply_to` as a Celery worker does (`RPCBackend.store_result`).
    async fn send(&self, meta: &ResultMeta, reply_to: &str, correlation_id: &str) -> Result<()> {
        let body = encode_result(meta)?;
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_content_encoding(ShortString::from("utf-8"))
            .with_delivery_mode(1)
            .with_priority(0)
            .with_correlation_id(ShortString::from(correlation_id))
            .with_headers(FieldTable::default());
        let route = Route {
            exchange: "",
            routing_key: reply_to,
            declare: Declare::Nothing,
        };
        self.inner
            .broker
            .publish_confirmed(route, properties, &body)
            .await
    }
}

/// The client's reply queue, consumed without acknowledgements as `ResultConsumer` does.
struct ReplyQueue(AmqpQueue);

impl Setup for ReplyQueue {
    const WHAT: &'static str = "result consumer";
    const ACKNOWLEDGED: bool = false;

    fn queues(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.0.name())
    }

    /// Declares the reply queue again: it may be gone after a broker restart.
    async fn declare(&self, broker: &AmqpBroker, channel: &Channel) -> Result<()> {
        broker
            .bounded("declare the reply queue", self.0.declare(channel, None))
            .await
    }
}

/// Receives results until the backend is dropped (which aborts this task) or the broker
/// is closed.
async fn receive(inner: std::sync::Weak<Inner>, mut replies: Subscription<ReplyQueue>) {
    while let Some((_, delivery)) = replies.next_retrying().await {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        accept(&strong, &delivery.properties, &delivery.data);
    }
}

/// Records a received result under its correlation id (the task id), falling back to the
/// body's `task_id` for messages of old Celery versions (`_get_message_task_id`).
fn accept(inner: &Inner, properties: &BasicProperties, body: &[u8]) {
    let meta: ResultMeta = match serde_json::from_slice(body) {
        Ok(meta) => meta,
        Err(error) => {
            tracing::warn!(%error, "ignoring a reply that is not Celery's result JSON");
            return;
        }
    };
    let task_id = properties
        .correlation_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_else(|| meta.task_id.clone());
    inner.states.record(task_id, meta);
}

impl ResultBackend for RpcBackend {
    /// Sends `meta` to this backend's own reply queue: for results produced in the process
    /// that sent the task.
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.send(meta, self.inner.queue.name(), &meta.task_id))
    }

    fn store_for<'a>(
        &'a self,
        meta: &'a ResultMeta,
        request: &'a Properties,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // `RPCBackend.store_result`: no reply_to, nothing to send.
            let Some(reply_to) = request.reply_to.as_deref().filter(|r| !r.is_empty()) else {
                return Ok(());
            };
            let correlation_id = request.correlation_id.as_deref().unwrap_or(&meta.task_id);
            self.send(meta, reply_to, correlation_id).await
        })
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>>> {
        let found = self.inner.states.get(task_id);
        Box::pin(async move { Ok(found) })
    }

    fn wait_ready<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultMeta>> {
        Box::pin(async move { Ok(self.inner.states.wait_ready(task_id).await) })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.inner.states.remove(task_id);
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "rpc://".into()
    }

    fn reply_to(&self) -> Option<String> {
        Some(self.inner.queue.name().to_owned())
    }
}
