//! Message brokers: where task messages wait for a worker.
//!
//! A broker publishes [`RawMessage`]s to a queue and hands them to consumers as
//! [`Delivery`]s, which must be acknowledged or rejected. Decoding is the worker's job, so
//! every transport treats malformed messages the same way.

use futures::future::BoxFuture;

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub use crate::amqp::{AmqpBroker, AmqpOptions, AmqpQueue, ExchangeType};
pub use crate::memory::{MemoryBroker, MemoryEvents};
pub use crate::pidbox::{Mailbox, MailboxCommand, ReplyTo};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::redis::RedisBroker;

use crate::error::Result;
use crate::events::Event;
use crate::protocol::RawMessage;

/// A message transport.
pub trait Broker: Send + Sync + 'static {
    /// Publishes `message` to `queue`. When this returns `Ok`, the broker has the message.
    fn publish<'a>(&'a self, queue: &'a str, message: RawMessage) -> BoxFuture<'a, Result<()>>;

    /// Publishes `messages` to `queue`, in order. Transports that can (Redis pipelines)
    /// do it in one round trip; the default publishes one by one.
    fn publish_batch<'a>(
        &'a self,
        queue: &'a str,
        messages: Vec<RawMessage>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for message in messages {
                self.publish(queue, message).await?;
            }
            Ok(())
        })
    }

    /// Starts consuming from `queues`.
    fn consume<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<Box<dyn Consumer>>>;

    /// A short description for logs and banners, without credentials.
    fn describe(&self) -> String;

    /// Broadcasts a control command to every worker (Celery's pidbox broadcast).
    fn broadcast<'a>(&'a self, command: Control) -> BoxFuture<'a, Result<()>>;

    /// Subscribes to control commands broadcast to workers. A worker listens here only
    /// when the transport gives it no [`mailbox`](Broker::mailbox), where Celery's
    /// commands arrive instead. The default is a stream with nothing on it.
    fn control<'a>(&'a self) -> BoxFuture<'a, Result<Box<dyn ControlStream>>> {
        Box::pin(async { Ok(Box::new(Silent) as Box<dyn ControlStream>) })
    }

    /// Closes the broker's connections for a clean exit: a connection still open when the
    /// runtime stops is torn down mid-frame, with errors in the logs. Operations after it
    /// fail. The default does nothing.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The remote-control mailbox of worker `node` (Celery's pidbox, `kombu/pidbox.py`),
    /// where the transport has one: what `celery inspect` and `celery control` reach.
    /// `None`, the default, for a transport Celery's tools cannot reach.
    fn mailbox<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<Option<Box<dyn Mailbox>>>> {
        let _ = node;
        Box::pin(async { Ok(None) })
    }

    /// Publishes monitoring `events` in order to Celery's `celeryev` exchange, in the
    /// messages a Celery worker sends them in (see [`events`](crate::events)). Events are
    /// transient and fire-and-forget: no monitor listening is not an error. The default
    /// drops them, for a transport monitors cannot reach.
    fn publish_events<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<()>> {
        let _ = events;
        Box::pin(async { Ok(()) })
    }

    /// How `queue` is declared when consumed, for `celery inspect active_queues`. The
    /// default is Celery's declaration of a queue it was not told about
    /// ([`QueueInfo::new`]).
    fn queue_info(&self, queue: &str) -> QueueInfo {
        QueueInfo::new(queue)
    }
}

/// A command broadcast to workers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Do not run these task ids (Celery's `revoke`).
    Revoke {
        /// The task ids.
        task_ids: Vec<String>,
    },
}

/// A control stream with nothing on it.
struct Silent;

impl ControlStream for Silent {
    fn next(&mut self) -> BoxFuture<'_, Option<Control>> {
        Box::pin(futures::future::pending())
    }
}

/// Control commands as a worker receives them.
pub trait ControlStream: Send {
    /// The next command; `None` when the broker closed the stream.
    fn next(&mut self) -> BoxFuture<'_, Option<Control>>;
}

/// A stream of deliveries from one or more queues.
pub trait Consumer: Send {
    /// Waits for the next delivery. Cancel-safe: dropping the future loses no message.
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery>>;

    /// How many deliveries the broker may hand out unacknowledged (AMQP `basic.qos`). The
    /// worker sets its prefetch window before the first `next`, and raises it by one for
    /// each message it holds until its ETA, as Celery does
    /// (`celery/worker/strategy.py`: `consumer.qos.increment_eventually()`), so held
    /// messages do not starve the window. Transports that fetch on demand ignore it.
    fn set_prefetch(&mut self, _count: usize) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Stops deliveries for good, leaving those already handed out to be settled on the
    /// open connection: what a stopping worker does first (Celery's
    /// `celery/worker/consumer/tasks.py::Tasks.shutdown` cancels its task consumer).
    /// Messages fetched but not handed out go back to their queue. The default does
    /// nothing.
    fn cancel(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Starts consuming `queue` as well, declared as [`Broker::consume`] declares its
    /// queues: what Celery's `add_consumer` remote-control command does
    /// (`celery/worker/consumer/consumer.py::Consumer.add_task_queue`). Adding a queue
    /// already consumed does nothing. The default refuses: the transport cannot change
    /// what it consumes.
    fn add_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Err(cannot_change_queues(queue)) })
    }

    /// Stops consuming `queue` (Celery's `cancel_consumer`): nothing more is delivered
    /// from it, and deliveries already handed out stay to be settled as usual. Without a
    /// queue left the consumer delivers nothing until one is added. The default refuses.
    fn cancel_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Err(cannot_change_queues(queue)) })
    }
}

fn cannot_change_queues(queue: &str) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::ErrorKind::Unsupported,
        format!("this transport cannot change the queues it consumes (asked about `{queue}`)"),
    )
}

/// How a queue is declared, in the terms of kombu's `Queue` and `Exchange`: what
/// `celery inspect active_queues` reports of the queues a worker consumes
/// (`Queue.as_dict(recurse=True)`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// The exchange it is bound to.
    pub exchange: String,
    /// The exchange's type: `direct`, `topic` or `fanout`.
    pub exchange_type: &'static str,
    /// The binding's routing key.
    pub routing_key: String,
    /// Whether the queue (and its exchange) survive a broker restart.
    pub durable: bool,
    /// Whether the queue is deleted with its last consumer.
    pub auto_delete: bool,
    /// Whether only one connection may use it.
    pub exclusive: bool,
    /// Its highest priority (`x-max-priority`), if it is a priority queue.
    pub max_priority: Option<u8>,
    /// Its declaration arguments (`x-queue-type`, `x-max-priority`…), empty for none.
    pub arguments: serde_json::Map<String, serde_json::Value>,
}

impl QueueInfo {
    /// What Celery declares for a queue it was not told about
    /// (`celery/app/amqp.py::Queues.new_missing`): durable, bound to a durable direct
    /// exchange of its own name with its name as routing key.
    pub fn new(name: impl Into<String>) -> QueueInfo {
        let name = name.into();
        QueueInfo {
            exchange: name.clone(),
            exchange_type: "direct",
            routing_key: name.clone(),
            name,
            durable: true,
            auto_delete: false,
            exclusive: false,
            max_priority: None,
            arguments: serde_json::Map::new(),
        }
    }
}

/// A message handed to a worker, with the means to settle it.
pub struct Delivery {
    /// The message.
    pub message: RawMessage,
    /// The queue it came from.
    pub queue: String,
    /// Whether the broker delivered it before (after a crash or a requeue).
    pub redelivered: bool,
    /// Why the transport could not read the message, when it could not: the message then
    /// holds what could be read of it (headers, properties) and an empty body.
    malformed: Option<String>,
    acker: Box<dyn Acknowledger>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("redelivered", &self.redelivered)
            .field("malformed", &self.malformed)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A delivery settled through `acker`.
    pub fn new(
        message: RawMessage,
        queue: String,
        redelivered: bool,
        acker: Box<dyn Acknowledger>,
    ) -> Self {
        Delivery {
            message,
            queue,
            redelivered,
            malformed: None,
            acker,
        }
    }

    /// A delivery the transport could not read, for `reason`: the worker logs the reason
    /// once, rejects it, and records a FAILURE when `message` still carries a task id.
    pub fn malformed(
        message: RawMessage,
        queue: String,
        reason: String,
        acker: Box<dyn Acknowledger>,
    ) -> Self {
        Delivery {
            malformed: Some(reason),
            ..Delivery::new(message, queue, false, acker)
        }
    }

    /// Why the transport could not read this message, if it could not.
    pub fn malformed_reason(&self) -> Option<&str> {
        self.malformed.as_deref()
    }

    /// Splits off the acknowledger, so the message can be settled later.
    pub fn into_parts(self) -> (RawMessage, String, bool, Box<dyn Acknowledger>) {
        (self.message, self.queue, self.redelivered, self.acker)
    }
}

/// Settles one delivery. Dropping it unsettled returns the message to the broker the way
/// the transport does when a connection closes (AMQP requeues, Redis restores later).
pub trait Acknowledger: Send + Sync {
    /// The message was handled: the broker forgets it.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// The message is refused: requeued, or dropped (dead-lettered where configured).
    fn reject(self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>>;

    /// Whether [`reload`](Acknowledger::reload) can read the message back: the transport
    /// keeps it while it is unsettled (Redis, in kombu's `unacked` hash), so a worker
    /// holding it for its ETA need not keep a copy. The default: it cannot.
    fn can_reload(&self) -> bool {
        false
    }

    /// Reads the message back from the broker, as it was delivered. `Ok(None)` when the
    /// broker no longer holds it for this delivery (another consumer restored it to its
    /// queue meanwhile, taking this one for lost), or when the transport cannot.
    fn reload(&self) -> BoxFuture<'static, Result<Option<RawMessage>>> {
        Box::pin(async { Ok(None) })
    }
}

/// A transport whose lost connections are counted (the worker's metrics report them).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(all(feature = "redis", feature = "amqp")),
    allow(dead_code, reason = "each transport counts its own")
)]
pub(crate) enum Transport {
    Redis,
    Amqp,
}

/// Connections to Redis or RabbitMQ re-established after a loss in this process, by any
/// broker, result backend or mailbox: one count per [`Transport`].
static RECONNECTS: [std::sync::atomic::AtomicU64; 2] = [
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
];

/// Counts a connection of `transport` re-established after a loss.
#[cfg_attr(
    not(any(feature = "redis", feature = "amqp")),
    expect(dead_code, reason = "only network transports reconnect")
)]
pub(crate) fn reconnected(transport: Transport) {
    RECONNECTS[transport as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The counts of [`reconnected`], by transport name.
pub(crate) fn reconnects() -> [(&'static str, u64); 2] {
    let read = |t: Transport| RECONNECTS[t as usize].load(std::sync::atomic::Ordering::Relaxed);
    [
        ("redis", read(Transport::Redis)),
        ("amqp", read(Transport::Amqp)),
    ]
}
