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

use futures::future::BoxFuture;

use super::connection::RedisConnection;
use super::kombu::{self, DeliveryInfo};
use super::scripts::{FETCH_SCRIPT, REQUEUE_SCRIPT, RESTORE_SCRIPT};
use crate::broker::{Broker, Consumer, Control};
use crate::error::{ErrorKind, Result};
use crate::events::Event;
use crate::protocol::RawMessage;

/// kombu's default `visibility_timeout`.
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest pause between two sweeps for messages of dead consumers. Shorter
/// visibility timeouts sweep more often (half the timeout, at least a second apart), so
/// a message is restored soon after its timeout passes.
pub(super) const MAX_RESTORE_INTERVAL: Duration = Duration::from_secs(60);

/// The longest pause between two refreshes of the `unacked_index` scores of held messages.
/// Shorter visibility timeouts refresh more often: four times per timeout.
pub(super) const MAX_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// How many `unacked_index` entries one `ZADD` refreshes.
const REFRESH_CHUNK: usize = 1000;

/// A Redis broker.
#[derive(Clone)]
pub struct RedisBroker {
    pub(super) shared: Arc<Shared>,
    pub(super) visibility_timeout: Duration,
}

#[derive(Clone)]
pub(super) struct Shared {
    pub(super) connection: RedisConnection,
    pub(super) fetch: redis::Script,
    pub(super) requeue: redis::Script,
    pub(super) restore: redis::Script,
    /// Delivery tags handed out by this broker and not settled yet: the messages a worker
    /// holds, whose `unacked_index` scores its consumers keep fresh. Each tag is the one
    /// its acknowledger holds, not a copy.
    pub(super) outstanding: Arc<Mutex<HashSet<Arc<str>>>>,
    /// The list keys acknowledgers requeue to, one of each, shared by them all: a worker
    /// holding 100,000 tasks for their ETA otherwise holds as many copies.
    pub(super) queue_keys: Arc<Mutex<HashSet<Arc<str>>>>,
    /// The connection monitoring events go out on, opened at the first: a burst of events
    /// then never delays a fetch or an acknowledgement.
    pub(super) events: Arc<tokio::sync::OnceCell<RedisConnection>>,
}

impl Shared {
    pub(super) fn outstanding(&self) -> MutexGuard<'_, HashSet<Arc<str>>> {
        // Single inserts and removals: a poisoned lock still holds a consistent set.
        self.outstanding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The list key of `queue` at `priority`, shared with the other acknowledgers.
    pub(super) fn queue_key(&self, queue: &str, priority: u8) -> Arc<str> {
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
                events: Default::default(),
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
    pub(super) async fn refresh_outstanding(&self) -> Result<()> {
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
    pub(super) fn wake_channel(&self, queue: &str) -> String {
        format!("/{}.celerity.wake.{queue}", self.shared.connection.db())
    }
}

pub(super) fn now_seconds() -> f64 {
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
        Box::pin(super::consumer::consume(self, queues))
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

    fn publish_events<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let connection = self
                .shared
                .events
                .get_or_try_init(|| self.shared.connection.separate())
                .await?;
            super::events::publish(connection, events).await
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
    pub(super) async fn bind(&self, queues: &[String]) -> Result<()> {
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
            .run_pipeline("register queue bindings", &pipeline)
            .await
    }
}
