//! One Redis connection shared by the broker and the result backend: opened from a URL,
//! every operation bounded by a timeout, and retried across a Redis restart, a failover
//! list's switch to its next server, or a Sentinel failover.
//!
//! The `ConnectionManager` reconnects on its own after a dropped connection, but the
//! operation that saw the drop still fails. [`RedisConnection::run`] retries such
//! operations with backoff for a bounded window (Celery's Redis backend retries about
//! 20 times a second apart, `celery/backends/redis.py::retry_policy`), so a producer or a
//! worker rides out a restart instead of failing the task it was handling. When the URL
//! names more than one server ([`Endpoints`]), a failed operation also asks which server to
//! use now, and moves there: the next of a failover list when the one in use does not
//! answer, or the master Sentinel names when the one in use is gone or answers `READONLY`
//! (demoted to a replica).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};

use super::endpoints::{Endpoint, Endpoints, bounded, query_value, role};
use crate::app::redact_url as redact;
use crate::backoff::Backoff;
use crate::error::{Error, ErrorKind, Result};

/// How long one Redis operation may take before it fails.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an operation is retried while Redis is unreachable, by default.
const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(20);

/// Between retries of an operation, and of a subscription.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));

/// The shortest pause between two searches for another server: operations failing
/// together search once.
const SEARCH_INTERVAL: Duration = Duration::from_millis(250);

/// How long a write waits for a replica to confirm it (`WAIT 1 <ms>`) in a Sentinel
/// deployment.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// How long a master's count of replicas is trusted before it is asked again (`ROLE`).
const REPLICA_RECOUNT: Duration = Duration::from_secs(1);

/// A shared, reconnecting Redis connection.
#[derive(Clone)]
pub(crate) struct RedisConnection {
    link: Arc<Link>,
    kind: ErrorKind,
    retry_window: Duration,
}

/// What every clone of a connection shares: where it may go, and where it is.
struct Link {
    /// Shared with the connections [`separate`](RedisConnection::separate) opens.
    endpoints: Arc<Endpoints>,
    display: String,
    current: Mutex<Arc<Current>>,
    /// Held while searching for another server, with when the last search began.
    search: tokio::sync::Mutex<Option<Instant>>,
    /// How many replicas the master had when last counted, and when (Sentinel only).
    replicas: Mutex<Option<(usize, Instant)>>,
}

impl Link {
    fn new(endpoints: Arc<Endpoints>, display: String, current: Current) -> Link {
        Link {
            endpoints,
            display,
            current: Mutex::new(Arc::new(current)),
            search: tokio::sync::Mutex::new(Some(Instant::now())),
            replicas: Mutex::new(None),
        }
    }
}

/// The server in use.
struct Current {
    endpoint: usize,
    address: String,
    client: redis::Client,
    manager: ConnectionManager,
    /// Counts the moves to another server, so a search starts only from the server whose
    /// operation failed.
    generation: u64,
}

impl RedisConnection {
    /// Opens `url` (one URL, a `;`-separated failover list, or `sentinel://` URLs, for which
    /// `master_name` wins over the URL's `?master_name=`); errors are reported as `kind`
    /// (broker or backend).
    pub(crate) async fn open(
        url: &str,
        kind: ErrorKind,
        master_name: Option<&str>,
    ) -> Result<Self> {
        let (endpoints, display) = Endpoints::parse(url, master_name)?;
        let unreachable = |e: redis::RedisError| {
            Error::new(kind, format!("redis: could not connect to {display}")).with_source(e)
        };
        let endpoint = endpoints.first().await.map_err(unreachable)?;
        let manager = manager_for(&endpoint.client, &endpoints)
            .await
            .map_err(unreachable)?;
        let current = Current {
            endpoint: endpoint.index,
            address: endpoint.address,
            client: endpoint.client,
            manager,
            generation: 0,
        };
        let link = Link::new(Arc::new(endpoints), display, current);
        Ok(RedisConnection {
            link: Arc::new(link),
            kind,
            retry_window: DEFAULT_RETRY_WINDOW,
        })
    }

    /// A new connection of its own to the server in use, which moves between servers as
    /// this one does: for traffic that should neither wait behind this connection's
    /// operations nor hold them up (monitoring events).
    pub(crate) async fn separate(&self) -> Result<RedisConnection> {
        let current = self.current();
        let manager = manager_for(&current.client, &self.link.endpoints)
            .await
            .map_err(|e| {
                Error::new(
                    self.kind,
                    format!("redis: could not connect to {}", self.link.display),
                )
                .with_source(e)
            })?;
        let current = Current {
            endpoint: current.endpoint,
            address: current.address.clone(),
            client: current.client.clone(),
            manager,
            generation: 0,
        };
        let link = Link::new(
            self.link.endpoints.clone(),
            self.link.display.clone(),
            current,
        );
        Ok(RedisConnection {
            link: Arc::new(link),
            ..self.clone()
        })
    }

    /// Sets how long operations are retried while Redis is unreachable.
    pub(crate) fn set_retry_window(&mut self, window: Duration) {
        self.retry_window = window;
    }

    /// The URL without its password (a list URL by URL; for Sentinel with the master's
    /// name).
    pub(crate) fn display(&self) -> &str {
        &self.link.display
    }

    /// The database number the URL selects.
    pub(crate) fn db(&self) -> i64 {
        self.link.endpoints.db()
    }

    fn current(&self) -> Arc<Current> {
        // Replaced whole, never left half-written: a poisoned lock still holds a server.
        self.link
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `operation`, retrying it with backoff while the failure is a lost or refused
    /// connection (or, when there is another server to go to, a `READONLY` reply), for at
    /// most the retry window. An operation may therefore run twice when Redis applied it
    /// but its reply was lost: delivery is at least once.
    pub(crate) async fn run<T, F, Fut>(&self, action: &str, operation: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_within(action, self.retry_window, operation).await
    }

    /// Runs `pipeline` as [`Self::run`] runs an operation, its replies ignored.
    pub(crate) async fn run_pipeline(
        &self,
        action: &str,
        pipeline: &redis::Pipeline,
    ) -> Result<()> {
        self.run(action, |mut c| async move {
            pipeline.query_async::<()>(&mut c).await
        })
        .await
    }

    /// As [`Self::run`], retrying for `window` instead of the connection's retry window.
    pub(crate) async fn run_within<T, F, Fut>(
        &self,
        action: &str,
        window: Duration,
        mut operation: F,
    ) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let current = self.current();
            match operation(current.manager.clone()).await {
                Ok(value) => {
                    if attempts > 1 {
                        tracing::info!(action, attempts, "redis is reachable again");
                        crate::broker::reconnected(crate::broker::Transport::Redis);
                    }
                    return Ok(value);
                }
                Err(error) if self.retryable(&error) && started.elapsed() < window => {
                    if attempts == 1 {
                        tracing::warn!(%error, action, "redis is unreachable; retrying");
                    }
                    self.follow(current.generation).await;
                    tokio::time::sleep(BACKOFF.delay(attempts)).await;
                }
                Err(error) => {
                    let message = if attempts > 1 {
                        format!(
                            "redis: could not {action} (gave up after {attempts} attempts in {:.0?})",
                            started.elapsed()
                        )
                    } else {
                        format!("redis: could not {action}")
                    };
                    return Err(Error::new(self.kind, message).with_source(error));
                }
            }
        }
    }

    /// As [`Self::run_within`], for a write that must outlive its master. In a Sentinel
    /// deployment the write counts as done only once a replica has it too (`WAIT 1`): the
    /// replica Sentinel promotes is the most up to date one, so it holds every write a
    /// replica confirmed. A write whose master fails before a replica confirms it is made
    /// again on the new master (at least once). A master with no replica connected has
    /// nothing to wait for; while its replicas are connected but silent the write waits,
    /// for at most `window`, and then fails (it is on the master, not known to be safe).
    /// Elsewhere this is [`Self::run_within`].
    pub(crate) async fn run_replicated_within<T, F, Fut>(
        &self,
        action: &str,
        window: Duration,
        mut operation: F,
    ) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.link.endpoints.replicated() {
            return self.run_within(action, window, operation).await;
        }
        self.run_within(action, window, |manager| {
            let write = operation(manager.clone());
            async move {
                let value = write.await?;
                self.confirm_replicated(manager, window).await?;
                Ok(value)
            }
        })
        .await
    }

    /// As [`Self::run_replicated_within`] with the connection's retry window.
    pub(crate) async fn run_replicated<T, F, Fut>(&self, action: &str, operation: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_replicated_within(action, self.retry_window, operation)
            .await
    }

    /// Waits until a replica has the writes made so far on `manager`'s connection (`WAIT`
    /// counts those), as long as the master has replicas, for at most `window`.
    async fn confirm_replicated(
        &self,
        mut manager: ConnectionManager,
        window: Duration,
    ) -> redis::RedisResult<()> {
        let started = Instant::now();
        let mut rounds = 0u32;
        while self.replicas(&mut manager).await? > 0 {
            let confirmed: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(REPLICA_WAIT.as_millis() as u64)
                .query_async(&mut manager)
                .await?;
            if confirmed > 0 {
                if rounds > 0 {
                    tracing::info!("a Redis replica confirmed the write");
                }
                return Ok(());
            }
            rounds += 1;
            if rounds == 1 {
                tracing::warn!(
                    "no Redis replica confirmed a write within {REPLICA_WAIT:?}; waiting for one"
                );
            }
            if started.elapsed() >= window {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "no Redis replica confirmed the write",
                    format!(
                        "it is on the master, and lost if the master fails before a replica \
                         has it (waited {:.0?})",
                        started.elapsed()
                    ),
                )));
            }
            // Count again: a replica that went away no longer holds the write back.
            *self.link.replicas.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(())
    }

    /// How many replicas the master on `manager` has, counted at most once a
    /// [`REPLICA_RECOUNT`].
    async fn replicas(&self, manager: &mut ConnectionManager) -> redis::RedisResult<usize> {
        let counted = *self.link.replicas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((count, at)) = counted
            && at.elapsed() < REPLICA_RECOUNT
        {
            return Ok(count);
        }
        let count = role(manager).await?.replicas;
        *self.link.replicas.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((count, Instant::now()));
        Ok(count)
    }

    /// Whether an operation that failed with `error` is worth trying again.
    fn retryable(&self, error: &redis::RedisError) -> bool {
        transient(error)
            || (self.link.endpoints.can_move()
                && error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
    }

    /// After an operation on the server of `generation` failed: asks which server to use
    /// now, and moves there if it is another. Nothing changes when no other server is
    /// reachable yet (the operation's retries ask again), when the server in use is still
    /// the one to use (its manager reconnects), or when another operation moved already.
    async fn follow(&self, generation: u64) {
        if !self.link.endpoints.can_move() {
            return;
        }
        let mut last_search = self.link.search.lock().await;
        let current = self.current();
        if current.generation != generation
            || last_search.is_some_and(|at| at.elapsed() < SEARCH_INTERVAL)
        {
            return;
        }
        *last_search = Some(Instant::now());
        let found = match self.link.endpoints.locate(current.endpoint).await {
            Ok(endpoint) if endpoint.address == current.address => return,
            Ok(endpoint) => endpoint,
            Err(error) => {
                tracing::debug!(%error, server = %current.address, "no other Redis server to use yet");
                return;
            }
        };
        match manager_for(&found.client, &self.link.endpoints).await {
            Ok(manager) => self.move_to(found, manager, &current),
            Err(error) => {
                tracing::debug!(%error, server = %found.address, "could not connect to the Redis server found");
            }
        }
    }

    /// Opens a new connection to the server in use for the operations that follow; the
    /// old one closes once the operations still on it end. A connection's read buffer
    /// keeps the size of the largest reply it has read (a 16 MiB message leaves 16 MiB
    /// or more allocated for good), and only a new connection gives that memory back.
    pub(crate) async fn renew(&self) {
        let current = self.current();
        let manager = match manager_for(&current.client, &self.link.endpoints).await {
            Ok(manager) => manager,
            Err(error) => {
                tracing::debug!(%error, "could not open a new Redis connection; keeping the one in use");
                return;
            }
        };
        let mut slot = self.link.current.lock().unwrap_or_else(|p| p.into_inner());
        // Unless another operation moved to another server meanwhile.
        if slot.generation == current.generation {
            *slot = Arc::new(Current {
                endpoint: current.endpoint,
                address: current.address.clone(),
                client: current.client.clone(),
                manager,
                generation: current.generation,
            });
        }
    }

    fn move_to(&self, found: Endpoint, manager: ConnectionManager, from: &Current) {
        tracing::warn!(
            from = %from.address,
            to = %found.address,
            "redis: {} moved to another server",
            self.link.display
        );
        *self.link.replicas.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.link.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(Current {
            endpoint: found.index,
            address: found.address,
            client: found.client,
            manager,
            generation: from.generation + 1,
        });
    }

    /// A new pub/sub connection subscribed to `channels`, retried like [`Self::run`]. With
    /// Sentinel, the master is looked up first: a subscription left on a demoted master
    /// would hear nothing.
    pub(crate) async fn subscribe(&self, action: &str, channels: &[String]) -> Result<PubSub> {
        if self.link.endpoints.replicated() {
            self.follow(self.current().generation).await;
        }
        self.run(action, |_| {
            let client = self.current().client.clone();
            async move {
                let mut pubsub = bounded(OPERATION_TIMEOUT, client.get_async_pubsub()).await?;
                for channel in channels {
                    bounded(OPERATION_TIMEOUT, pubsub.subscribe(channel)).await?;
                }
                Ok(pubsub)
            }
        })
        .await
    }
}

/// A connection manager for `client`, every operation bounded by a timeout. Its own
/// reconnection retries (which operations wait for) are few when there is another server
/// to go to: [`RedisConnection::run`] then learns soon that this one is gone.
async fn manager_for(
    client: &redis::Client,
    endpoints: &Endpoints,
) -> redis::RedisResult<ConnectionManager> {
    let retries = if endpoints.can_move() { 1 } else { 6 };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(OPERATION_TIMEOUT))
        .set_response_timeout(Some(OPERATION_TIMEOUT))
        .set_number_of_retries(retries)
        .set_max_delay(Duration::from_secs(5));
    client.get_connection_manager_with_config(config).await
}

/// A pub/sub subscription that subscribes again whenever its connection drops.
pub(crate) struct Subscription {
    connection: RedisConnection,
    channels: Vec<String>,
    stream: Option<redis::aio::PubSubStream>,
}

impl Subscription {
    /// A subscription to `channels`, subscribed before this returns: messages published
    /// from then on are received.
    pub(crate) async fn open(connection: RedisConnection, channels: Vec<String>) -> Result<Self> {
        let mut subscription = Subscription {
            connection,
            channels,
            stream: None,
        };
        subscription.connect().await?;
        Ok(subscription)
    }

    async fn connect(&mut self) -> Result<()> {
        let pubsub = self
            .connection
            .subscribe("subscribe", &self.channels)
            .await?;
        self.stream = Some(pubsub.into_on_message());
        Ok(())
    }

    /// Subscribes to `channels` instead, on a new connection; on failure the next
    /// [`next`](Self::next) tries again.
    pub(crate) async fn resubscribe(&mut self, channels: Vec<String>) -> Result<()> {
        self.channels = channels;
        self.stream = None;
        self.connect().await
    }

    /// The next message's payload. Resubscribes (with backoff) after a lost connection;
    /// messages published while it was lost are not seen.
    pub(crate) async fn next(&mut self) -> Vec<u8> {
        let mut failures = 0;
        loop {
            if let Some(payload) = self.next_on_this_connection().await {
                return payload;
            }
            tracing::warn!(channels = ?self.channels, "redis subscription lost; subscribing again");
            match self.connect().await {
                Ok(()) => {
                    failures = 0;
                    crate::broker::reconnected(crate::broker::Transport::Redis);
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "could not subscribe; retrying");
                    tokio::time::sleep(BACKOFF.delay(failures)).await;
                }
            }
        }
    }

    /// The next message's payload, or `None` once the connection is lost.
    async fn next_on_this_connection(&mut self) -> Option<Vec<u8>> {
        let message = self.stream.as_mut()?.next().await;
        if message.is_none() {
            self.stream = None;
        }
        message.map(|m| m.get_payload_bytes().to_vec())
    }
}

/// The number of seconds a kombu transport option is set to in `url`'s query string
/// (`redis://host/0?visibility_timeout=600`), if it is there. kombu itself takes these
/// options only from `broker_transport_options` (`kombu/transport/redis.py`,
/// `Channel.from_transport_options`); the URL form lets one string configure a process.
pub(crate) fn seconds_in_query(url: &str, option: &str) -> Result<Option<Duration>> {
    let Some(value) = query_value(url, option) else {
        return Ok(None);
    };
    match value.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 => Duration::try_from_secs_f64(seconds).ok().map(Some),
        _ => None,
    }
    .ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "invalid Redis URL `{}`: {option}={value:?} is not a positive number of seconds",
                redact(url)
            ),
        )
    })
}

/// Whether `error` is a lost, refused or timed-out connection, or a server that is still
/// starting (`LOADING`): worth retrying once Redis is back.
fn transient(error: &redis::RedisError) -> bool {
    if error.kind() == redis::ErrorKind::AuthenticationFailed {
        return false;
    }
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.retry_method(),
            redis::RetryMethod::Reconnect | redis::RetryMethod::WaitAndRetry
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn transport_options_are_read_from_the_query_in_seconds() {
        use std::time::Duration;

        let read = |url: &str| super::seconds_in_query(url, "visibility_timeout");
        assert_eq!(read("redis://h/0").unwrap(), None);
        assert_eq!(read("redis://h/0?db=1").unwrap(), None);
        assert_eq!(
            read("redis://h/0?visibility_timeout=30").unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            read("rediss://h/0?ssl_cert_reqs=none&visibility_timeout=1.5#x").unwrap(),
            Some(Duration::from_millis(1500))
        );
        for bad in ["0", "-1", "soon", ""] {
            let url = format!("redis://:secret@h/0?visibility_timeout={bad}");
            let error = read(&url).unwrap_err().to_string();
            assert!(error.contains("visibility_timeout"), "{error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }
}
