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

/// A refund the payment gateway refused, because the connection to it failed.
#[derive(Debug, thiserror::Error)]
#[error("refund of order {0} refused")]
struct RefundRefused(u32, #[source] GatewayDown);

#[derive(Debug, thiserror::Error)]
#[error("the gateway did not answer")]
struct GatewayDown(#[source] std::io::Error);

fn ask_gateway(order: u32) -> Result<(), RefundRefused> {
    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
    Err(RefundRefused(order, GatewayDown(reset)))
}

static REFUND: TaskSpec = TaskSpec::new("billing.refund", &[ArgSpec::new("order", true)]);

#[derive(Deserialize)]
struct RefundArgs {
    order: u32,
}

impl Invoke<Billing> for RefundArgs {
    type Output = ();

    async fn invoke(self, _billing: &Billing, _ctx: &TaskContext) -> TaskResult<()> {
        match self.order {
            0 => Err(TaskError::new("Refused", "nothing to refund")
                .with_traceback("Traceback (most recent call last):\n  File \"ledger.py\", line 3, in refund\nRefused: nothing to refund\n")),
            1 => panic!("ledger {} is locked", self.order),
            2 => Err(TaskError::retry(Some(Duration::ZERO))),
            order => Ok(ask_gateway(order)?),
        }
    }
}

/// A worker running `billing.charge` and `billing.refund` from `celery`, named
/// `billing@test`.
async fn start_worker(app: &App, extended: bool) -> Worker {
    let mut builder = app.worker();
    builder
        .register::<Billing, RefundArgs>(&REFUND)
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
    assert!(meta.traceback.is_some());
    assert_eq!(step.traceback, meta.traceback, "and the same traceback");
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

/// The line of this file that contains `text`, for the tracebacks that name it.
fn line_of(text: &str) -> usize {
    let found = include_str!("results.rs")
        .lines()
        .position(|line| line.contains(text) && !line.contains("line_of("));
    found.expect("the line is in this file") + 1
}

/// The traceback stored for the failure of `billing.refund(order)`.
async fn refund_traceback(app: &App, order: u32) -> String {
    let failed = run(app, &message(app, &REFUND, json!([order]), json!({}))).await;
    assert_eq!(failed.status, TaskState::Failure);
    failed.traceback.expect("a failure has a traceback")
}

#[tokio::test]
async fn a_rust_error_is_stored_with_its_causes_and_where_it_was_made() {
    let app = App::memory();
    let worker = start_worker(&app, false).await;
    let traceback = refund_traceback(&app, 7).await;
    let direct = "\n\nThe above exception was the direct cause of the following exception:\n\n";
    assert_eq!(
        traceback,
        format!(
            "connection reset{direct}the gateway did not answer{direct}\
             Traceback (most recent call last):\n  File \"{}\", line {}, in billing.refund\n\
             celerity.exceptions.RefundRefused: refund of order 7 refused\n",
            file!(),
            line_of("Ok(ask_gateway(order)?)")
        ),
        "the `?` that made the TaskError is the frame"
    );

    // A TaskError made by its constructor: the constructor's caller.
    let declined = run(&app, &message(&app, &CHARGE, json!(["0002"]), json!({}))).await;
    assert_eq!(
        declined.traceback.as_deref(),
        Some(
            format!(
                "Traceback (most recent call last):\n  File \"{}\", line {}, in billing.charge\n\
                 celerity.exceptions.CardDeclined: card 0002 declined\n",
                file!(),
                line_of("return Err(TaskError::new(")
            )
            .as_str()
        )
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_panic_is_stored_with_its_message_and_where_it_happened() {
    let app = App::memory();
    let worker = start_worker(&app, false).await;
    let traceback = refund_traceback(&app, 1).await;
    assert_eq!(
        traceback,
        format!(
            "Traceback (most recent call last):\n  File \"{}\", line {}, in billing.refund\n\
             celerity.exceptions.Panic: ledger 1 is locked\n",
            file!(),
            line_of("panic!(\"ledger {} is locked\"")
        )
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn retries_run_out_where_the_retry_was_asked_for() {
    let app = App::memory();
    let worker = start_worker(&app, false).await;
    // The default policy allows 3 retries, each at once here.
    let traceback = refund_traceback(&app, 2).await;
    assert_eq!(
        traceback,
        format!(
            "Traceback (most recent call last):\n  File \"{}\", line {}, in billing.refund\n\
             celery.exceptions.MaxRetriesExceededError: Can't retry: exceeded max retries (3)\n",
            file!(),
            line_of("Err(TaskError::retry(Some(Duration::ZERO)))")
        )
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn a_traceback_the_task_gives_is_kept() {
    let app = App::memory();
    let worker = start_worker(&app, false).await;
    assert_eq!(
        refund_traceback(&app, 0).await,
        "Traceback (most recent call last):\n  File \"ledger.py\", line 3, in refund\nRefused: nothing to refund\n"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn every_failure_the_worker_records_has_a_traceback() {
    static MISSING: TaskSpec = TaskSpec::new("billing.missing", &[]);
    let app = App::memory();
    let worker = start_worker(&app, false).await;
    // Failures the worker makes itself: an unknown task, arguments that do not fit.
    let unknown = run(&app, &message(&app, &MISSING, json!([]), json!({}))).await;
    let unfit = run(&app, &message(&app, &CHARGE, json!([1, 2, 3]), json!({}))).await;
    for (meta, last_line) in [
        (unknown, "celery.exceptions.NotRegistered: billing.missing"),
        (unfit, "TypeError: "),
    ] {
        assert_eq!(meta.status, TaskState::Failure);
        let traceback = meta.traceback.expect("a traceback");
        assert!(
            traceback.starts_with("Traceback (most recent call last):\n  File \"")
                && traceback.lines().last().unwrap().starts_with(last_line),
            "{traceback}"
        );
    }
    worker.shutdown().await;
}
