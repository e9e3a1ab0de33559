//! What a worker records with each result, on the embedded broker and backend: the
//! request's group and parent, Celery's extended fields under `result_extended`, and the
//! traceback of every failure.
//!
//! The argument structs and `Invoke` impls are written here the way generated code
//! writes them.

use std::time::Duration;

use celerity::protocol::{ResultMeta, TaskMessage, to_python_json};
use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, SendOptions, TaskContext, TaskError, TaskResult,
    TaskSpec, TaskState, Worker,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

const WAIT: Duration = Duration::from_secs(10);

struct Billing;

impl Component for Billing {
    type Deps = ();

    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Billing)
    }
}

static CHARGE: TaskSpec = TaskSpec::new(
    "billing.charge",
    &[ArgSpec::new("card", true), ArgSpec::new("cents", false)],
);

#[derive(Deserialize)]
struct ChargeArgs {
    card: String,
    #[serde(default)]
    cents: i64,
}

impl Invoke<Billing> for ChargeArgs {
    type Output = String;

    async fn invoke(self, _billing: &Billing, _ctx: &TaskContext) -> TaskResult<String> {
        if self.card.ends_with("0002") {
            return Err(TaskError::new(
                "CardDeclined",
                format!("card {} declined", self.card),
            ));
        }
        Ok(format!("charged {} to {}", self.cents, self.card))
    }
}

/// A worker running `billing.charge` from `celery`, named `billing@test`.
async fn start_worker(app: &App, extended: bool) -> Worker {
    let mut builder = app.worker();
    builder
        .register::<Billing, ChargeArgs>(&CHARGE)
        .queues(["celery"])
        .hostname("billing@test")
        .result_extended(extended);
    builder.start().await.expect("the worker starts")
}

/// The message of `spec` with `args` and `kwargs`.
fn message(app: &App, spec: &TaskSpec, args: Value, kwargs: Value) -> TaskMessage {
    let (Value::Array(args), Value::Object(kwargs)) = (args, kwargs) else {
        panic!("args must be a list and kwargs an object")
    };
    app.client()
        .message(spec, args, kwargs, &SendOptions::default())
}

/// Publishes `message` and waits for its final result, as stored.
async fn run(app: &App, message: &TaskMessage) -> ResultMeta {
    app.client()
        .publish("celery", message)
        .await
        .expect("published");
    let result = app.client().result::<Value>(message.id());
    let _ = result.get(WAIT).await;
    stored(app, message.id()).await
}

async fn stored(app: &App, id: &str) -> ResultMeta {
    app.client()
        .backend()
        .get(id)
        .await
        .expect("the backend answers")
        .unwrap_or_else(|| panic!("no result stored for {id}"))
}

/// The keys after `date_done`, in the order they are written.
fn request_keys(meta: &ResultMeta) -> Vec<&str> {
    meta.extra.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn group_and_parent_ids_are_recorded_without_extended_results() {
    let app = App::memory();
    let worker = start_worker(&app, false).await;
    let mut member = message(&app, &CHARGE, json!(["4242"]), json!({"cents": 5}));
    member.headers.group = Some("g-1".into());
    member.headers.parent_id = Some("p-1".into());
    let meta = run(&app, &member).await;
    assert_eq!(meta.status, TaskState::Success);
    assert_eq!(request_keys(&meta), ["group_id", "parent_id"]);
    assert_eq!(meta.extra["group_id"], "g-1");
    assert_eq!(meta.extra["parent_id"], "p-1");

    // Neither is written when the request has none (Celery tests `if request.group`).
    let alone = message(&app, &CHARGE, json!(["4242"]), json!({}));
    let meta = run(&app, &alone).await;
    assert!(meta.extra.is_empty(), "{:?}", meta.extra);
    worker.shutdown().await;
}

#[tokio::test]
async fn extended_results_record_the_request_as_celery_writes_it() {
    let app = App::memory();
    let worker = start_worker(&app, true).await;
    let mut sent = message(&app, &CHARGE, json!(["4242"]), json!({"cents": 500}));
    sent.headers.parent_id = Some("p-1".into());
    let meta = run(&app, &sent).await;
    assert_eq!(meta.status, TaskState::Success);
    let json = String::from_utf8(to_python_json(&meta).unwrap()).unwrap();
    let expected_tail = format!(
        r#""parent_id": "p-1", "name": "billing.charge", "args": ["4242"], "kwargs": {{"cents": 500}}, "worker": "billing@test", "retries": 0, "queue": "celery", "task_id": "{}"}}"#,
        sent.id()
    );
    assert!(
        json.ends_with(&expected_tail),
        "Celery's keys in Celery's order:\n{json}"
    );

    // A failure records them too.
    let declined = message(&app, &CHARGE, json!(["0002"]), json!({}));
    let meta = run(&app, &declined).await;
    assert_eq!(meta.status, TaskState::Failure);
    assert_eq!(
        request_keys(&meta),
        ["name", "args", "kwargs", "worker", "retries", "queue"]
    );
    assert_eq!(meta.extra["args"], json!(["0002"]));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_chain_step_failed_by_an_earlier_one_records_its_signature() {
    let app = App::memory();
    let worker = start_worker(&app, true).await;
    let mut first = message(&app, &CHARGE, json!(["0002"]), json!({}));
    // The rest of the chain, as Celery embeds it: one step, with its id frozen.
    let step = json!({
        "task": "billing.refund", "args": [7], "kwargs": {"why": "declined"},
        "options": {"task_id": "step-2", "group_id": "g-9"},
        "subtask_type": null, "immutable": false,
    });
    first.embed.chain = Some(vec![step]);
    let meta = run(&app, &first).await;
    assert_eq!(meta.status, TaskState::Failure);
    let step = stored(&app, "step-2").await;
    assert_eq!(step.status, TaskState::Failure);
    assert_eq!(step.result, meta.result, "the same exception");
    // As `Backend._fail_chain` writes it: from the signature, no worker, no queue.
    let mut expected = Map::new();
    expected.insert("group_id".into(), json!("g-9"));
    expected.insert("name".into(), json!("billing.refund"));
    expected.insert("args".into(), json!([7]));
    expected.insert("kwargs".into(), json!({"why": "declined"}));
    expected.insert("worker".into(), Value::Null);
    expected.insert("retries".into(), json!(0));
    expected.insert("queue".into(), Value::Null);
    assert_eq!(step.extra, expected);
    assert_eq!(
        request_keys(&step),
        expected.keys().map(String::as_str).collect::<Vec<_>>()
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn an_unknown_task_records_null_extended_fields_as_celery_does() {
    static MISSING: TaskSpec = TaskSpec::new("billing.missing", &[]);
    let app = App::memory();
    let worker = start_worker(&app, true).await;
    let unknown = message(&app, &MISSING, json!([1]), json!({}));
    let meta = run(&app, &unknown).await;
    assert_eq!(meta.status, TaskState::Failure);
    assert_eq!(
        request_keys(&meta),
        ["name", "args", "kwargs", "worker", "retries", "queue"]
    );
    assert!(meta.extra.values().all(Value::is_null), "{:?}", meta.extra);
    worker.shutdown().await;
}
