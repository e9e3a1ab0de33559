//! The Redis broker, sharing queues with Python Celery through kombu's key layout.
//!
//! - Publishing `LPUSH`es kombu's envelope onto the queue's priority-bucket list, and
//!   announces it on a wake-up channel so idle Celerity consumers fetch at once (Python
//!   producers do not announce; their messages are found by the idle poll).
//! - Fetching pops and records the message in `unacked` / `unacked_index` in one Lua
//!   script, so no crash can lose a message between the two. kombu's `BRPOP` followed by
//!   `MULTI` can.
//! - Acknowledging removes it from both. Rejecting with requeue pushes it back.
//! - A message left unacknowledged longer than the visibility timeout (a dead consumer's)
//!   is restored by the sweep in [`RedisBroker::restore_visible`], with kombu's rules and
//!   its `unacked_mutex`. A live consumer re-scores the `unacked_index` entries of the
//!   messages it still holds well inside that timeout, so a task held for a long ETA is
//!   not restored and run twice (kombu does not, and a Celery worker holding an ETA task
//!   past the timeout gets a second copy).
//! - Consuming registers kombu's `_kombu.binding.<queue>` so Python producers that route
//!   through the queue's exchange find it, and rotates queues after each delivery like
//!   kombu's round-robin cycle so no queue starves another.
//! - Every operation has a timeout and is retried across a Redis restart
//!   ([`RedisConnection::run`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::connection::{RedisConnection, Subscription};
use super::kombu::{self, DeliveryInfo};
use crate::broker::{Acknowledger, Broker, Consumer, Control, Delivery};
use crate::error::{ErrorKind, Result};
use crate::protocol::RawMessage;

/// Pops up to ARGV[2] messages from KEYS (in order: the first key is drained before the
/// next is touched) and records each as unacknowledged, atomically. ARGV[1] is the fetch
/// time in seconds. Returns a flat list of `key, envelope, flag` triples; the flag is
/// `malformed` for a message whose envelope cannot be read, which is not recorded: no
/// consumer could ever acknowledge it.
/// The most messages one fetch takes. A quarter of the prefetch window otherwise; but the
/// window grows by one for each task held for its ETA, and a fetch of tens of thousands
/// of messages (tens of megabytes of reply and decoded deliveries at once) would leave
/// that much heap behind for good.
const MAX_FETCH: usize = 1000;

/// A fetch reply this large (bytes) is followed by a new connection, to give back the
/// memory its read buffer grew by: the threshold above which glibc's allocator (as the
/// worker sets it) returns freed blocks to the system at once.
const LARGE_REPLY: usize = 1024 * 1024;

const FETCH_SCRIPT: &str = r#"
local limit = tonumber(ARGV[2]) or 1
local fetched = {}
local count = 0
for _, key in ipairs(KEYS) do
  while count < limit do
    local message = redis.call('RPOP', key)
    if not message then break end
    count = count + 1
    local ok, envelope = pcall(cjson.decode, message)
    if not ok or type(envelope) ~= 'table' or type(envelope['properties']) ~= 'table'
       or type(envelope['properties']['delivery_tag']) ~= 'string' then
      table.insert(fetched, key); table.insert(fetched, message); table.insert(fetched, 'malformed')
    else
      local properties = envelope['properties']
      local info = properties['delivery_info']
      local exchange, routing_key = '', key
      if type(info) == 'table' then
        exchange = info['exchange'] or ''
        routing_key = info['routing_key'] or key
      end
      local tag = properties['delivery_tag']
      redis.call('ZADD', 'unacked_index', ARGV[1], tag)
      redis.call('HSET', 'unacked', tag,
        '[' .. message .. ', ' .. cjson.encode(exchange) .. ', ' .. cjson.encode(routing_key) .. ']')
      table.insert(fetched, key); table.insert(fetched, message); table.insert(fetched, '')
    end
  end
  if count >= limit then break end
end
return fetched
"#;

/// Requeues an unacked message at the back of its queue (`QoS.reject(requeue=True)` →
/// `restore_by_tag(leftmost=True)`), taking it from its `unacked` record as kombu does, so
/// a consumer need not keep a copy. ARGV: the tag, and the envelope's length: the fetch
/// script wrote the record as `[<envelope>, <exchange>, <routing key>]`, so the envelope
/// is pushed back byte for byte. Returns 0 when the record is gone (restored meanwhile).
const REQUEUE_SCRIPT: &str = r#"
local record = redis.call('HGET', 'unacked', ARGV[1])
redis.call('ZREM', 'unacked_index', ARGV[1])
redis.call('HDEL', 'unacked', ARGV[1])
if not record then
  return 0
end
local length = tonumber(ARGV[2]) or 0
local envelope = string.sub(record, 2, length + 1)
if string.sub(record, 1, 1) ~= '[' or string.sub(record, length + 2, length + 2) ~= ',' then
  local ok, parts = pcall(cjson.decode, record)
  if not ok or type(parts) ~= 'table' or type(parts[1]) ~= 'table' then
    return 0
  end
  envelope = cjson.encode(parts[1])
end
redis.call('LPUSH', KEYS[1], envelope)
return 1
"#;

/// Restores messages unacknowledged for longer than the visibility timeout to the head of
/// their queue (`QoS.restore_visible`): under kombu's `unacked_mutex`, with kombu's
/// `redelivered` flags, with RPUSH so they are taken next. ARGV: cutoff time, mutex token,
/// separator. Returns what it restored as `queue, count, oldest score` triples (strings);
/// nothing when another consumer holds the mutex.
const RESTORE_SCRIPT: &str = r#"
if not redis.call('SET', 'unacked_mutex', ARGV[2], 'NX', 'PX', 300000) then
  return {}
end
local entries = redis.call('ZRANGEBYSCORE', 'unacked_index', '-inf', ARGV[1], 'WITHSCORES')
local restored = {}
local order = {}
for i = 1, #entries, 2 do
  local tag = entries[i]
  local score = tonumber(entries[i + 1])
  local record = redis.call('HGET', 'unacked', tag)
  redis.call('ZREM', 'unacked_index', tag)
  redis.call('HDEL', 'unacked', tag)
  if record then
    local ok, parts = pcall(cjson.decode, record)
    if ok and type(parts) == 'table' and type(parts[1]) == 'table' then
      local envelope = parts[1]
      local queue = parts[3]
      if type(envelope['headers']) ~= 'table' then envelope['headers'] = {} end
      envelope['headers']['redelivered'] = true
      local properties = envelope['properties']
      if type(properties['delivery_info']) ~= 'table' then properties['delivery_info'] = {} end
      properties['delivery_info']['redelivered'] = true
      local priority = tonumber(properties['priority']) or 0
      local key = queue
      if priority >= 9 then key = queue .. ARGV[3] .. '9'
      elseif priority >= 6 then key = queue .. ARGV[3] .. '6'
      elseif priority >= 3 then key = queue .. ARGV[3] .. '3' end
      redis.call('RPUSH', key, cjson.encode(envelope))
      local name = tostring(queue)
      local seen = restored[name]
      if not seen then
        seen = {0, score}
        restored[name] = seen
        table.insert(order, name)
      end
      seen[1] = seen[1] + 1
      if score < seen[2] then seen[2] = score end
    end
  end
end
if redis.call('GET', 'unacked_mutex') == ARGV[2] then
  redis.call('DEL', 'unacked_mutex')
end
local reply = {}
for _, name in ipairs(order) do
  table.insert(reply, name)
  table.insert(reply, tostring(restored[name][1]))
  table.insert(reply, tostring(restored[name][2]))
end
return reply
"#;

/// kombu's default `visibility_timeout`.
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest pause between two sweeps for messages of dead consumers. Shorter
/// visibility timeouts sweep more often (half the timeout, at least a second apart), so
/// a message is restored soon after its timeout passes.
const MAX_RESTORE_INTERVAL: Duration = Duration::from_secs(60);

/// The longest pause between two refreshes of the `unacked_index` scores of held messages.
/// Shorter visibility timeouts refresh more often: four times per timeout.
const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// How many `unacked_index` entries one `ZADD` refreshes.
const REFRESH_CHUNK: usize = 1000;

/// Longest pause between fetch attempts on idle queues.
const MAX_IDLE_POLL: Duration = Duration::from_millis(50);

/// A Redis broker.
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
    visibility_timeout: Duration,
}

#[derive(Clone)]
struct Shared {
    connection: RedisConnection,
    fetch: redis::Script,
    requeue: redis::Script,
    restore: redis::Script,
    /// Delivery tags handed out by this broker and not settled yet: the messages a worker
    /// holds, whose `unacked_index` scores its consumers keep fresh. Each tag is the one
    /// its acknowledger holds, not a copy.
    outstanding: Arc<Mutex<HashSet<Arc<str>>>>,
    /// The list keys acknowledgers requeue to, one of each, shared by them all: a worker
    /// holding 100,000 tasks for their ETA otherwise holds as many copies.
    queue_keys: Arc<Mutex<HashSet<Arc<str>>>>,
}

impl Shared {
    fn outstanding(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        // Single inserts and removals: a poisoned lock still holds a consistent set.
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The list key of `queue` at `priority`, shared with the other acknowledgers.
    fn queue_key(&self, queue: &str, priority: u8) -> Arc<str> {
        let key = kombu::priority_key(queue, priority);
        // Single lookups and inserts: a poisoned lock still holds a consistent set.
        let mut keys = self.queue_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = keys.get(key.as_str()) {
            return known.clone();
        }
        let key: Arc<str> = key.into();
        keys.insert(key.clone());
        key
    }
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.shared.connection.display())
            .finish()
    }
}

impl RedisBroker {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`). A
    /// `?visibility_timeout=<seconds>` query parameter sets [`Self::visibility_timeout`].
    ///
    /// Celery's other Redis URL forms work too:
    ///
    /// - A failover list, `redis://a:6379/0;redis://b:6379/0`: the first server that
    ///   answers is used; when it is lost and does not answer again, the next one in
    ///   round-robin order (kombu's `failover_strategy`). Every server uses the same
    ///   database number; what was queued on a lost server stays there.
    /// - Redis Sentinel, `sentinel://[:password@]s1:26379/0;sentinel://s2:26379/0?master_name=mymaster`:
    ///   the sentinels say where the master named by `master_name` (kombu's transport
    ///   option) is; the password and database number are the master's, as in kombu
    ///   (`?sentinel_password=` for sentinels that want one: kombu's `sentinel_kwargs`).
    ///   After a failover, or when the master in use answers `READONLY`, the sentinels are
    ///   asked again and the new master is used. A publish returns once a replica has the
    ///   message too (`WAIT 1`), so a failover loses no task sent before it.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(url, None).await
    }

    /// As [`Self::connect`], with the master's name for a `sentinel://` URL given apart.
    pub(crate) async fn open(url: &str, master_name: Option<&str>) -> Result<Self> {
        let visibility_timeout = super::connection::seconds_in_query(url, "visibility_timeout")?
            .unwrap_or(DEFAULT_VISIBILITY_TIMEOUT);
        Ok(RedisBroker {
            shared: Arc::new(Shared {
                connection: RedisConnection::open(url, ErrorKind::Broker, master_name).await?,
                fetch: redis::Script::new(FETCH_SCRIPT),
                requeue: redis::Script::new(REQUEUE_SCRIPT),
                restore: redis::Script::new(RESTORE_SCRIPT),
                outstanding: Default::default(),
                queue_keys: Default::default(),
            }),
            visibility_timeout,
        })
    }

    /// Sets how long a fetched message may stay unacknowledged before any consumer
    /// restores it (kombu's `visibility_timeout`, default one hour). Tasks that hold a
    /// message longer (long ETAs with late acks) must fit inside it or run twice.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// The visibility timeout this broker restores unacknowledged messages after.
    pub fn configured_visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    /// Sets how long an operation is retried while Redis is unreachable (default 20 s).
    /// Publishing, fetching and acknowledging ride out a Redis restart shorter than this.
    pub fn retry_window(mut self, window: Duration) -> Self {
        Arc::make_mut(&mut self.shared)
            .connection
            .set_retry_window(window);
        self
    }

    /// Restores every message unacknowledged for longer than the visibility timeout;
    /// returns how many (0 when another consumer holds the sweep's mutex).
    pub async fn restore_visible(&self) -> Result<usize> {
        let shared = &self.shared;
        let now = now_seconds();
        let cutoff = now - self.visibility_timeout.as_secs_f64();
        let token = uuid::Uuid::new_v4().to_string();
        let restored: Vec<String> = shared
            .connection
            .run("restore unacknowledged tasks", |mut c| {
                let mut invocation = shared.restore.prepare_invoke();
                invocation
                    .arg(cutoff)
                    .arg(&token)
                    .arg(kombu::PRIORITY_SEPARATOR);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        let mut total = 0;
        for entry in restored.chunks_exact(3) {
            let (queue, count) = (&entry[0], entry[1].parse::<usize>().unwrap_or(0));
            let age = entry[2]
                .parse::<f64>()
                .map_or(0.0, |oldest| (now - oldest).max(0.0));
            total += count;
            tracing::warn!(
                %queue,
                restored = count,
                unacknowledged_for_s = age.round(),
                visibility_timeout_s = self.visibility_timeout.as_secs_f64(),
                "restored {count} task(s) to queue '{queue}' left unacknowledged for up to \
                 {age:.0}s, longer than the visibility timeout ({}s): the consumer that took \
                 them stopped or lost Redis without settling them",
                self.visibility_timeout.as_secs_f64()
            );
        }
        Ok(total)
    }

    /// Re-scores the `unacked_index` entries of the messages this broker's consumers still
    /// hold with the current time, so that no sweep (ours or kombu's) takes them for a lost
    /// consumer's. `XX`: an entry settled meanwhile is not brought back.
    async fn refresh_outstanding(&self) -> Result<()> {
        let tags: Vec<Arc<str>> = self.shared.outstanding().iter().cloned().collect();
        for chunk in tags.chunks(REFRESH_CHUNK) {
            let now = now_seconds();
            let mut command = redis::cmd("ZADD");
            command.arg("unacked_index").arg("XX");
            for tag in chunk {
                command.arg(now).arg(&**tag);
            }
            self.shared
                .connection
                .run("refresh held tasks", |mut c| {
                    let command = &command;
                    async move { command.query_async::<i64>(&mut c).await }
                })
                .await?;
        }
        Ok(())
    }

    /// Publishes `messages` to `queue` in one round trip: one `LPUSH` per priority bucket,
    /// then one wake-up. Order within a bucket is kept.
    pub async fn publish_many(&self, queue: &str, messages: &[RawMessage]) -> Result<()> {
        let info = DeliveryInfo {
            exchange: String::new(),
            routing_key: queue.to_owned(),
        };
        let mut buckets: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for message in messages {
            let key = kombu::priority_key(queue, message.properties.priority.unwrap_or(0));
            let tag = uuid::Uuid::new_v4().to_string();
            let envelope = kombu::wrap(message, &info, &tag);
            match buckets.iter_mut().find(|(k, _)| *k == key) {
                Some((_, envelopes)) => envelopes.push(envelope),
                None => buckets.push((key, vec![envelope])),
            }
        }
        if buckets.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (key, envelopes) in &buckets {
            pipeline.cmd("LPUSH").arg(key).arg(envelopes).ignore();
        }
        pipeline
            .cmd("PUBLISH")
            .arg(self.wake_channel(queue))
            .arg("")
            .ignore();
        self.shared
            .connection
            .run_replicated("publish tasks", |mut c| {
                let pipeline = &pipeline;
                async move { pipeline.query_async::<()>(&mut c).await }
            })
            .await
    }

    /// The pub/sub channel announcing new messages in `queue` to idle consumers.
    fn wake_channel(&self, queue: &str) -> String {
        format!("/{}.celerity.wake.{queue}", self.shared.connection.db())
    }
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Broker for RedisBroker {
    fn publish<'a>(&'a self, queue: &'a str, message: RawMessage) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.publish_many(queue, std::slice::from_ref(&message))
                .await
        })
    }

    fn publish_batch<'a>(
        &'a self,
        queue: &'a str,
        messages: Vec<RawMessage>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.publish_many(queue, &messages).await })
    }

    fn consume<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<Box<dyn Consumer>>> {
        Box::pin(async move {
            self.bind(queues).await?;
            let channels = queues.iter().map(|q| self.wake_channel(q)).collect();
            let wake = Subscription::open(self.shared.connection.clone(), channels).await?;
            let broker = self.clone();
            let interval =
                (self.visibility_timeout / 2).clamp(Duration::from_secs(1), MAX_RESTORE_INTERVAL);
            let sweeper = tokio::spawn(async move {
                loop {
                    if let Err(error) = broker.restore_visible().await {
                        tracing::warn!(%error, "could not sweep for unacknowledged tasks");
                    }
                    tokio::time::sleep(interval).await;
                }
            });
            let broker = self.clone();
            let every = (self.visibility_timeout / 4)
                .clamp(Duration::from_millis(250), MAX_REFRESH_INTERVAL);
            let refresher = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(error) = broker.refresh_outstanding().await {
                        tracing::warn!(%error, "could not refresh the unacknowledged entries of held tasks");
                    }
                }
            });
            let consumer = RedisConsumer {
                broker: self.clone(),
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
        })
    }

    fn describe(&self) -> String {
        self.shared.connection.display().to_owned()
    }

    fn broadcast<'a>(&'a self, command: Control) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Control::Revoke { task_ids } = command;
            let body = crate::pidbox::MailboxCommand::revoke(&task_ids);
            let payload = super::mailbox::broadcast_envelope(&body);
            let channel = super::mailbox::channel(self.shared.connection.db());
            self.shared
                .connection
                .run("broadcast a control command", |mut c| {
                    let mut command = redis::cmd("PUBLISH");
                    command.arg(&channel).arg(&payload);
                    async move { command.query_async::<i64>(&mut c).await }
                })
                .await?;
            Ok(())
        })
    }

    fn mailbox<'a>(
        &'a self,
        _node: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn crate::pidbox::Mailbox>>>> {
        Box::pin(async move {
            let mailbox =
                super::mailbox::RedisMailbox::open(self.shared.connection.clone()).await?;
            Ok(Some(Box::new(mailbox) as Box<dyn crate::pidbox::Mailbox>))
        })
    }
}

impl RedisBroker {
    /// Registers each queue in kombu's binding table of the exchange of the same name
    /// (`Channel._queue_bind`: member `routing_key␆␖pattern␆␖queue`), as a Python
    /// worker declaring the queue does, so Python producers route to it.
    async fn bind(&self, queues: &[String]) -> Result<()> {
        let mut pipeline = redis::pipe();
        for queue in queues {
            let sep = kombu::PRIORITY_SEPARATOR;
            let member = format!("{queue}{sep}{sep}{queue}");
            pipeline
                .sadd(format!("_kombu.binding.{queue}"), &member)
                .ignore()
                .sadd(format!("_kombu.binding_permanent.{queue}"), &member)
                .ignore();
        }
        self.shared
            .connection
            .run("register queue bindings", |mut c| {
                let pipeline = &pipeline;
                async move { pipeline.query_async::<()>(&mut c).await }
            })
            .await
    }
}

struct RedisConsumer {
    broker: RedisBroker,
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
                .run("acknowledge a task", |mut c| {
                    let pipeline = &pipeline;
                    async move { pipeline.query_async::<()>(&mut c).await }
                })
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
