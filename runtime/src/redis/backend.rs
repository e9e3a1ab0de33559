//! The Redis result backend, byte-compatible with Celery's (`celery/backends/redis.py`).
//!
//! Results live under `celery-task-meta-<id>` as JSON, written with `SETEX` (expiring after
//! `result_expires`, one day by default) and announced with `PUBLISH` on a channel of the
//! same name. Waiting subscribes to that channel first and then reads the key, so a result
//! stored in between is not missed, exactly as Celery's `ResultConsumer` does.

use std::time::Duration;

use futures::future::BoxFuture;
use redis::AsyncCommands;

use super::connection::RedisConnection;
use super::listener::ResultListener;
use crate::backend::{ChordJoin, ChordPart, DEFAULT_RESULT_EXPIRES, ResultBackend, encode_result};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{ResultMeta, TaskState};

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

/// How long storing a result is retried while Redis is unreachable, by default.
///
/// Longer than other operations' 20 s: the task has run, and its result exists nowhere
/// else. Celery retries a store only with `result_backend_always_retry` (then without
/// limit, `celery/backends/base.py::_ensure_retryable`); ten minutes rides out a restart,
/// a failover or a long AOF load, yet a backend gone for good is reported, and its worker
/// slot freed, instead of a task hanging forever.
pub(crate) const DEFAULT_RESULT_RETRY_WINDOW: Duration = Duration::from_secs(600);

/// A Redis result backend.
#[derive(Clone)]
pub struct RedisBackend {
    pub(super) connection: RedisConnection,
    listener: ResultListener,
    script: redis::Script,
    pub(super) result_expires: Duration,
    pub(super) result_retry_window: Duration,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.connection.display())
            .finish()
    }
}

impl RedisBackend {
    /// Connects to `url` (`redis://[:password@]host[:port][/db]`), a failover list or
    /// `sentinel://` URLs, as [`crate::broker::RedisBroker::connect`] describes (Celery's
    /// `SentinelBackend` takes the same form). With Sentinel, storing a result returns
    /// once a replica has it too.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(url, None).await
    }

    /// As [`Self::connect`], with the master's name for a `sentinel://` URL given apart.
    pub(crate) async fn open(url: &str, master_name: Option<&str>) -> Result<Self> {
        let connection = RedisConnection::open(url, ErrorKind::Backend, master_name).await?;
        Ok(RedisBackend {
            listener: ResultListener::new(connection.clone()),
            connection,
            script: redis::Script::new(STORE_SCRIPT),
            result_expires: DEFAULT_RESULT_EXPIRES,
            result_retry_window: DEFAULT_RESULT_RETRY_WINDOW,
        })
    }

    /// How long results are kept (Celery's `result_expires`, default one day).
    pub fn result_expires(mut self, after: Duration) -> Self {
        self.result_expires = after.max(Duration::from_secs(1));
        self
    }

    /// How long storing a result is retried while Redis is unreachable (default ten
    /// minutes), so a worker's results survive a Redis outage longer than other
    /// operations ride out. A worker gives up on a result only after this: it logs that
    /// the result is lost, or, for a late-acknowledged task, requeues its message.
    pub fn result_retry_window(mut self, window: Duration) -> Self {
        self.result_retry_window = window;
        self
    }

    /// How long any other operation is retried while Redis is unreachable (default 20 s):
    /// reading, waiting for and forgetting results.
    pub fn retry_window(mut self, window: Duration) -> Self {
        self.connection.set_retry_window(window);
        self.listener = ResultListener::new(self.connection.clone());
        self
    }

    fn key(task_id: &str) -> String {
        format!("{TASK_META_PREFIX}{task_id}")
    }

    async fn read(&self, task_id: &str) -> Result<Option<ResultMeta>> {
        let key = Self::key(task_id);
        let raw: Option<Vec<u8>> = self
            .connection
            .run("read a result", |mut c| {
                let key = &key;
                async move { c.get(key).await }
            })
            .await?;
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
            let payload = encode_result(meta)?;
            let key = Self::key(&meta.task_id);
            let expires = self.result_expires.as_secs();
            if meta.status == TaskState::Success {
                // Nothing may overwrite a SUCCESS, but a SUCCESS may overwrite anything:
                // no need for the script's check, and a pipeline is cheaper for Redis.
                let mut pipeline = redis::pipe();
                pipeline
                    .set_ex(&key, &payload, expires)
                    .ignore()
                    .publish(&key, &payload)
                    .ignore();
                self.connection
                    .run_replicated_within("store a result", self.result_retry_window, |mut c| {
                        let pipeline = &pipeline;
                        async move { pipeline.query_async::<()>(&mut c).await }
                    })
                    .await?;
            } else {
                let _: i64 = self
                    .connection
                    .run_replicated_within("store a result", self.result_retry_window, |mut c| {
                        let mut invocation = self.script.prepare_invoke();
                        invocation.key(&key).arg(&payload).arg(expires);
                        async move { invocation.invoke_async(&mut c).await }
                    })
                    .await?;
            }
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
                let mut registration = self.listener.register(&channel).await?;
                // Subscribed first, then read: a result stored in between is not missed.
                // After a lost subscription the read runs again, for the same reason.
                if let Some(meta) = self.read(task_id).await?.filter(|m| m.status.is_ready()) {
                    return Ok(meta);
                }
                while let Some(payload) = registration.messages.recv().await {
                    let meta = decode(&payload)?;
                    if meta.status.is_ready() {
                        return Ok(meta);
                    }
                }
            }
        })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = Self::key(task_id);
            let _: i64 = self
                .connection
                .run("delete a result", |mut c| {
                    let key = &key;
                    async move { c.del(key).await }
                })
                .await?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.connection.display().to_owned()
    }

    // Chords and groups, as Celery's Redis backend keeps them: in `super::chord`.

    fn set_chord_size<'a>(&'a self, group_id: &'a str, size: usize) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.record_chord_size(group_id, size))
    }

    fn chord_part_return<'a>(
        &'a self,
        part: &'a ChordPart<'a>,
    ) -> BoxFuture<'a, Result<ChordJoin>> {
        Box::pin(self.record_chord_part(part))
    }

    fn chord_finish<'a>(
        &'a self,
        group_id: &'a str,
        claim: &'a str,
        failed: bool,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.finish_chord(group_id, claim, failed))
    }

    fn save_group<'a>(
        &'a self,
        group_id: &'a str,
        task_ids: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.write_group(group_id, task_ids))
    }

    fn restore_group<'a>(
        &'a self,
        group_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<String>>>> {
        Box::pin(self.read_group(group_id))
    }

    fn delete_group<'a>(&'a self, group_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.remove_group(group_id))
    }
}
