//! Flower, the dashboard Celery teams run, against a Celerity worker on Redis: Flower
//! lists the worker with its stats, registered tasks and queues, lists the tasks it ran
//! with their states, and its rate-limit and shut-down buttons (its HTTP API) act on it.
//!
//! Needs Redis, Python Celery and Flower (`pip install 'flower>=2,<3'`); skips without
//! them unless `CELERITY_REQUIRE_BROKERS=1`.

mod interop;
mod support;

use std::time::{Duration, Instant};

use interop::python::{Flower, Python};
use interop::transport::Transport;
use interop::{rust_worker, tasks::TasksRegistry, unique_queue};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Asks Flower `path` until `ready` holds for its answer, or fails after [`WAIT`].
async fn until(flower: &Flower, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let (status, body) = flower.get(path).await;
        if status == 200 && ready(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: Flower's {path} never showed it; last answer:\n{last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flower_lists_a_celerity_worker_and_its_tasks_and_controls_it() {
    let Some(transport) = Transport::redis() else {
        return;
    };
    let Some(python) = Python::find() else { return };
    let Some(flower) = python.flower(&transport).await else {
        return;
    };
    let queue = unique_queue("flower");
    let node = format!(
        "celerity-{}@flower",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let app = transport.app().await;
    let worker = rust_worker::start_with_task_events(&app, &queue, &node).await;

    // The worker page: Flower lists a worker once it has its events, and fills the page
    // from `inspect stats`, `registered` and `active_queues`.
    let workers = until(
        &flower,
        "/api/workers?refresh=1",
        "the worker with its stats",
        |w| w[&node]["stats"]["pool"]["max-concurrency"] == 4,
    )
    .await;
    let info = &workers[&node];
    assert!(
        info["registered"]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|t| t == "interop.add")),
        "registered tasks: {info:#}"
    );
    assert_eq!(info["active_queues"][0]["name"], queue.as_str(), "{info:#}");
    assert_eq!(info["stats"]["prefetch_count"], 16, "{info:#}");

    // The tasks page, from task events.
    let tasks = TasksRegistry::new(app.client());
    let added = tasks.add(2, 40).queue(&queue).await.unwrap();
    let declined = tasks
        .charge("4000000000000002".into(), 500)
        .queue(&queue)
        .await
        .unwrap();
    assert_eq!(added.get(WAIT).await.unwrap(), 42);
    assert!(declined.get(WAIT).await.is_err());
    let listed = until(
        &flower,
        &format!("/api/tasks?workername={node}"),
        "both tasks with their final states",
        |t| t[added.id()]["state"] == "SUCCESS" && t[declined.id()]["state"] == "FAILURE",
    )
    .await;
    let add = &listed[added.id()];
    assert_eq!(add["name"], "interop.add", "{add:#}");
    assert_eq!(add["result"], "42", "{add:#}");
    assert_eq!(add["worker"], node.as_str(), "{add:#}");
    let charge = &listed[declined.id()];
    assert!(
        charge["exception"]
            .as_str()
            .is_some_and(|e| e.contains("card 4000000000000002 was declined")),
        "{charge:#}"
    );

    // The buttons: a rate limit, then a shutdown.
    let (status, body) = flower
        .post(
            "/api/task/rate-limit/interop.add",
            &format!("workername={node}&ratelimit=10/m"),
        )
        .await;
    assert_eq!(status, 200, "rate limit: {body:#}\n{}", flower.log());
    let registered = python
        .control(
            &transport,
            &[node.as_str()],
            serde_json::json!([{"name": "items", "inspect": "registered", "args": ["rate_limit"]}]),
        )
        .await;
    assert!(
        registered["items"][&node]
            .as_array()
            .is_some_and(|tasks| tasks.iter().any(|t| t == "interop.add [rate_limit=10/m]")),
        "the worker runs interop.add at 10/m now: {registered:#}"
    );

    let shutdown_requested = worker.shutdown_requested();
    let (status, body) = flower
        .post(&format!("/api/worker/shutdown/{node}"), "")
        .await;
    assert_eq!(status, 200, "shutdown: {body:#}\n{}", flower.log());
    tokio::time::timeout(WAIT, shutdown_requested)
        .await
        .expect("Flower's shutdown reaches the worker");
    worker.shutdown().await;
}
