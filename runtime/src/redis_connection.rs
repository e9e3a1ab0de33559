//! One Redis connection shared by the broker and the result backend: opened from a URL,
//! every operation bounded by a timeout, and retried across a Redis restart.
//!
//! The `ConnectionManager` reconnects on its own after a dropped connection, but the
//! operation that saw the drop still fails. [`RedisConnection::run`] retries such
//! operations with backoff for a bounded window (Celery's Redis backend retries about
//! 20 times a second apart, `celery/backends/redis.py::retry_policy`), so a producer or a
//! worker rides out a restart instead of failing the task it was handling.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};

use crate::app::redact_url as redact;
use crate::error::{Error, ErrorKind, Result};

/// How long one Redis operation may take before it fails.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an operation is retried while Redis is unreachable, by default.
const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(20);

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A shared, reconnecting Redis connection.
#[derive(Clone)]
pub(crate) struct RedisConnection {
    client: redis::Client,
    manager: ConnectionManager,
    display: String,
    kind: ErrorKind,
    retry_window: Duration,
}

impl RedisConnection {
    /// Opens `url`; errors are reported as `kind` (broker or backend).
    pub(crate) async fn open(url: &str, kind: ErrorKind) -> Result<Self> {
        let client = client_for(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OPERATION_TIMEOUT))
            .set_response_timeout(Some(OPERATION_TIMEOUT))
            .set_number_of_retries(6)
            .set_max_delay(Duration::from_secs(5));
        let manager = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| {
                Error::new(kind, format!("redis: could not connect to {}", redact(url)))
                    .with_source(e)
            })?;
        Ok(RedisConnection {
            client,
            manager,
            display: redact(url),
            kind,
            retry_window: DEFAULT_RETRY_WINDOW,
        })
    }

    /// Sets how long operations are retried while Redis is unreachable.
    pub(crate) fn set_retry_window(&mut self, window: Duration) {
        self.retry_window = window;
    }

    /// The URL without its password.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    /// The database number the URL selects.
    pub(crate) fn db(&self) -> i64 {
        self.client.get_connection_info().redis_settings().db()
    }

    /// Runs `operation`, retrying it with backoff while the failure is a lost or refused
    /// connection, for at most the retry window. An operation may therefore run twice
    /// when Redis applied it but its reply was lost: delivery is at least once.
    pub(crate) async fn run<T, F, Fut>(&self, action: &str, operation: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.run_within(action, self.retry_window, operation).await
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
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match operation(self.manager.clone()).await {
                Ok(value) => {
                    if attempts > 1 {
                        tracing::info!(action, attempts, "redis is reachable again");
                    }
                    return Ok(value);
                }
                Err(error) if transient(&error) && started.elapsed() < window => {
                    if attempts == 1 {
                        tracing::warn!(%error, action, "redis is unreachable; retrying");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
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

    /// A new pub/sub connection subscribed to `channels`, retried like [`Self::run`].
    pub(crate) async fn subscribe(&self, action: &str, channels: &[String]) -> Result<PubSub> {
        self.run(action, |_| async {
            let mut pubsub =
                tokio::time::timeout(OPERATION_TIMEOUT, self.client.get_async_pubsub())
                    .await
                    .map_err(|_| timed_out())??;
            for channel in channels {
                tokio::time::timeout(OPERATION_TIMEOUT, pubsub.subscribe(channel))
                    .await
                    .map_err(|_| timed_out())??;
            }
            Ok(pubsub)
        })
        .await
    }
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

    /// The next message's payload. Resubscribes (with backoff) after a lost connection;
    /// messages published while it was lost are not seen.
    pub(crate) async fn next(&mut self) -> Vec<u8> {
        loop {
            if let Some(payload) = self.next_on_this_connection().await {
                return payload;
            }
            tracing::warn!(channels = ?self.channels, "redis subscription lost; subscribing again");
            if let Err(error) = self.connect().await {
                tracing::warn!(%error, "could not subscribe; retrying");
                tokio::time::sleep(MAX_BACKOFF).await;
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
    let Some((_, query)) = url.split_once('?') else {
        return Ok(None);
    };
    let query = query.split('#').next().unwrap_or_default();
    let Some(value) = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == option)
        .map(|(_, value)| value)
        .next_back()
    else {
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

/// A client for `url`. `rediss://` URLs take Celery's TLS query parameters:
/// `ssl_ca_certs` (a PEM file of trusted roots instead of the system's),
/// `ssl_certfile` and `ssl_keyfile` (a client certificate), and `ssl_cert_reqs=none`
/// (do not verify the server: for tests only).
fn client_for(url: &str) -> Result<redis::Client> {
    let invalid = |reason: String| {
        Error::new(
            ErrorKind::Config,
            format!("invalid Redis URL `{}`: {reason}", redact(url)),
        )
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut kept, mut tls) = (Vec::new(), TlsFiles::default());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "ssl_ca_certs" => tls.ca = Some(value.to_owned()),
            "ssl_certfile" => tls.cert = Some(value.to_owned()),
            "ssl_keyfile" => tls.key = Some(value.to_owned()),
            "ssl_cert_reqs" => {
                tls.verify = !matches!(value.to_ascii_lowercase().as_str(), "none" | "cert_none")
            }
            _ => kept.push(pair),
        }
    }
    let mut plain = base.to_owned();
    if !kept.is_empty() {
        plain = format!("{plain}?{}", kept.join("&"));
    }
    let is_tls = url.starts_with("rediss://");
    if !is_tls && tls != TlsFiles::default() {
        return Err(invalid("ssl_* parameters need a rediss:// URL".into()));
    }
    if is_tls {
        // rustls needs a process-wide crypto provider; another may be installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if is_tls && !tls.verify {
        plain.push_str("#insecure");
    }
    let opened = if is_tls && (tls.ca.is_some() || tls.cert.is_some()) {
        let read = |path: &str| {
            std::fs::read(path).map_err(|e| invalid(format!("cannot read `{path}`: {e}")))
        };
        let client_tls = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => return Err(invalid("ssl_certfile and ssl_keyfile go together".into())),
        };
        let root_cert = tls.ca.as_deref().map(read).transpose()?;
        redis::Client::build_with_tls(
            plain.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    } else {
        redis::Client::open(plain.as_str())
    };
    opened.map_err(|e| invalid(e.to_string()))
}

#[derive(Debug, PartialEq, Eq)]
struct TlsFiles {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    verify: bool,
}

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles {
            ca: None,
            cert: None,
            key: None,
            verify: true,
        }
    }
}

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis operation timed out",
    ))
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
