//! The Redis result backend against a real Redis: Celery's keys, JSON and expiry; the
//! SUCCESS rule; waiting through pub/sub.

mod support;

use std::time::Duration;

use celerity::backend::{RedisBackend, ResultBackend};
use celerity::broker::MemoryBroker;
use celerity::protocol::{ExceptionInfo, ResultMeta};
use celerity::{App, TaskState};
use redis::AsyncCommands;
use serde_json::json;
use support::{DOUBLE, DoubleArgs, Doubler};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn results_are_stored_under_celerys_key_as_celerys_json_with_an_expiry() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let id = new_id();
    backend
        .store(&ResultMeta::new(
            &id,
            TaskState::Success,
            json!({"n": [1, "ü"]}),
        ))
        .await
        .unwrap();

    let mut raw = support::raw_redis(&url).await;
    let key = format!("celery-task-meta-{id}");
    let stored: String = raw.get(&key).await.unwrap();
    let prefix = r#"{"status": "SUCCESS", "result": {"n": [1, "\u00fc"]}, "traceback": null, "children": [], "date_done": ""#;
    assert!(
        stored.starts_with(prefix),
        "Celery's field order and Python's JSON spacing: {stored}"
    );
    assert!(
        stored.ends_with(&format!("+00:00\", \"task_id\": \"{id}\"}}")),
        "{stored}"
    );
    let ttl: i64 = raw.ttl(&key).await.unwrap();
    assert!(
        (86_390..=86_400).contains(&ttl),
        "result_expires defaults to one day, got {ttl}"
    );

    let read = backend.get(&id).await.unwrap().expect("stored");
    assert_eq!(
        (read.status, read.result),
        (TaskState::Success, json!({"n": [1, "ü"]}))
    );
    backend.forget(&id).await.unwrap();
    assert_eq!(backend.get(&id).await.unwrap(), None);
}

#[tokio::test]
async fn a_success_is_never_overwritten() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url)
        .await
        .unwrap()
        .result_expires(Duration::from_secs(60));
    let id = new_id();
    backend
        .store(&ResultMeta::new(&id, TaskState::Started, json!(null)))
        .await
        .unwrap();
    backend
        .store(&ResultMeta::new(&id, TaskState::Success, json!(1)))
        .await
        .unwrap();
    let late = ResultMeta::exception(
        &id,
        TaskState::Failure,
        &ExceptionInfo::new("KeyError", "builtins", "x"),
        None,
    );
    backend.store(&late).await.unwrap();
    assert_eq!(
        backend.get(&id).await.unwrap().unwrap().status,
        TaskState::Success
    );
}

#[tokio::test]
async fn waiting_sees_results_stored_before_and_after_it_starts() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url)
        .await
        .unwrap()
        .result_expires(Duration::from_secs(60));
    let early = new_id();
    backend
        .store(&ResultMeta::new(&early, TaskState::Success, json!("early")))
        .await
        .unwrap();
    assert_eq!(
        backend.wait_ready(&early).await.unwrap().result,
        json!("early")
    );

    let late = new_id();
    let waiter = {
        let backend = backend.clone();
        let late = late.clone();
        tokio::spawn(async move { backend.wait_ready(&late).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    backend
        .store(&ResultMeta::new(&late, TaskState::Started, json!(null)))
        .await
        .unwrap();
    backend
        .store(&ResultMeta::new(&late, TaskState::Success, json!("late")))
        .await
        .unwrap();
    let meta = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by PUBLISH")
        .unwrap()
        .unwrap();
    assert_eq!(
        (meta.status, meta.result),
        (TaskState::Success, json!("late"))
    );
}

#[tokio::test]
async fn a_worker_stores_its_results_in_redis() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let app = App::new(
        MemoryBroker::new(),
        RedisBackend::connect(&url).await.unwrap(),
    );
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues(["celery"]);
    let worker = builder.start().await.unwrap();
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(21)])
        .await
        .unwrap();
    assert_eq!(sent.get(Duration::from_secs(5)).await.unwrap(), 42);
    let mut raw = support::raw_redis(&url).await;
    let stored: String = raw
        .get(format!("celery-task-meta-{}", sent.id()))
        .await
        .unwrap();
    assert!(
        stored.starts_with("{\"status\": \"SUCCESS\", \"result\": 42,"),
        "{stored}"
    );
    worker.shutdown().await;
}
