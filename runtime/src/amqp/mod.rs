//! The RabbitMQ (AMQP 0-9-1) broker, sharing queues with Python Celery.
//!
//! - Queues, exchanges and bindings are declared exactly as Celery declares them
//!   ([`AmqpQueue`]), before the first publish to a queue and when a worker starts
//!   consuming, so either side can come first and neither gets `PRECONDITION_FAILED`.
//! - Task messages go to the default exchange with the queue name as routing key (through
//!   the queue's exchange when it is not direct), with Celery's properties and headers.
//! - Publishing waits for the broker's confirm: a `publish` that returned `Ok` is on the
//!   broker, and persistent (delivery mode 2) messages survive its restart.
//! - Consumers take `basic.qos` from the worker's prefetch window, acknowledge, reject and
//!   requeue with `basic.ack`/`basic.reject`, and come back on a new channel after the
//!   connection or channel is lost: the task consumer, the mailbox and the `rpc://` result
//!   consumer share one reconnecting loop (`subscription`).
//! - Revokes travel on Celery's `celery.pidbox` fanout exchange, so `revoke` from Python
//!   reaches Rust workers and the other way round.
//!
//! Publishing and consuming use separate connections, as Celery's producer pool and
//! consumer do: RabbitMQ blocks publishing connections under memory pressure, and a
//! consumer sharing one could then not acknowledge. Given a `;`-separated failover list of
//! URLs, each connection goes to the first broker that answers and, once lost, moves on
//! to the next one, round-robin (`link`).

pub(crate) mod beat_lease;
mod consumer;
mod link;
mod mailbox;
mod options;
mod publish;
mod rpc_backend;
mod subscription;
mod topology;
pub(crate) mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use lapin::{BasicProperties, Channel};

pub use options::AmqpOptions;
pub(crate) use publish::{Declare, Route};
pub use rpc_backend::RpcBackend;
pub use topology::{AmqpQueue, ExchangeType};

use crate::backoff::Backoff;
use crate::broker::{Broker, Consumer, Control, ControlStream};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{self, Event};
use crate::protocol::RawMessage;
use link::Link;
use options::parse_urls;
use publish::Publisher;

/// How many messages of a batch are published before their confirms are awaited: small
/// enough that one chunk fits well inside the operation timeout.
const BATCH_CHUNK: usize = 256;

/// A RabbitMQ broker. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct AmqpBroker {
    shared: Arc<Shared>,
}

struct Shared {
    options: AmqpOptions,
    /// The URL or failover list, without passwords.
    display: String,
    /// The connection publishes go through.
    publishing: Link,
    /// The connection consumers, control streams and result consumers use.
    consuming: Link,
    publisher: tokio::sync::Mutex<Option<Arc<Publisher>>>,
    /// Queues declared on every new publishing connection before anything is published
    /// on it (the rpc reply queue, `celery/backends/rpc.py::RPCBackend.on_task_call`).
    declare_first: std::sync::Mutex<Vec<AmqpQueue>>,
    /// Channels of dropped consumers still closing; `close` lets them finish first.
    closing: ChannelsClosing,
}

#[derive(Default)]
struct ChannelsClosing {
    count: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.shared.display)
            .finish()
    }
}

impl AmqpBroker {
    /// Connects to `url` (`amqp://user:password@host:port/vhost` or `amqps://…`) with
    /// the options of [`AmqpOptions::from_env`].
    ///
    /// `url` may be a failover list, as Celery's `broker_url` may:
    /// `amqp://guest:guest@rabbit1:5672//;amqp://guest:guest@rabbit2:5672//`. Every
    /// connection (publishing, consuming, the mailbox, the `rpc://` backend's) goes to the
    /// first broker of the list that answers and, when it is lost, to the next one,
    /// round-robin, as kombu's `failover_strategy='round-robin'` does. The query
    /// parameters of the first URL apply to the others unless they set their own; every
    /// URL of the list must be an AMQP one.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, AmqpOptions::from_env()?).await
    }

    /// Connects to `url` (a URL or a failover list, as [`connect`](Self::connect) reads
    /// it) with `options`. Fails when no broker can be reached within the connect timeout;
    /// later losses of the connection are recovered.
    pub async fn connect_with(url: &str, options: AmqpOptions) -> Result<Self> {
        let endpoints = parse_urls(url, &options)?;
        let broker = AmqpBroker {
            shared: Arc::new(Shared {
                publishing: Link::new(endpoints.clone(), "producer", &options),
                consuming: Link::new(endpoints, "consumer", &options),
                display: crate::app::redact_url(url),
                options,
                publisher: tokio::sync::Mutex::new(None),
                declare_first: std::sync::Mutex::new(Vec::new()),
                closing: ChannelsClosing::default(),
            }),
        };
        broker.publisher().await?;
        Ok(broker)
    }

    /// The options this broker was connected with.
    pub fn options(&self) -> &AmqpOptions {
        &self.shared.options
    }

    /// How `queue` is declared: as configured, else as Celery declares a queue it was not
    /// told about.
    pub fn queue_declaration(&self, queue: &str) -> AmqpQueue {
        self.shared
            .options
            .queues
            .get(queue)
            .cloned()
            .unwrap_or_else(|| AmqpQueue::new(queue))
    }

    /// Declares `queue` (its exchange, itself and the binding) now.
    pub async fn declare(&self, queue: &AmqpQueue) -> Result<()> {
        self.declare_with(queue, self.shared.options.max_priority)
            .await
    }

    async fn declare_with(&self, queue: &AmqpQueue, max_priority: Option<u8>) -> Result<()> {
        self.retrying("declare a queue", |publisher| async move {
            queue.declare(&publisher.channel, max_priority).await?;
            publisher.remember(&queue.name);
            Ok(())
        })
        .await
    }

    /// Deletes queue `queue` with the messages in it, and its exchange when the queue has
    /// one of its own name (Celery's default), e.g. to clean up after a test.
    pub async fn delete_queue(&self, queue: &str) -> Result<()> {
        let declaration = self.queue_declaration(queue);
        self.retrying("delete a queue", |publisher| {
            let declaration = &declaration;
            async move {
                let channel = &publisher.channel;
                channel
                    .queue_delete(&declaration.name, Default::default())
                    .await?;
                if declaration.exchange == declaration.name {
                    channel
                        .exchange_delete(&declaration.exchange, Default::default())
                        .await?;
                }
                publisher.forget(&declaration.name);
                Ok(())
            }
        })
        .await
    }

    /// Closes both connections, for a clean exit: the broker, its clones and the rpc
    /// backend on it fail every operation afterwards.
    pub async fn close(&self) {
        let closing = &self.shared.closing;
        let settled = async {
            loop {
                let done = closing.done.notified();
                if closing.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), settled).await;
        // Closed before its connection: a channel dropped open is closed by lapin in the
        // background, racing the connection's close.
        if let Some(publisher) = self.shared.publisher.lock().await.take() {
            let closing = publisher.channel.close(200, "shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
        }
        self.shared.publishing.close().await;
        self.shared.consuming.close().await;
    }

    /// Publishes `messages` to `exchange`, each with its routing key, a chunk at a time
    /// (sent, then its confirms awaited).
    async fn publish_chunked(
        &self,
        exchange: &str,
        declare: &Declare<'_>,
        messages: &[(&str, &RawMessage)],
    ) -> Result<()> {
        for chunk in messages.chunks(BATCH_CHUNK) {
            let encoded: Vec<(&str, BasicProperties, &[u8])> = chunk
                .iter()
                .map(|(key, m)| (*key, wire::basic_properties(m), m.body.as_slice()))
                .collect();
            self.publish_all(exchange, declare, &encoded).await?;
        }
        Ok(())
    }

    /// Whether [`close`](Self::close) was called: lost connections are then expected.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.consuming.is_closed()
    }

    /// Closes `channel` in the background, bounded by a short timeout (a dropped consumer:
    /// the broker requeues what it held unacknowledged). `close` waits for these.
    pub(crate) fn close_in_background(&self, channel: Channel, reason: &'static str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        shared
            .closing
            .count
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        runtime.spawn(async move {
            let closing = channel.close(200, reason);
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
            shared
                .closing
                .count
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            shared.closing.done.notify_waiters();
        });
    }

    /// Declares `queue` on every publishing connection before anything is published on
    /// it, now and after each reconnection. It is no task queue, so the default
    /// `x-max-priority` does not apply (Celery applies it to `task_queues` only).
    pub(crate) async fn declare_before_publishing(&self, queue: AmqpQueue) -> Result<()> {
        self.lock_declare_first().push(queue.clone());
        self.declare_with(&queue, None).await
    }

    fn lock_declare_first(&self) -> std::sync::MutexGuard<'_, Vec<AmqpQueue>> {
        self.shared
            .declare_first
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A new channel on the consuming connection, reconnecting first if needed.
    pub(crate) async fn consuming_channel(&self) -> Result<Channel> {
        let connected = self.shared.consuming.get().await?;
        match self
            .bounded("open a channel", connected.connection.create_channel())
            .await
        {
            Ok(channel) => Ok(channel),
            Err(error) => {
                if error.kind() == ErrorKind::Timeout {
                    self.shared.consuming.discard(connected.generation).await;
                }
                Err(error)
            }
        }
    }

    /// Bounds a broker operation by the operation timeout.
    pub(crate) async fn bounded<T>(
        &self,
        action: &str,
        operation: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T> {
        let timeout = self.shared.options.operation_timeout;
        match tokio::time::timeout(timeout, operation).await {
            Ok(result) => result.map_err(|e| amqp_error(action, e)),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("amqp: could not {action} within {timeout:?}"),
            )),
        }
    }

    /// The delay before reconnection attempt `attempt` (1-based): doubling from the initial
    /// delay up to the maximum.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let options = &self.shared.options;
        Backoff::new(options.reconnect_delay, options.reconnect_max_delay).delay(attempt)
    }
}

impl Broker for AmqpBroker {
    fn publish<'a>(&'a self, queue: &'a str, message: RawMessage) -> BoxFuture<'a, Result<()>> {
        // A batch of one: the same declaration, route, publish and confirm.
        self.publish_batch(queue, vec![message])
    }

    /// Pipelined: a chunk of messages is sent before its confirms are awaited, so a batch
    /// costs a few round trips instead of one per message.
    fn publish_batch<'a>(
        &'a self,
        queue: &'a str,
        messages: Vec<RawMessage>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let declaration = self.queue_declaration(queue);
            let (exchange, routing_key) = declaration.route();
            let routed: Vec<(&str, &RawMessage)> =
                messages.iter().map(|m| (routing_key, m)).collect();
            self.publish_chunked(exchange, &Declare::Queue(&declaration), &routed)
                .await
        })
    }

    /// To the durable topic exchange `celeryev`, as Celery's `EventDispatcher` publishes
    /// (`celery/events/event.py`: `Exchange('celeryev', type='topic')`), pipelined like a
    /// batch of tasks; monitors bind their queues with `#` or the routing keys they want.
    fn publish_events<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let messages = events::messages(events);
            let routed: Vec<(&str, &RawMessage)> =
                messages.iter().map(|(key, m)| (key.as_str(), m)).collect();
            let declare = Declare::DurableExchange(events::EXCHANGE, ExchangeType::Topic);
            self.publish_chunked(events::EXCHANGE, &declare, &routed)
                .await
        })
    }

    fn consume<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<Box<dyn Consumer>>> {
        Box::pin(async move {
            let declarations: Vec<AmqpQueue> =
                queues.iter().map(|q| self.queue_declaration(q)).collect();
            // Declared now, so a queue declared differently elsewhere fails the worker's
            // start instead of its first fetch.
            for queue in &declarations {
                self.declare(queue).await?;
            }
            Ok(
                Box::new(consumer::AmqpConsumer::new(self.clone(), declarations))
                    as Box<dyn Consumer>,
            )
        })
    }

    /// The broker connected to (the consuming connection's, else the publishing one's),
    /// without its password: with a failover list, the one in use.
    fn describe(&self) -> String {
        let shared = &self.shared;
        shared
            .consuming
            .connected_to()
            .or_else(|| shared.publishing.connected_to())
            .unwrap_or(&shared.display)
            .to_owned()
    }

    fn broadcast<'a>(&'a self, command: Control) -> BoxFuture<'a, Result<()>> {
        Box::pin(mailbox::broadcast(self, command))
    }

    fn control<'a>(&'a self) -> BoxFuture<'a, Result<Box<dyn ControlStream>>> {
        Box::pin(async move {
            let stream = mailbox::PidboxStream::open(self.clone()).await?;
            Ok(Box::new(stream) as Box<dyn ControlStream>)
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(AmqpBroker::close(self))
    }

    fn mailbox<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn crate::pidbox::Mailbox>>>> {
        Box::pin(async move {
            let mailbox = mailbox::AmqpMailbox::open(self.clone(), node).await?;
            Ok(mailbox.map(|m| Box::new(m) as Box<dyn crate::pidbox::Mailbox>))
        })
    }

    fn queue_info(&self, queue: &str) -> crate::broker::QueueInfo {
        self.queue_declaration(queue)
            .info(self.shared.options.max_priority)
    }
}

/// A broker error; refusals the broker will repeat (a soft AMQP error such as
/// `PRECONDITION_FAILED` for an inequivalent redeclaration) are configuration errors.
pub(crate) fn amqp_error(action: &str, error: lapin::Error) -> Error {
    let kind = match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp)
            if matches!(amqp.kind(), lapin::protocol::AMQPErrorKind::Soft(_)) =>
        {
            ErrorKind::Config
        }
        _ => ErrorKind::Broker,
    };
    Error::new(kind, format!("amqp: could not {action}")).with_source(error)
}

/// Whether `error` is the broker's refusal `refusal`: a soft AMQP error (reply code),
/// which closed the channel of the operation refused.
pub(crate) fn is_refusal(error: &Error, refusal: lapin::protocol::AMQPSoftError) -> bool {
    let refused = std::error::Error::source(error).and_then(|s| s.downcast_ref::<lapin::Error>());
    matches!(
        refused.map(lapin::Error::kind),
        Some(lapin::ErrorKind::ProtocolError(amqp))
            if *amqp.kind() == lapin::protocol::AMQPErrorKind::Soft(refusal)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_backs_off_exponentially_up_to_the_cap() {
        let options = AmqpOptions::default()
            .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1));
        let shared = Shared {
            publishing: Link::new(Vec::new(), "producer", &options),
            consuming: Link::new(Vec::new(), "consumer", &options),
            display: String::new(),
            options,
            publisher: Default::default(),
            declare_first: Default::default(),
            closing: Default::default(),
        };
        let broker = AmqpBroker {
            shared: Arc::new(shared),
        };
        let delays: Vec<u128> = (1..=6).map(|a| broker.backoff(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }
}
