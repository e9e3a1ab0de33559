//! The Redis result backend, byte-compatible with Celery's (`celery/backends/redis.py`).
//!
//! Results live under `celery-task-meta-<id>` as JSON, written with `SETEX` (expiring after
//! `result_expires`, one day by default) and announced with `PUBLISH` on a channel of the
//! same name. Waiting subscribes to that channel first and then reads the key, so a result
//! stored in between is not missed, exactly as Celery's `ResultConsumer` does.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::ResultBackend;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{ResultMeta, to_python_json};

/// Celery's key prefix for task results.
pub const TASK_META_PREFIX: &str = "celery-task-meta-";

/// Stores a result unless a SUCCESS is already stored: Celery's rule
/// (`BaseKeyValueStoreBackend._store_result`), made atomic.
const STORE_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
end
redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"#;

/// How long one Redis operation may take before it fails.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis result backend.
#[derive(Clone)]
pub struct RedisBackend {
    client: redis::Client,
    connection: ConnectionManager,
    script: redis::Script,
    result_expires: Duration,
    display: String,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.display)
            .finish()
    }
}

pub(crate) fn redis_error(
    action: &str,
    kind: ErrorKind,
) -> impl Fn(redis::RedisError) -> Error + '_ {
    move |e| Error::new(kind, format!("redis: could not {action}")).with_source(e)
}

/// The URL without its password, for logs and banners.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// A client for `url`, or a configuration error that does not reveal the password.
pub(crate) fn open_client(url: &str) -> Result<redis::Client> {
    redis::Client::open(url).map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("invalid Redis URL `{}`", redact(url)),
        )
        .with_source(e)
    })
}

/// A connection manager that reconnects with backoff and bounds every operation.
pub(crate) async fn connect(client: &redis::Client, kind: ErrorKind) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(OPERATION_TIMEOUT))
        .set_response_timeout(Some(OPERATION_TIMEOUT))
        .set_number_of_retries(6)
        .set_max_delay(Duration::from_secs(5));
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(redis_error("connect", kind))
}

impl RedisBackend {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`).
    pub async fn connect(url: &str) -> Result<Self> {
        let client = open_client(url)?;
        let connection = connect(&client, ErrorKind::Backend).await?;
        Ok(RedisBackend {
            client,
            connection,
            script: redis::Script::new(STORE_SCRIPT),
            result_expires: Duration::from_secs(86_400),
            display: redact(url),
        })
    }

    /// How long results are kept (Celery's `result_expires`, default one day).
    pub fn result_expires(mut self, after: Duration) -> Self {
        self.result_expires = after.max(Duration::from_secs(1));
        self
    }

    fn key(task_id: &str) -> String {
        format!("{TASK_META_PREFIX}{task_id}")
    }

    async fn read(&self, task_id: &str) -> Result<Option<ResultMeta>> {
        let mut connection = self.connection.clone();
        let raw: Option<Vec<u8>> = connection
            .get(Self::key(task_id))
            .await
            .map_err(redis_error("read a result", ErrorKind::Backend))?;
        raw.map(|bytes| decode(&bytes)).transpose()
    }
}

fn decode(bytes: &[u8]) -> Result<ResultMeta> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::Decode,
            "a stored result is not Celery's result JSON",
        )
        .with_source(e)
    })
}

impl ResultBackend for RedisBackend {
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let payload = to_python_json(meta).map_err(|e| {
                Error::new(ErrorKind::Encode, "could not encode a result").with_source(e)
            })?;
            let mut connection = self.connection.clone();
            let _: i64 = self
                .script
                .key(Self::key(&meta.task_id))
                .arg(payload)
                .arg(self.result_expires.as_secs())
                .invoke_async(&mut connection)
                .await
                .map_err(redis_error("store a result", ErrorKind::Backend))?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>>> {
        Box::pin(self.read(task_id))
    }

    fn wait_ready<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultMeta>> {
        Box::pin(async move {
            let channel = Self::key(task_id);
            loop {
                let mut pubsub =
                    tokio::time::timeout(OPERATION_TIMEOUT, self.client.get_async_pubsub())
                        .await
                        .map_err(|_| {
                            Error::new(
                                ErrorKind::Timeout,
                                "redis: connecting for results timed out",
                            )
                        })?
                        .map_err(redis_error("subscribe for a result", ErrorKind::Backend))?;
                pubsub
                    .subscribe(&channel)
                    .await
                    .map_err(redis_error("subscribe for a result", ErrorKind::Backend))?;
                // Subscribed first, then read: a result stored in between is not missed.
                if let Some(meta) = self.read(task_id).await?.filter(|m| m.status.is_ready()) {
                    return Ok(meta);
                }
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let meta = decode(message.get_payload_bytes())?;
                    if meta.status.is_ready() {
                        return Ok(meta);
                    }
                }
                // The subscription connection dropped (e.g. Redis restarted): subscribe again.
                tracing::warn!(task_id, "result subscription lost; resubscribing");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            let _: i64 = connection
                .del(Self::key(task_id))
                .await
                .map_err(redis_error("delete a result", ErrorKind::Backend))?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.display.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn urls_lose_their_passwords_in_logs() {
        assert_eq!(
            redact("redis://:secret@cache:6379/2"),
            "redis://…@cache:6379/2"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
