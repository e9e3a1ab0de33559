//! Consuming from Redis: fetching by script into a buffer, handing out deliveries, and
//! settling each one (acknowledge, requeue, read back when a held task falls due).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::broker::{MAX_REFRESH_INTERVAL, MAX_RESTORE_INTERVAL, RedisBroker, now_seconds};
use super::connection::Subscription;
use super::kombu;
use crate::broker::{Acknowledger, Consumer, Delivery};
use crate::error::{ErrorKind, Result};
use crate::protocol::RawMessage;

/// The most messages one fetch takes. A quarter of the prefetch window otherwise; but the
/// window grows by one for each task held for its ETA, and a fetch of tens of thousands
/// of messages (tens of megabytes of reply and decoded deliveries at once) would leave
/// that much heap behind for good.
const MAX_FETCH: usize = 1000;

/// A fetch reply this large (bytes) is followed by a new connection, to give back the
/// memory its read buffer grew by: the threshold above which glibc's allocator (as the
/// worker sets it) returns freed blocks to the system at once.
const LARGE_REPLY: usize = 1024 * 1024;

/// Longest pause between fetch attempts on idle queues.
const MAX_IDLE_POLL: Duration = Duration::from_millis(50);

/// Starts consuming `queues`: registers their bindings, subscribes to their wake-up
/// channels, and starts the sweep for dead consumers' messages and the refresh of the
/// held ones' `unacked_index` scores.
pub(super) async fn consume(broker: &RedisBroker, queues: &[String]) -> Result<Box<dyn Consumer>> {
    broker.bind(queues).await?;
    let channels = queues.iter().map(|q| broker.wake_channel(q)).collect();
    let wake = Subscription::open(broker.shared.connection.clone(), channels).await?;
    let sweeping = broker.clone();
    let interval =
        (broker.visibility_timeout / 2).clamp(Duration::from_secs(1), MAX_RESTORE_INTERVAL);
    let sweeper = tokio::spawn(async move {
        loop {
            if let Err(error) = sweeping.restore_visible().await {
                tracing::warn!(%error, "could not sweep for unacknowledged tasks");
            }
            tokio::time::sleep(interval).await;
        }
    });
    let refreshing = broker.clone();
    let every =
        (broker.visibility_timeout / 4).clamp(Duration::from_millis(250), MAX_REFRESH_INTERVAL);
    let refresher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = refreshing.refresh_outstanding().await {
                tracing::warn!(%error, "could not refresh the unacknowledged entries of held tasks");
            }
        }
    });
    let consumer = RedisConsumer {
        broker: broker.clone(),
        queues: queues.to_vec(),
        keys: Arc::new(kombu::consume_keys(queues)),
        idle: Duration::ZERO,
        wake,
        batch: 1,
        buffer: std::collections::VecDeque::new(),
        pending: None,
        sweeper,
        refresher,
    };
    Ok(Box::new(consumer) as Box<dyn Consumer>)
}

struct RedisConsumer {
    broker: RedisBroker,
    /// The queues consumed.
    queues: Vec<String>,
    /// The queues' list keys in the order of the next fetch, priority-major (see
    /// [`kombu::consume_keys`]): one run of the queues per priority step. Shared with the
    /// fetch task.
    keys: Arc<Vec<String>>,
    /// Current pause between attempts on empty queues: 0 after a delivery, doubling to
    /// `MAX_IDLE_POLL` while the queues stay empty, cut short by a wake-up.
    idle: Duration,
    /// Wake-ups announcing new messages in the queues.
    wake: Subscription,
    /// How many messages one fetch may take: a quarter of the worker's prefetch window
    /// (at least one, at most `MAX_FETCH`), so a busy worker saves round trips without
    /// reserving much more than its window.
    batch: usize,
    /// Fetched, recorded as unacknowledged, not yet handed out.
    buffer: std::collections::VecDeque<Delivery>,
    /// A fetch whose reply has not been read yet.
    pending: Option<PendingFetch>,
    /// The periodic `restore_visible` sweep, stopped with the consumer.
    sweeper: tokio::task::JoinHandle<()>,
    /// The periodic refresh of held messages' `unacked_index` scores, stopped with the
    /// consumer: a worker that stops consuming has returned or settled what it held.
    refresher: tokio::task::JoinHandle<()>,
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        self.sweeper.abort();
        self.refresher.abort();
        // Fetched but never handed out: back to the queue now rather than after the
        // visibility timeout (kombu restores a closing channel's unacked messages too).
        let buffered = std::mem::take(&mut self.buffer);
        let pending = self.pending.take();
        if buffered.is_empty() && pending.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(return_fetched(self.broker.clone(), buffered, pending));
    }
}

/// Requeues messages fetched but never handed out: the `buffered` deliveries and those of
/// a fetch still `pending`.
async fn return_fetched(
    broker: RedisBroker,
    buffered: std::collections::VecDeque<Delivery>,
    pending: Option<PendingFetch>,
) {
    let mut ackers: Vec<Box<dyn Acknowledger>> =
        buffered.into_iter().map(|d| d.into_parts().3).collect();
    if let Some(Ok(Ok(fetched))) = match pending {
        Some(pending) => Some(pending.await),
        None => None,
    } {
        for (queue, envelope, malformed) in entries(fetched) {
            if !malformed {
                ackers.push(delivery(&broker, queue, envelope).into_parts().3);
            }
        }
    }
    for acker in ackers {
        if let Err(error) = acker.reject(true).await {
            tracing::warn!(%error, "could not requeue a fetched task; it returns after the visibility timeout");
        }
    }
}

/// A fetch script running in a task of its own (see [`RedisConsumer::fetch`]).
type PendingFetch = tokio::task::JoinHandle<Result<Vec<Vec<u8>>>>;

impl RedisConsumer {
    /// Fetches up to `batch` messages in one round trip into the buffer.
    ///
    /// The script runs in a task of its own, kept until its reply is read: were `next`
    /// dropped mid-fetch (the worker's select on shutdown or a held ETA), the messages
    /// the script recorded would otherwise be stranded until the visibility timeout.
    async fn fetch(&mut self) -> Result<()> {
        let pending = match &mut self.pending {
            Some(pending) => pending,
            None => {
                let broker = self.broker.clone();
                let keys = self.keys.clone();
                let limit = self.batch;
                self.pending.insert(tokio::spawn(async move {
                    let shared = &broker.shared;
                    let now = now_seconds();
                    let fetched = shared
                        .connection
                        .run("fetch tasks", |mut c| {
                            let mut invocation = shared.fetch.prepare_invoke();
                            for key in keys.iter() {
                                invocation.key(key);
                            }
                            invocation.arg(now).arg(limit);
                            async move { invocation.invoke_async::<Vec<Vec<u8>>>(&mut c).await }
                        })
                        .await;
                    // A large reply grew the connection's read buffer, which it keeps:
                    // a new connection returns that memory (the reply itself is freed
                    // once handled).
                    let size: usize = fetched.iter().flatten().map(Vec::len).sum();
                    if size >= LARGE_REPLY {
                        shared.connection.renew().await;
                    }
                    fetched
                }))
            }
        };
        let fetched = pending.await;
        self.pending = None;
        let fetched = fetched.map_err(|e| {
            crate::error::Error::new(ErrorKind::Broker, "the fetch task failed").with_source(e)
        })??;
        for (queue, envelope, malformed) in entries(fetched) {
            let delivery = if malformed {
                // Logged once, by the worker, as every malformed message is.
                let reason = format!("not a kombu message envelope ({} bytes)", envelope.len());
                Delivery::malformed(kombu::salvage(&envelope), queue, reason, Box::new(Settled))
            } else {
                delivery(&self.broker, queue, envelope)
            };
            self.buffer.push_back(delivery);
        }
        if let Some(last) = self.buffer.back() {
            let queue = last.queue.clone();
            self.rotate_after(&queue);
        }
        Ok(())
    }

    /// Moves `queue` to the back of the fetch order (kombu's `_queue_cycle.rotate`), so a
    /// busy queue cannot starve the others of the same priority.
    fn rotate_after(&mut self, queue: &str) {
        let count = self.keys.len() / kombu::PRIORITY_STEPS.len();
        if count < 2 {
            return;
        }
        // The first run holds priority 0, whose key is the queue's own name.
        if let Some(position) = self.keys[..count].iter().position(|k| k == queue) {
            for run in Arc::make_mut(&mut self.keys).chunks_mut(count) {
                run[position..].rotate_left(1);
            }
        }
    }

    /// Fetches from the queues consumed now: the keys in kombu's order, and a wake-up
    /// channel each. A failed subscription is retried by the next wait; until then the
    /// idle polling finds new messages.
    async fn follow_queues(&mut self) {
        self.keys = Arc::new(kombu::consume_keys(&self.queues));
        if self.queues.is_empty() {
            // Nothing is fetched; the subscription's wake-ups are ignored meanwhile.
            return;
        }
        let channels = self
            .queues
            .iter()
            .map(|q| self.broker.wake_channel(q))
            .collect();
        if let Err(error) = self.wake.resubscribe(channels).await {
            tracing::warn!(%error, "could not subscribe to the wake-ups of the queues consumed; polling meanwhile");
        }
    }

    /// Waits for a wake-up or the current idle pause, whichever comes first.
    async fn idle_wait(&mut self) {
        self.idle = (self.idle * 2).clamp(Duration::from_millis(1), MAX_IDLE_POLL);
        // Wake-ups that arrived while busy announce messages already taken: drop them,
        // or each would cost a fetch that finds nothing.
        while self.wake.next().now_or_never().is_some() {}
        tokio::select! {
            _ = self.wake.next() => self.idle = Duration::ZERO,
            _ = tokio::time::sleep(self.idle) => {}
        }
    }
}

/// The fetch script's reply, `key, envelope, flag` triples, as `(queue, envelope,
/// malformed)`.
fn entries(fetched: Vec<Vec<u8>>) -> impl Iterator<Item = (String, Vec<u8>, bool)> {
    let mut parts = fetched.into_iter();
    std::iter::from_fn(move || {
        let (key, envelope, flag) = (parts.next()?, parts.next()?, parts.next()?);
        let queue = kombu::queue_of_key(&String::from_utf8_lossy(&key)).to_owned();
        Some((queue, envelope, !flag.is_empty()))
    })
}

/// The delivery of an `envelope` the fetch script recorded (it found a delivery tag).
/// One that cannot be read here still settles its `unacked` record, so the worker's
/// reject removes it instead of the sweep restoring it after every visibility timeout.
fn delivery(broker: &RedisBroker, queue: String, envelope: Vec<u8>) -> Delivery {
    match kombu::unwrap(&envelope) {
        Ok(unwrapped) => {
            let priority = unwrapped.message.properties.priority.unwrap_or(0);
            let acker = RedisAcker::new(
                broker,
                &queue,
                priority,
                unwrapped.delivery_tag,
                envelope.len(),
            );
            Delivery::new(
                unwrapped.message,
                queue,
                unwrapped.redelivered,
                Box::new(acker),
            )
        }
        Err(error) => {
            // Logged once, by the worker, which also records a FAILURE for a task id it
            // can still read.
            let message = kombu::salvage(&envelope);
            let acker: Box<dyn Acknowledger> = match kombu::delivery_tag(&envelope) {
                Some(tag) => Box::new(RedisAcker::new(broker, &queue, 0, tag, envelope.len())),
                None => Box::new(Settled),
            };
            Delivery::malformed(message, queue, error.to_string(), acker)
        }
    }
}

/// The envelope in an `unacked` record the fetch script wrote as `[<envelope>,
/// <exchange>, <routing key>]`, `length` bytes long; read as JSON when the record was
/// rewritten since. `None` for a record with no envelope.
fn envelope_of(record: &[u8], length: usize) -> Option<std::borrow::Cow<'_, [u8]>> {
    if record.first() == Some(&b'[') && record.get(length + 1) == Some(&b',') {
        return Some(std::borrow::Cow::Borrowed(&record[1..=length]));
    }
    let parts: Vec<serde_json::Value> = serde_json::from_slice(record).ok()?;
    let envelope = serde_json::to_vec(parts.first()?).ok()?;
    Some(std::borrow::Cow::Owned(envelope))
}

struct Settled;

impl Acknowledger for Settled {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn reject(self: Box<Self>, _requeue: bool) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

impl Consumer for RedisConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery>> {
        Box::pin(async move {
            loop {
                if let Some(delivery) = self.buffer.pop_front() {
                    self.idle = Duration::ZERO;
                    return Ok(delivery);
                }
                if self.queues.is_empty() && self.pending.is_none() {
                    // Consuming nothing until a queue is added.
                    return futures::future::pending().await;
                }
                self.fetch().await?;
                if self.buffer.is_empty() {
                    self.idle_wait().await;
                }
            }
        })
    }

    fn set_prefetch(&mut self, count: usize) -> BoxFuture<'_, Result<()>> {
        self.batch = (count / 4).clamp(1, MAX_FETCH);
        Box::pin(async { Ok(()) })
    }

    fn cancel(&mut self) -> BoxFuture<'_, Result<()>> {
        let buffered = std::mem::take(&mut self.buffer);
        let pending = self.pending.take();
        let broker = self.broker.clone();
        Box::pin(async move {
            return_fetched(broker, buffered, pending).await;
            Ok(())
        })
    }

    /// Registers the queue's binding as kombu does when it declares a queue, then fetches
    /// from it with the others.
    fn add_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.queues.iter().any(|q| q == queue) {
                return Ok(());
            }
            self.broker.bind(&[queue.to_owned()]).await?;
            self.queues.push(queue.to_owned());
            self.follow_queues().await;
            Ok(())
        })
    }

    /// Fetches no more from the queue; what was fetched from it and not handed out goes
    /// back to it at once. A fetch already running may still bring a few.
    fn cancel_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.queues.retain(|q| q != queue);
            self.follow_queues().await;
            type Deliveries = std::collections::VecDeque<Delivery>;
            let (returned, kept): (Deliveries, Deliveries) = std::mem::take(&mut self.buffer)
                .into_iter()
                .partition(|delivery| delivery.queue == queue);
            self.buffer = kept;
            return_fetched(self.broker.clone(), returned, None).await;
            Ok(())
        })
    }
}

struct RedisAcker {
    broker: RedisBroker,
    /// `Some` until settled. The same as in the broker's outstanding set.
    tag: Option<Arc<str>>,
    queue_key: Arc<str>,
    /// The envelope's length, to requeue it from its `unacked` record: a held message
    /// costs no second copy.
    envelope_len: usize,
}

impl RedisAcker {
    fn new(
        broker: &RedisBroker,
        queue: &str,
        priority: u8,
        tag: String,
        envelope_len: usize,
    ) -> Self {
        let tag: Arc<str> = tag.into();
        broker.shared.outstanding().insert(tag.clone());
        RedisAcker {
            broker: broker.clone(),
            tag: Some(tag),
            queue_key: broker.shared.queue_key(queue, priority),
            envelope_len,
        }
    }
}

impl RedisAcker {
    /// The tag, once: the message is settled from now on and no longer refreshed.
    fn settle(&mut self) -> Option<Arc<str>> {
        let tag = self.tag.take()?;
        self.broker.shared.outstanding().remove(&tag);
        Some(tag)
    }
}

impl Drop for RedisAcker {
    /// Dropped unsettled, the message stays in `unacked`, no longer refreshed, and comes
    /// back after the visibility timeout.
    fn drop(&mut self) {
        self.settle();
    }
}

impl Acknowledger for RedisAcker {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let tag = self.settle();
        let shared = self.broker.shared.clone();
        Box::pin(async move {
            let Some(tag) = tag else { return Ok(()) };
            // kombu's `QoS.ack` → `_remove_from_indices`: one pipeline, no script.
            let mut pipeline = redis::pipe();
            pipeline
                .zrem("unacked_index", &*tag)
                .ignore()
                .hdel("unacked", &*tag)
                .ignore();
            shared
                .connection
                .run_pipeline("acknowledge a task", &pipeline)
                .await?;
            Ok(())
        })
    }

    fn reject(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
        if !requeue {
            // kombu: reject without requeue is an ack.
            return self.ack();
        }
        let tag = self.settle();
        let shared = self.broker.shared.clone();
        let key = self.queue_key.clone();
        let length = self.envelope_len;
        Box::pin(async move {
            let Some(tag) = tag else { return Ok(()) };
            let _: i64 = shared
                .connection
                .run("requeue a task", |mut c| {
                    let mut invocation = shared.requeue.prepare_invoke();
                    invocation.key(&*key).arg(&*tag).arg(length);
                    async move { invocation.invoke_async(&mut c).await }
                })
                .await?;
            Ok(())
        })
    }

    fn can_reload(&self) -> bool {
        self.tag.is_some()
    }

    /// Reads the envelope from the message's `unacked` record, which the fetch script
    /// wrote as `[<envelope>, <exchange>, <routing key>]`.
    fn reload(&self) -> BoxFuture<'static, Result<Option<RawMessage>>> {
        let tag = self.tag.clone();
        let shared = self.broker.shared.clone();
        let length = self.envelope_len;
        Box::pin(async move {
            let Some(tag) = tag else { return Ok(None) };
            let record: Option<Vec<u8>> = shared
                .connection
                .run("read a held task back", |mut c| {
                    let mut command = redis::cmd("HGET");
                    command.arg("unacked").arg(&*tag);
                    async move { command.query_async(&mut c).await }
                })
                .await?;
            let Some(record) = record else {
                return Ok(None);
            };
            let Some(envelope) = envelope_of(&record, length) else {
                return Ok(None);
            };
            let unwrapped = kombu::unwrap(&envelope).map_err(|error| {
                crate::error::Error::new(ErrorKind::Broker, "a held task's record is not readable")
                    .with_source(error)
            })?;
            Ok(Some(unwrapped.message))
        })
    }
}
// A delivery dropped unsettled stays in `unacked` and comes back after the visibility
// timeout, as with kombu: that is what makes a killed worker lose nothing.

#[cfg(test)]
mod tests {
    use super::envelope_of;

    #[test]
    fn a_held_message_is_read_back_from_its_unacked_record() {
        let envelope = br#"{"body": "W10=", "properties": {"delivery_tag": "t"}}"#;
        // As the fetch script writes it: the envelope byte for byte.
        let mut record = b"[".to_vec();
        record.extend_from_slice(envelope);
        record.extend_from_slice(br#", "", "celery"]"#);
        assert_eq!(envelope_of(&record, envelope.len()).unwrap(), &envelope[..]);
        // As Python's json.dumps writes it: read as JSON.
        let rewritten = br#"[{"body":"W10=","properties":{"delivery_tag":"t"}},"","celery"]"#;
        let read: serde_json::Value =
            serde_json::from_slice(&envelope_of(rewritten, envelope.len()).unwrap()).unwrap();
        assert_eq!(
            read,
            serde_json::from_slice::<serde_json::Value>(envelope).unwrap()
        );
        assert!(envelope_of(b"[]", 0).is_none());
        assert!(envelope_of(b"not json", 3).is_none());
    }
}
