//! End to end on the embedded broker: the reference application's tasks sent through the
//! generated client, run by a real worker, with typed results back; and raw Celery
//! messages (positional, keyword, mixed, defaulted, invalid) as other Celery clients send
//! them.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity::backend::MemoryBackend;
use celerity::broker::MemoryBroker;
use celerity::protocol::{RawMessage, TaskMessage};
use celerity::{App, ResultError, SendOptions, TaskState, Worker};
use celerity_shop::tasks::{self, Order, OrderLine, OrderStatus, ReportFormat, TasksRegistry};
use chrono::NaiveDate;
use serde_json::{Map, Value, json};
use uuid::Uuid;

#[path = "support/shop.rs"]
mod shop;

use shop::address;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (App, Worker, TasksRegistry) {
    let app = App::memory();
    let mut worker = app.worker();
    celerity_shop::register(&mut worker);
    let worker = worker.start().await.expect("the worker starts");
    let registry = TasksRegistry::new(app.client());
    (app, worker, registry)
}

#[tokio::test]
async fn every_reference_task_round_trips_with_its_typed_result() {
    let app = App::memory();
    let mut worker = app.worker();
    celerity_shop::register(&mut worker);
    worker.queues(["shop-e2e"]);
    let worker = worker.start().await.expect("the worker starts");
    let tasks = TasksRegistry::new(app.client());
    shop::every_reference_task_round_trips(&tasks, "shop-e2e").await;
    worker.shutdown().await;
}

#[tokio::test]
async fn a_task_error_arrives_as_a_typed_failure_with_its_exception_type() {
    let (_app, worker, tasks) = start().await;
    let sent = tasks
        .send_email(address("nobody"), "Hi".into(), String::new())
        .await
        .unwrap();
    match sent.get(WAIT).await {
        Err(ResultError::Failed(failure)) => {
            assert_eq!(failure.exc_type, "InvalidAddress");
            assert_eq!(failure.message, "`nobody` is not an email address");
            assert_eq!(failure.exc_module.as_deref(), Some("celerity.exceptions"));
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(sent.state().await.unwrap(), TaskState::Failure);
    let outbox = worker
        .singleton::<celerity_shop::Outbox>()
        .expect("the outbox");
    assert_eq!(
        outbox.connections_in_use(),
        0,
        "the failed task's component returned its connection"
    );
    let since = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let backwards = tasks
        .generate_report("r".into(), since)
        .with_format(ReportFormat::Csv)
        .with_until(NaiveDate::from_ymd_opt(2026, 1, 1))
        .with_filters(json!({}))
        .await
        .unwrap();
    match backwards.get(WAIT).await {
        Err(ResultError::Failed(failure)) => assert_eq!(
            (failure.exc_type.as_str(), failure.exc_module.as_deref()),
            ("ValueError", Some("builtins"))
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    worker.shutdown().await;
}

/// Publishes `cleanup_sessions` as another Celery client would: raw args and kwargs.
async fn cleanup_with(app: &App, args: Value, kwargs: Value) -> Result<u64, ResultError> {
    let Value::Array(args) = args else {
        panic!("args must be an array")
    };
    let Value::Object(kwargs) = kwargs else {
        panic!("kwargs must be an object")
    };
    let sent = app
        .client()
        .send_task::<u64>(&tasks::CLEANUP_SESSIONS, args)
        .kwargs(kwargs)
        .await
        .unwrap();
    sent.get(WAIT).await
}

fn type_error(result: Result<u64, ResultError>) -> String {
    match result {
        Err(ResultError::Failed(failure)) => {
            assert_eq!(failure.exc_type, "TypeError");
            assert_eq!(failure.exc_module.as_deref(), Some("builtins"));
            failure.message
        }
        other => panic!("expected a TypeError failure, got {other:?}"),
    }
}

#[tokio::test]
async fn arguments_bind_like_a_python_call() {
    let (app, worker, _tasks) = start().await;
    // Positional only, keyword only, mixed and defaulted calls all run.
    assert_eq!(
        cleanup_with(&app, json!([0, true]), json!({}))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        cleanup_with(
            &app,
            json!([]),
            json!({"dry_run": true, "max_idle_minutes": 5})
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(
        cleanup_with(&app, json!([5]), json!({"dry_run": true}))
            .await
            .unwrap(),
        0
    );
    assert_eq!(cleanup_with(&app, json!([]), json!({})).await.unwrap(), 0);
    // Ill-fitting calls fail with Python's TypeError messages, and the worker goes on.
    assert_eq!(
        type_error(cleanup_with(&app, json!(["thirty"]), json!({})).await),
        "tasks.cleanup_sessions() argument 'max_idle_minutes': invalid type: string \"thirty\", expected u32"
    );
    assert_eq!(
        type_error(cleanup_with(&app, json!([1, true, 3]), json!({})).await),
        "tasks.cleanup_sessions() takes 2 positional arguments but 3 were given"
    );
    assert_eq!(
        type_error(cleanup_with(&app, json!([]), json!({"max_idle": 1})).await),
        "tasks.cleanup_sessions() got an unexpected keyword argument 'max_idle'"
    );
    assert_eq!(
        type_error(cleanup_with(&app, json!([1]), json!({"max_idle_minutes": 1})).await),
        "tasks.cleanup_sessions() got multiple values for argument 'max_idle_minutes'"
    );
    let missing = app
        .client()
        .send_task::<Value>(&tasks::CREATE_USER, vec![])
        .await
        .unwrap();
    match missing.get(WAIT).await {
        Err(ResultError::Failed(failure)) => assert_eq!(
            failure.message,
            "tasks.create_user() missing 1 required argument: 'email'"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    let nested = app
        .client()
        .send_task::<Value>(&tasks::PROCESS_ORDER, vec![json!({"id": Uuid::nil(), "customer_id": Uuid::nil(), "lines": [{"sku": "A", "quantity": -1, "unit_price_cents": 1}]})])
        .await
        .unwrap();
    match nested.get(WAIT).await {
        Err(ResultError::Failed(failure)) => assert_eq!(
            failure.message,
            "tasks.process_order() argument 'order' (at order.lines[0].quantity): invalid value: integer `-1`, expected u32"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        cleanup_with(&app, json!([0, true]), json!({}))
            .await
            .unwrap(),
        0
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn kwargs_with_defaults_fill_nested_defaults_too() {
    let (app, worker, _tasks) = start().await;
    // `country` and `metadata` have schema defaults; `shipping` is optional.
    let order = json!({"id": Uuid::nil(), "customer_id": Uuid::nil(), "lines": [{"sku": "A", "quantity": 2, "unit_price_cents": 5}],
                       "shipping": {"street": "s", "city": "c", "postcode": "p"}});
    let sent = app
        .client()
        .send_task::<Value>(&tasks::PROCESS_ORDER, vec![])
        .kwargs(Map::from_iter([("order".to_owned(), order)]))
        .await
        .unwrap();
    let outcome = sent.get(WAIT).await.unwrap();
    assert_eq!(outcome["status"], "accepted");
    assert_eq!(outcome["total_cents"], 10);
    assert_eq!(outcome["warnings"], json!([]));
    worker.shutdown().await;
}

fn raw_message(app: &App, task: &str, body: &str) -> RawMessage {
    let spec = celerity::TaskSpec::new("placeholder", &[]);
    let mut message: TaskMessage =
        app.client()
            .message(&spec, vec![], Map::new(), &SendOptions::default());
    message.headers.task = task.to_owned();
    let mut raw = message.to_raw().unwrap();
    raw.body = body.as_bytes().to_vec();
    raw
}

#[tokio::test]
async fn unknown_tasks_and_malformed_messages_are_rejected_and_the_worker_goes_on() {
    let broker = MemoryBroker::new();
    let app = App::new(broker.clone(), MemoryBackend::new());
    let mut worker = app.worker();
    celerity_shop::register(&mut worker);
    let worker = worker.start().await.expect("the worker starts");
    let tasks = TasksRegistry::new(app.client());
    let unknown = raw_message(&app, "tasks.nonexistent", r#"[[], {}, {}]"#);
    let unknown_id = unknown.headers["id"].as_str().unwrap().to_owned();
    app.broker().publish("shop", unknown).await.unwrap();
    // A two-element body, a body that is not JSON, and a message that is no task at all.
    app.broker()
        .publish("shop", raw_message(&app, "tasks.ping", "[[], {}]"))
        .await
        .unwrap();
    app.broker()
        .publish("shop", raw_message(&app, "tasks.ping", "{nope"))
        .await
        .unwrap();
    let mut not_a_task = raw_message(&app, "tasks.ping", "[1, 2, 3]");
    not_a_task.headers.remove("task");
    app.broker().publish("shop", not_a_task).await.unwrap();

    // Celery records NotRegistered so that a waiting client does not hang.
    let result = app.client().result::<Value>(unknown_id);
    match result.get(WAIT).await {
        Err(ResultError::Failed(failure)) => {
            assert_eq!(failure.exc_type, "NotRegistered");
            assert_eq!(failure.message, "tasks.nonexistent");
            assert_eq!(failure.exc_module.as_deref(), Some("celery.exceptions"));
        }
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    // The worker is still consuming, and no rejected message went back to the queue.
    assert_eq!(tasks.ping().await.unwrap().get(WAIT).await.unwrap(), "pong");
    assert!(
        broker.is_empty("shop"),
        "rejected messages must not be requeued"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn the_wire_message_has_every_header_celery_sends() {
    let app = App::memory();
    let tasks = TasksRegistry::new(app.client());
    let call = tasks
        .send_email(address("a@b.c"), "ü".into(), "b".into())
        .countdown(Duration::from_secs(30))
        .priority(7);
    let args = call.encode_args().unwrap();
    let message = app
        .client()
        .message(&tasks::SEND_EMAIL, args, Map::new(), call.options());
    let raw = message.to_raw().unwrap();
    let keys: Vec<&str> = raw.headers.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "lang",
            "task",
            "id",
            "shadow",
            "eta",
            "expires",
            "group",
            "group_index",
            "retries",
            "timelimit",
            "root_id",
            "parent_id",
            "argsrepr",
            "kwargsrepr",
            "origin",
            "ignore_result",
            "replaced_task_nesting",
            "stamped_headers",
            "stamps"
        ]
    );
    assert_eq!(raw.headers["task"], "tasks.send_email");
    assert_eq!(raw.headers["retries"], 0);
    assert_eq!(
        raw.headers["timelimit"],
        json!([30, 20]),
        "Celery's order is [hard, soft], whole seconds as integers as Python writes them"
    );
    assert_eq!(raw.headers["root_id"], raw.headers["id"]);
    assert!(raw.headers["eta"].as_str().unwrap().ends_with("+00:00"));
    assert!(
        raw.headers["expires"].as_str().unwrap().ends_with("+00:00"),
        "the schema's `expires: 1h` becomes an absolute time"
    );
    assert_eq!(
        raw.headers["argsrepr"],
        "({'email': 'a@b.c', 'name': None}, 'ü', 'b', [], {})"
    );
    assert_eq!(raw.properties.priority, Some(7));
    assert_eq!(raw.properties.delivery_mode, Some(2));
    assert_eq!(
        raw.properties.correlation_id.as_deref(),
        raw.headers["id"].as_str()
    );
    assert_eq!(
        raw.properties.expiration.as_deref(),
        Some("3600000"),
        "Celery's per-message TTL in ms"
    );
    assert_eq!(
        String::from_utf8(raw.body).unwrap(),
        r#"[[{"email": "a@b.c", "name": null}, "\u00fc", "b", [], {}], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
    );
}

#[tokio::test]
async fn a_task_enqueues_a_child_task_through_the_injected_registry() {
    let (_app, worker, tasks) = start().await;
    let order = Order {
        id: Uuid::new_v4(),
        customer_id: Uuid::new_v4(),
        lines: vec![OrderLine {
            sku: "TEA-01".into(),
            quantity: 1,
            unit_price_cents: 450,
        }],
        shipping: None,
        metadata: BTreeMap::from([("email".into(), "buyer@example.com".into())]),
    };
    let outcome = tasks
        .process_order(order.clone())
        .with_notify(true)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(outcome.status, OrderStatus::Accepted);
    let outbox = worker
        .singleton::<celerity_shop::Outbox>()
        .expect("the outbox");
    let expected = (
        "buyer@example.com".to_owned(),
        format!("Order {} accepted", order.id),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while !outbox.sent().contains(&expected) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the confirmation email was never sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn components_are_built_per_task_from_shared_singletons() {
    let (_app, worker, tasks) = start().await;
    for n in 0..3 {
        let to = address(&format!("u{n}@example.com"));
        tasks
            .send_email(to, format!("m{n}"), String::new())
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap();
    }
    let outbox = worker
        .singleton::<celerity_shop::Outbox>()
        .expect("the outbox singleton");
    let mut sent = outbox.sent();
    sent.sort();
    assert_eq!(
        sent,
        [
            ("u0@example.com".to_owned(), "m0".to_owned()),
            ("u1@example.com".into(), "m1".into()),
            ("u2@example.com".into(), "m2".into())
        ]
    );
    worker.shutdown().await;
}
