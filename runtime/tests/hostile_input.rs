//! Hostile and broken messages: a worker bounds what it logs and stores, refuses what is
//! too large, logs each refused message once, and records a FAILURE for every refused
//! message that names a task id, so no client waits on it forever.
//!
//! Logs are read through a subscriber installed for the test's thread: the tests run on
//! tokio's current-thread runtime, so the worker's tasks log on that thread too.

#[allow(dead_code)] // the Redis envelope is used only with the `redis` feature
#[path = "support/celery_message.rs"]
mod celery_message;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celerity::backend::MemoryBackend;
use celerity::broker::{Broker, MemoryBroker};
use celerity::protocol::{RawMessage, ResultMeta, TaskState};
use celerity::{App, ResultError, Worker};
use celery_message::message;
use serde_json::{Value, json};
use support::{DOUBLE, DoubleArgs, Doubler};

/// Longest log line any of these messages may produce: Celery's `saferepr` limit (1024
/// characters) for each value from the message, with room for the fixed words and fields.
const LOG_LINE_LIMIT: usize = 4096;

/// Longest stored FAILURE, as JSON, for the same reason: the bounded message is there
/// twice, in the exception and in the last line of the traceback, as in Python's.
const STORED_LIMIT: usize = 4096;

/// The lines the worker logs while the guard lives.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let lines = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || lines.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn all(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn warnings(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            // The worker's own lines: a shared Redis may hold other tests' leftovers.
            .filter(|line| line.contains(" celerity::worker: "))
            .collect()
    }

    fn longest(&self) -> usize {
        self.all().iter().map(String::len).max().unwrap_or(0)
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn memory_worker(max_message_size: Option<usize>) -> (App, MemoryBroker, Worker) {
    let broker = MemoryBroker::new();
    let app = App::new(broker.clone(), MemoryBackend::new());
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues(["celery"])
        .concurrency(2);
    if let Some(max) = max_message_size {
        builder.max_message_size(max);
    }
    let worker = builder.start().await.expect("the worker starts");
    (app, broker, worker)
}

/// The stored result of `id`, once it is ready.
async fn stored(app: &App, id: &str) -> ResultMeta {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(meta) = app.backend().get(id).await.unwrap() {
            if meta.status.is_ready() {
                return meta;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no result for {id} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stored_size(meta: &ResultMeta) -> usize {
    serde_json::to_vec(meta).unwrap().len()
}

/// Waits until the broker's queue is empty and the worker logged `line`.
/// Once `line` is logged: the stored result and every log line stay under their limits.
async fn assert_bounded(lines: &Lines, meta: &ResultMeta, line: &str) {
    let size = stored_size(meta);
    assert!(size < STORED_LIMIT, "stored {size} bytes");
    logged(lines, line).await;
    let longest = lines.longest();
    assert!(longest < LOG_LINE_LIMIT, "a log line of {longest} bytes");
}

async fn logged(lines: &Lines, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lines.all().iter().any(|l| l.contains(line)) {
        assert!(
            std::time::Instant::now() < deadline,
            "never logged {line:?}; got {:?}",
            lines.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_10_mb_ill_typed_argument_gives_a_bounded_log_line_and_failure() {
    let lines = Lines::default();
    let _guard = lines.install();
    let (app, _broker, worker) = memory_worker(None).await;
    let huge = "x".repeat(10 * 1024 * 1024);
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(huge)])
        .await
        .unwrap();
    drop(huge);
    let failure = match sent.get(Duration::from_secs(30)).await {
        Err(ResultError::Failed(failure)) => failure,
        other => panic!("expected a TypeError, got {other:?}"),
    };
    assert_eq!(failure.exc_type, "TypeError");
    assert!(
        failure
            .message
            .starts_with("t.double() argument 'x': invalid type: string \"xxx")
            && failure.message.ends_with("\", expected i64"),
        "{}",
        &failure.message[..200.min(failure.message.len())]
    );
    assert!(
        failure.message.chars().count() <= 1100,
        "the stored message is bounded"
    );
    let meta = stored(&app, sent.id()).await;
    assert_bounded(&lines, &meta, "failed in").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_100_kb_task_name_gives_a_bounded_log_line_and_failure() {
    let lines = Lines::default();
    let _guard = lines.install();
    let (app, broker, worker) = memory_worker(None).await;
    let name = "n".repeat(100 * 1024);
    let body = br#"[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#;
    broker
        .publish("celery", message(&name, "long-name", body.to_vec()))
        .await
        .unwrap();
    let meta = stored(&app, "long-name").await;
    assert_eq!(meta.status, TaskState::Failure);
    assert_eq!(meta.exception_info().unwrap().exc_type, "NotRegistered");
    assert_bounded(&lines, &meta, "Received unregistered task of type 'nnn").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_with_one_line_and_a_failure() {
    let lines = Lines::default();
    let _guard = lines.install();
    let (app, broker, worker) = memory_worker(Some(1024 * 1024)).await;
    let body = format!("[[\"{}\"], {{}}, {{}}]", "y".repeat(2 * 1024 * 1024));
    broker
        .publish(
            "celery",
            message("t.double", "too-large", body.into_bytes()),
        )
        .await
        .unwrap();
    let meta = stored(&app, "too-large").await;
    let exception = meta.exception_info().unwrap();
    assert_eq!(
        (meta.status, exception.exc_type.as_str()),
        (TaskState::Failure, "InvalidTaskError")
    );
    assert!(
        exception
            .message()
            .contains("larger than the worker's limit of 1048576 bytes"),
        "{}",
        exception.message()
    );
    logged(&lines, "Received invalid task message: message of").await;
    let warnings = lines.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("id=\"too-large\""), "{}", warnings[0]);
    assert!(lines.longest() < LOG_LINE_LIMIT);
    worker.shutdown().await;
}

/// A refused message with an id ends as a FAILURE of `exc_type`, after one warning.
async fn refused_with_failure(raw: RawMessage, exc_type: &str, says: &str) {
    let lines = Lines::default();
    let _guard = lines.install();
    let (app, broker, worker) = memory_worker(None).await;
    let id = raw.headers["id"].as_str().unwrap().to_owned();
    broker.publish("celery", raw).await.unwrap();
    let meta = stored(&app, &id).await;
    let exception = meta.exception_info().unwrap();
    assert_eq!(meta.status, TaskState::Failure);
    assert_eq!(exception.exc_type, exc_type);
    assert!(
        exception.message().contains(says),
        "{}",
        exception.message()
    );
    logged(&lines, "Received invalid task message").await;
    let warnings = lines.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    // The worker goes on.
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(4)])
        .await
        .unwrap();
    assert_eq!(sent.get(Duration::from_secs(10)).await.unwrap(), 8);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_pickled_message_fails_with_content_disallowed() {
    let mut raw = message("t.double", "pickled", b"\x80\x04\x95.".to_vec());
    raw.content_type = "application/x-python-serialize".into();
    raw.content_encoding = "binary".into();
    refused_with_failure(
        raw,
        "ContentDisallowed",
        "Refusing to deserialize untrusted content of type pickle (application/x-python-serialize)",
    )
    .await;
}

#[tokio::test]
async fn out_of_range_retries_fail_with_invalid_task_error() {
    for (id, retries) in [
        ("retries-negative", json!(-1)),
        ("retries-huge", json!(1u64 << 40)),
    ] {
        let mut raw = message("t.double", id, br#"[[1], {}, {}]"#.to_vec());
        raw.headers.insert("retries".into(), retries);
        refused_with_failure(raw, "InvalidTaskError", "retries").await;
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_fails_with_decode_error() {
    let raw = message("t.double", "not-json", b"{oops".to_vec());
    refused_with_failure(raw, "DecodeError", "body is not JSON").await;
}

#[tokio::test]
async fn an_invalid_eta_fails_with_invalid_task_error() {
    let mut raw = message("t.double", "bad-eta", br#"[[1], {}, {}]"#.to_vec());
    raw.headers
        .insert("eta".into(), Value::from("tomorrow-ish"));
    refused_with_failure(raw, "InvalidTaskError", "eta").await;
}

#[tokio::test]
async fn a_message_without_a_task_is_refused_once_and_stores_nothing() {
    let lines = Lines::default();
    let _guard = lines.install();
    let (app, broker, worker) = memory_worker(None).await;
    let mut raw = message("t.double", "no-task", b"[1]".to_vec());
    raw.headers.remove("task");
    broker.publish("celery", raw).await.unwrap();
    logged(
        &lines,
        "Received invalid task message: not a Celery task message",
    )
    .await;
    assert_eq!(lines.warnings().len(), 1, "{:#?}", lines.warnings());
    assert!(app.backend().get("no-task").await.unwrap().is_none());
    worker.shutdown().await;
}

/// On Redis, an envelope whose body is not base64 is logged once (not also as a message
/// of content type `application/octet-stream`), and fails with kombu's `DecodeError`.
#[cfg(feature = "redis")]
#[tokio::test]
async fn an_unreadable_redis_envelope_is_logged_once_and_its_task_fails() {
    use celerity::backend::RedisBackend;
    use celerity::broker::RedisBroker;
    use redis::AsyncCommands;

    let Some(url) = support::redis_url() else {
        return;
    };
    let lines = Lines::default();
    let _guard = lines.install();
    let app = App::new(
        RedisBroker::connect(&url).await.unwrap(),
        RedisBackend::connect(&url).await.unwrap(),
    );
    let queue = support::unique_queue();
    let id = uuid::Uuid::new_v4().to_string();
    let mut raw = support::raw_redis(&url).await;
    let envelope = celery_message::envelope_not_base64("t.double", &id, &queue);
    let _: i64 = raw.lpush(&queue, envelope.to_string()).await.unwrap();
    let _: i64 = raw.lpush(&queue, "not json at all").await.unwrap();
    let worker = support::doubler(&app, &queue).await;
    let meta = stored(&app, &id).await;
    let exception = meta.exception_info().unwrap();
    assert_eq!(
        (meta.status, exception.exc_type.as_str()),
        (TaskState::Failure, "DecodeError")
    );
    assert!(
        exception.message().contains("not base64"),
        "{}",
        exception.message()
    );
    logged(&lines, "not a kombu message envelope").await;
    let warnings = lines.warnings();
    assert_eq!(
        warnings.len(),
        2,
        "one line for each message: {warnings:#?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("octet-stream")),
        "{warnings:#?}"
    );
    worker.shutdown().await;
}

/// Resident memory of this process now (`VmRSS`) and at its peak (`VmHWM`), in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Measures what a worker keeps after a 10 MB ill-typed argument: run alone with
/// `cargo test --release --test hostile_input rss -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run alone, with --nocapture"]
fn rss_before_and_after_a_10_mb_message() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (app, _broker, worker) = memory_worker(None).await;
        let warm = app
            .client()
            .send_task::<i64>(&DOUBLE, vec![json!(1)])
            .await
            .unwrap();
        warm.get(Duration::from_secs(10)).await.unwrap();
        let (before, _) = rss_kib();
        for round in 0..3 {
            let sent = app
                .client()
                .send_task::<i64>(&DOUBLE, vec![json!("x".repeat(10 * 1024 * 1024))])
                .await
                .unwrap();
            assert!(sent.get(Duration::from_secs(30)).await.is_err());
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (now, peak) = rss_kib();
            println!(
                "after 10 MB message {round}: RSS {now} KiB (before: {before} KiB, peak {peak} KiB)"
            );
        }
        worker.shutdown().await;
    });
}
