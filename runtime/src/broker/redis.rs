//! The Redis broker, sharing queues with Python Celery through kombu's key layout.
//!
//! - Publishing `LPUSH`es kombu's envelope onto the queue's priority-bucket list.
//! - Fetching pops and records the message in `unacked` / `unacked_index` in one Lua
//!   script, so no crash can lose a message between the two. kombu's `BRPOP` followed by
//!   `MULTI` can.
//! - Acknowledging removes it from both. Rejecting with requeue pushes it back.
//! - A message left unacknowledged longer than the visibility timeout (a dead consumer's)
//!   is restored by the sweep in [`RedisBroker::restore_visible`], with kombu's rules and
//!   its `unacked_mutex`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;

use super::kombu::{self, DeliveryInfo};
use super::{Acknowledger, Broker, Consumer, Control, ControlStream, Delivery};
use crate::backend::redis::{connect, open_client, redact, redis_error};
use crate::error::{ErrorKind, Result};
use crate::protocol::RawMessage;

/// Pops the first message of KEYS (in order) and records it as unacknowledged, atomically.
/// ARGV[1] is the fetch time in seconds. Returns `{key, envelope}`; a message whose
/// envelope cannot be read is returned with `malformed` and not recorded: no consumer
/// could ever acknowledge it.
const FETCH_SCRIPT: &str = r#"
for _, key in ipairs(KEYS) do
  local message = redis.call('RPOP', key)
  if message then
    local ok, envelope = pcall(cjson.decode, message)
    if not ok or type(envelope) ~= 'table' or type(envelope['properties']) ~= 'table'
       or type(envelope['properties']['delivery_tag']) ~= 'string' then
      return {key, message, 'malformed'}
    end
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
    return {key, message}
  end
end
return false
"#;

/// Acknowledges: forgets the unacked record (`QoS.ack` → `_remove_from_indices`).
const ACK_SCRIPT: &str = r#"
redis.call('ZREM', 'unacked_index', ARGV[1])
return redis.call('HDEL', 'unacked', ARGV[1])
"#;

/// Requeues an unacked message at the back of its queue (`QoS.reject(requeue=True)` →
/// `restore_by_tag(leftmost=True)`).
const REQUEUE_SCRIPT: &str = r#"
local record = redis.call('HGET', 'unacked', ARGV[1])
redis.call('ZREM', 'unacked_index', ARGV[1])
redis.call('HDEL', 'unacked', ARGV[1])
if record then
  redis.call('LPUSH', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Restores messages unacknowledged for longer than the visibility timeout to the head of
/// their queue (`QoS.restore_visible`): under kombu's `unacked_mutex`, with kombu's
/// `redelivered` flags, with RPUSH so they are taken next. ARGV: cutoff time, mutex token,
/// separator. Returns how many were restored.
const RESTORE_SCRIPT: &str = r#"
if not redis.call('SET', 'unacked_mutex', ARGV[2], 'NX', 'PX', 300000) then
  return -1
end
local tags = redis.call('ZRANGEBYSCORE', 'unacked_index', '-inf', ARGV[1])
local restored = 0
for _, tag in ipairs(tags) do
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
      restored = restored + 1
    end
  end
end
if redis.call('GET', 'unacked_mutex') == ARGV[2] then
  redis.call('DEL', 'unacked_mutex')
end
return restored
"#;

/// kombu's default `visibility_timeout`.
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often each consumer sweeps for messages of dead consumers (kombu: about 100 s).
const RESTORE_INTERVAL: Duration = Duration::from_secs(60);

/// Longest pause between fetch attempts on idle queues.
const MAX_IDLE_POLL: Duration = Duration::from_millis(50);

/// A Redis broker.
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
    visibility_timeout: Duration,
}

struct Shared {
    client: redis::Client,
    connection: ConnectionManager,
    fetch: redis::Script,
    ack: redis::Script,
    requeue: redis::Script,
    restore: redis::Script,
    db: i64,
    display: String,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.shared.display)
            .finish()
    }
}

impl RedisBroker {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`).
    pub async fn connect(url: &str) -> Result<Self> {
        let client = open_client(url)?;
        let db = client.get_connection_info().redis_settings().db();
        let connection = connect(&client, ErrorKind::Broker).await?;
        Ok(RedisBroker {
            shared: Arc::new(Shared {
                client,
                connection,
                fetch: redis::Script::new(FETCH_SCRIPT),
                ack: redis::Script::new(ACK_SCRIPT),
                requeue: redis::Script::new(REQUEUE_SCRIPT),
                restore: redis::Script::new(RESTORE_SCRIPT),
                db,
                display: redact(url),
            }),
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
        })
    }

    /// Sets how long a fetched message may stay unacknowledged before any consumer
    /// restores it (kombu's `visibility_timeout`, default one hour). Tasks that hold a
    /// message longer (long ETAs with late acks) must fit inside it or run twice.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// Restores every message unacknowledged for longer than the visibility timeout;
    /// returns how many (0 when another consumer holds the sweep's mutex).
    pub async fn restore_visible(&self) -> Result<usize> {
        let shared = &self.shared;
        let cutoff = now_seconds() - self.visibility_timeout.as_secs_f64();
        let mut connection = shared.connection.clone();
        let restored: i64 = shared
            .restore
            .arg(cutoff)
            .arg(uuid::Uuid::new_v4().to_string())
            .arg(kombu::PRIORITY_SEPARATOR)
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error(
                "restore unacknowledged tasks",
                ErrorKind::Broker,
            ))?;
        if restored > 0 {
            tracing::warn!(restored, "restored unacknowledged tasks of a lost consumer");
        }
        Ok(usize::try_from(restored).unwrap_or(0))
    }

    /// The pub/sub channel of control broadcasts. Celery's pidbox uses `/<db>.celery.pidbox`
    /// with its own envelope; Celerity's revoke travels on a channel of its own until the
    /// pidbox protocol is spoken.
    fn control_channel(&self) -> String {
        format!("/{}.celerity.control", self.shared.db)
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
            let info = DeliveryInfo {
                exchange: String::new(),
                routing_key: queue.to_owned(),
            };
            let tag = uuid::Uuid::new_v4().to_string();
            let envelope = kombu::wrap(&message, &info, &tag);
            let key = kombu::priority_key(queue, message.properties.priority.unwrap_or(0));
            let mut connection = self.shared.connection.clone();
            redis::cmd("LPUSH")
                .arg(key)
                .arg(envelope)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(redis_error("publish a task", ErrorKind::Broker))?;
            Ok(())
        })
    }

    fn consume<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<Box<dyn Consumer>>> {
        let broker = self.clone();
        let sweeper = tokio::spawn(async move {
            loop {
                if let Err(error) = broker.restore_visible().await {
                    tracing::warn!(%error, "could not sweep for unacknowledged tasks");
                }
                tokio::time::sleep(RESTORE_INTERVAL).await;
            }
        });
        let consumer = RedisConsumer {
            broker: self.clone(),
            keys: kombu::consume_keys(queues),
            idle: Duration::ZERO,
            sweeper,
        };
        Box::pin(async move { Ok(Box::new(consumer) as Box<dyn Consumer>) })
    }

    fn describe(&self) -> String {
        self.shared.display.clone()
    }

    fn broadcast<'a>(&'a self, command: Control) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Control::Revoke { task_ids } = command;
            let payload =
                serde_json::json!({"method": "revoke", "arguments": {"task_id": task_ids}})
                    .to_string();
            let mut connection = self.shared.connection.clone();
            redis::cmd("PUBLISH")
                .arg(self.control_channel())
                .arg(payload)
                .query_async::<i64>(&mut connection)
                .await
                .map_err(redis_error(
                    "broadcast a control command",
                    ErrorKind::Broker,
                ))?;
            Ok(())
        })
    }

    fn control<'a>(&'a self) -> BoxFuture<'a, Result<Box<dyn ControlStream>>> {
        Box::pin(async move {
            let mut pubsub = self
                .shared
                .client
                .get_async_pubsub()
                .await
                .map_err(redis_error(
                    "subscribe to control commands",
                    ErrorKind::Broker,
                ))?;
            pubsub
                .subscribe(self.control_channel())
                .await
                .map_err(redis_error(
                    "subscribe to control commands",
                    ErrorKind::Broker,
                ))?;
            Ok(Box::new(RedisControl {
                stream: pubsub.into_on_message(),
            }) as Box<dyn ControlStream>)
        })
    }
}

struct RedisControl {
    stream: redis::aio::PubSubStream,
}

impl ControlStream for RedisControl {
    fn next(&mut self) -> BoxFuture<'_, Option<Control>> {
        Box::pin(async move {
            while let Some(message) = self.stream.next().await {
                let Ok(command) =
                    serde_json::from_slice::<serde_json::Value>(message.get_payload_bytes())
                else {
                    tracing::warn!("ignoring a control message that is not JSON");
                    continue;
                };
                if command["method"] == "revoke" {
                    let ids = command["arguments"]["task_id"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let task_ids = ids
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    return Some(Control::Revoke { task_ids });
                }
            }
            None
        })
    }
}

struct RedisConsumer {
    broker: RedisBroker,
    keys: Vec<String>,
    /// Current pause between attempts on empty queues: 0 after a delivery, doubling to
    /// `MAX_IDLE_POLL` while the queues stay empty.
    idle: Duration,
    /// The periodic `restore_visible` sweep, stopped with the consumer.
    sweeper: tokio::task::JoinHandle<()>,
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl RedisConsumer {
    async fn fetch(&mut self) -> Result<Option<Delivery>> {
        let shared = &self.broker.shared;
        let mut connection = shared.connection.clone();
        let mut invocation = shared.fetch.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation.arg(now_seconds());
        let fetched: Option<Vec<Vec<u8>>> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error("fetch a task", ErrorKind::Broker))?;
        let Some(mut parts) = fetched else {
            return Ok(None);
        };
        let malformed = parts.len() == 3;
        let envelope = parts.swap_remove(1);
        let queue = kombu::queue_of_key(&String::from_utf8_lossy(&parts[0])).to_owned();
        if malformed {
            tracing::warn!(%queue, bytes = envelope.len(), "dropped a message that is not a kombu envelope");
            return Ok(Some(malformed_delivery(queue)));
        }
        match kombu::unwrap(&envelope) {
            Ok(unwrapped) => {
                let acker = RedisAcker {
                    broker: self.broker.clone(),
                    tag: Some(unwrapped.delivery_tag),
                    queue_key: kombu::priority_key(
                        &queue,
                        unwrapped.message.properties.priority.unwrap_or(0),
                    ),
                    envelope,
                };
                Ok(Some(Delivery::new(
                    unwrapped.message,
                    queue,
                    unwrapped.redelivered,
                    Box::new(acker),
                )))
            }
            Err(error) => {
                // Recorded by the script (it had a tag) but unreadable here: acknowledge it
                // away rather than let the sweep restore it forever.
                tracing::warn!(%error, %queue, "dropped an unreadable envelope");
                Ok(Some(malformed_delivery(queue)))
            }
        }
    }
}

/// A delivery standing for a message that could not be read: the worker logs and
/// rejects it like any other malformed message.
fn malformed_delivery(queue: String) -> Delivery {
    let message = RawMessage {
        headers: Default::default(),
        properties: Default::default(),
        content_type: "application/octet-stream".into(),
        content_encoding: "binary".into(),
        body: Vec::new(),
    };
    Delivery::new(message, queue, false, Box::new(Settled))
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
                match self.fetch().await {
                    Ok(Some(delivery)) => {
                        self.idle = Duration::ZERO;
                        return Ok(delivery);
                    }
                    Ok(None) => {
                        self.idle = (self.idle * 2).clamp(Duration::from_millis(1), MAX_IDLE_POLL);
                        tokio::time::sleep(self.idle).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        })
    }
}

struct RedisAcker {
    broker: RedisBroker,
    /// `Some` until settled.
    tag: Option<String>,
    queue_key: String,
    envelope: Vec<u8>,
}

impl Acknowledger for RedisAcker {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let tag = self.tag.take();
        let shared = self.broker.shared.clone();
        Box::pin(async move {
            let Some(tag) = tag else { return Ok(()) };
            let mut connection = shared.connection.clone();
            shared
                .ack
                .arg(tag)
                .invoke_async::<i64>(&mut connection)
                .await
                .map_err(redis_error("acknowledge a task", ErrorKind::Broker))?;
            Ok(())
        })
    }

    fn reject(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
        if !requeue {
            // kombu: reject without requeue is an ack.
            return self.ack();
        }
        let tag = self.tag.take();
        let shared = self.broker.shared.clone();
        let key = std::mem::take(&mut self.queue_key);
        let envelope = std::mem::take(&mut self.envelope);
        Box::pin(async move {
            let Some(tag) = tag else { return Ok(()) };
            let mut connection = shared.connection.clone();
            shared
                .requeue
                .key(key)
                .arg(tag)
                .arg(envelope)
                .invoke_async::<i64>(&mut connection)
                .await
                .map_err(redis_error("requeue a task", ErrorKind::Broker))?;
            Ok(())
        })
    }
}
// A delivery dropped unsettled stays in `unacked` and comes back after the visibility
// timeout, as with kombu: that is what makes a killed worker lose nothing.
