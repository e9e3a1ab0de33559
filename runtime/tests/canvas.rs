//! Workflows on the embedded broker and backend: those a Rust client builds with the typed
//! canvas (chain, group, chord, links), and those Python Celery sends, whose messages are
//! written here exactly as Celery 5.7's `chain(...).apply_async()` and
//! `apply_async(link=..., link_error=...)` write them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celerity::backend::MemoryBackend;
use celerity::broker::MemoryBroker;
use celerity::protocol::{Properties, RawMessage, TaskMessage};
use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, ResultError, TaskContext, TaskError, TaskResult,
    TaskSpec, TaskState, Worker,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// One run of a task: what it was given and where it sat in the workflow.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    task: String,
    id: String,
    args: Value,
    parent_id: Option<String>,
    root_id: Option<String>,
    queue: String,
}

#[derive(Default)]
struct Log(Mutex<Vec<Run>>);

impl Log {
    fn runs(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }

    fn of(&self, task: &str) -> Vec<Run> {
        self.runs().into_iter().filter(|r| r.task == task).collect()
    }
}

struct Steps {
    log: Arc<Log>,
}

impl Component for Steps {
    type Deps = Arc<Log>;

    async fn build(log: Arc<Log>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Steps { log })
    }
}

impl Steps {
    fn record(&self, ctx: &TaskContext, args: Value) {
        self.log.0.lock().unwrap().push(Run {
            task: ctx.name.clone(),
            id: ctx.id.clone(),
            args,
            parent_id: ctx.parent_id.clone(),
            root_id: ctx.root_id.clone(),
            queue: ctx.queue.clone(),
        });
    }
}

/// Declares a task spec, its argument struct and its `Invoke` impl, as generated code does.
macro_rules! step {
    ($spec:ident, $args:ident = $name:literal [$($field:ident : $ty:ty),*] => $output:ty, |$a:ident| $body:expr) => {
        static $spec: TaskSpec = TaskSpec::new($name, &[$(ArgSpec::new(stringify!($field), true)),*]);

        #[derive(Deserialize, Serialize)]
        struct $args { $($field: $ty),* }

        impl Invoke<Steps> for $args {
            type Output = $output;

            async fn invoke(self, steps: &Steps, ctx: &TaskContext) -> TaskResult<$output> {
                let $a = self;
                steps.record(ctx, json!([$(&$a.$field),*]));
                $body
            }
        }
    };
}

step!(ADD, AddArgs = "t.add" [x: i64, y: i64] => i64, |a| Ok(a.x + a.y));
step!(MUL, MulArgs = "t.mul" [x: i64, y: i64] => i64, |a| Ok(a.x * a.y));
step!(FAIL, FailArgs = "t.fail" [x: i64] => i64, |a| Err(TaskError::python("KeyError", "builtins", a.x.to_string())));
step!(ON_ERROR, OnErrorArgs = "t.on_error" [task_id: String] => (), |_a| Ok(()));
step!(RECORD, RecordArgs = "t.record" [x: i64] => i64, |a| Ok(a.x));
step!(SUM, SumArgs = "t.sum" [xs: Vec<i64>] => i64, |a| Ok(a.xs.iter().sum()));

struct Harness {
    app: App,
    log: Arc<Log>,
    _worker: Worker,
}

async fn harness() -> Harness {
    harness_on(&["celery", "other"]).await
}

/// A worker of the step tasks consuming `queues`.
async fn harness_on(queues: &[&str]) -> Harness {
    let app = App::new(MemoryBroker::new(), MemoryBackend::new());
    let mut builder = app.worker();
    builder
        .singleton(Log::default())
        .concurrency(2)
        .queues(queues.iter().copied());
    builder
        .register::<Steps, AddArgs>(&ADD)
        .register::<Steps, MulArgs>(&MUL)
        .register::<Steps, FailArgs>(&FAIL)
        .register::<Steps, OnErrorArgs>(&ON_ERROR)
        .register::<Steps, RecordArgs>(&RECORD)
        .register::<Steps, SumArgs>(&SUM);
    let worker = builder.start().await.expect("the worker starts");
    let log = worker.singleton::<Log>().expect("the log singleton");
    Harness {
        app,
        log,
        _worker: worker,
    }
}

/// The client's reply queue, as a Python client writes it into every step it built.
const REPLY_TO: &str = "b584e7a2-eac7-3092-ace1-c2ba67527a59";

/// A message as Celery 5.7's client writes it (headers, properties and body captured from
/// `chain(...).apply_async()` through kombu's memory transport).
fn python_message(task: &str, id: &str, args: Value, embed: Value) -> RawMessage {
    let argsrepr = format!(
        "({})",
        args.as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let headers = json!({"lang": "py", "task": task, "id": id, "shadow": null, "eta": null,
        "expires": null, "group": null, "group_index": null, "retries": 0,
        "timelimit": [null, null], "root_id": id, "parent_id": null, "argsrepr": argsrepr,
        "kwargsrepr": "{}", "origin": "gen7886@vm", "ignore_result": false,
        "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}});
    let body = serde_json::to_vec(&json!([args, {}, embed])).unwrap();
    RawMessage {
        headers: headers.as_object().cloned().unwrap(),
        properties: Properties {
            correlation_id: Some(id.to_owned()),
            reply_to: Some(REPLY_TO.to_owned()),
            delivery_mode: Some(2),
            priority: Some(0),
            expiration: None,
        },
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        body,
    }
}

/// A chain step as Celery writes it in the embed.
fn step(task: &str, args: Value, options: Value, immutable: bool) -> Value {
    json!({"task": task, "args": args, "kwargs": {}, "options": options,
        "subtask_type": null, "immutable": immutable})
}

impl Harness {
    async fn publish(&self, queue: &str, message: RawMessage) {
        self.app
            .client()
            .broker()
            .publish(queue, message)
            .await
            .expect("published");
    }

    /// The next `n` messages on `queue`, which no worker consumes, decoded.
    async fn take(&self, queue: &str, n: usize) -> Vec<TaskMessage> {
        let queues = [queue.to_owned()];
        let mut consumer = self.app.client().broker().consume(&queues).await.unwrap();
        let mut messages = Vec::new();
        for _ in 0..n {
            let delivery = tokio::time::timeout(WAIT, consumer.next())
                .await
                .expect("a message")
                .expect("delivered");
            let (raw, _queue, _redelivered, acker) = delivery.into_parts();
            acker.ack().await.unwrap();
            messages.push(TaskMessage::from_raw(&raw).expect("a task message"));
        }
        messages
    }

    async fn result(&self, id: &str) -> Result<Value, ResultError> {
        self.app.client().result::<Value>(id).get(WAIT).await
    }

    /// Waits until `task` has run `n` times.
    async fn runs_of(&self, task: &str, n: usize) -> Vec<Run> {
        for _ in 0..600 {
            let runs = self.log.of(task);
            if runs.len() >= n {
                return runs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{task} ran {:?}, expected {n} runs", self.log.of(task));
    }
}

/// `chain(add.s(1, 2), add.s(3), mul.si(2, 5).set(queue='other'), add.s(4))`, with the
/// chain's own id on the last step (`apply_async(task_id=...)`).
fn python_chain_of_four() -> RawMessage {
    let options = |id: &str| json!({"task_id": id, "reply_to": REPLY_TO});
    let chain = json!([
        step("t.add", json!([4]), options("chain-4"), false),
        step(
            "t.mul",
            json!([2, 5]),
            json!({"queue": "other", "task_id": "chain-3", "reply_to": REPLY_TO}),
            true
        ),
        step("t.add", json!([3]), options("chain-2"), false),
    ]);
    let embed = json!({"callbacks": null, "errbacks": null, "chain": chain, "chord": null});
    python_message("t.add", "chain-1", json!([1, 2]), embed)
}

#[tokio::test(start_paused = true)]
async fn a_python_chain_of_four_runs_each_step_with_the_previous_result() {
    let h = harness().await;
    h.publish("celery", python_chain_of_four()).await;
    assert_eq!(h.result("chain-4").await.unwrap(), json!(14));
    let runs = h.log.runs();
    let seen: Vec<(&str, &str, &Value)> = runs
        .iter()
        .map(|r| (r.task.as_str(), r.id.as_str(), &r.args))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("t.add", "chain-1", &json!([1, 2])),
            ("t.add", "chain-2", &json!([3, 3])),
            ("t.mul", "chain-3", &json!([2, 5])),
            ("t.add", "chain-4", &json!([10, 4])),
        ]
    );
    // Each step is the child of the one before, all in the first one's workflow.
    let parents: Vec<Option<&str>> = runs.iter().map(|r| r.parent_id.as_deref()).collect();
    assert_eq!(
        parents,
        [None, Some("chain-1"), Some("chain-2"), Some("chain-3")]
    );
    assert!(runs.iter().all(|r| r.root_id.as_deref() == Some("chain-1")));
    // The step given a queue went there; the others to their task's queue.
    let queues: Vec<&str> = runs.iter().map(|r| r.queue.as_str()).collect();
    assert_eq!(queues, ["celery", "celery", "other", "celery"]);
    // Every step's result is stored under the id Python chose for it.
    for (id, value) in [("chain-1", 3), ("chain-2", 6), ("chain-3", 10)] {
        assert_eq!(h.result(id).await.unwrap(), json!(value));
    }
}

#[tokio::test(start_paused = true)]
async fn an_immutable_step_ignores_the_parent_result() {
    let h = harness().await;
    let chain = json!([step(
        "t.mul",
        json!([6, 7]),
        json!({"task_id": "si-2"}),
        true
    )]);
    let embed = json!({"callbacks": null, "errbacks": null, "chain": chain, "chord": null});
    h.publish(
        "celery",
        python_message("t.add", "si-1", json!([1, 1]), embed),
    )
    .await;
    assert_eq!(h.result("si-2").await.unwrap(), json!(42));
    assert_eq!(h.log.of("t.mul")[0].args, json!([6, 7]));
}

/// `chain(add.s(1, 2), fail.s(), add.s(4)).on_error(on_error.s())`: every step carries the
/// errback, the first in its embed and the others in their `link_error` option.
#[tokio::test(start_paused = true)]
async fn a_failure_in_the_middle_stops_the_chain_and_runs_the_errback_with_the_task_id() {
    let h = harness().await;
    let errback = step("t.on_error", json!([]), json!({}), false);
    let options = |id: &str| json!({"task_id": id, "reply_to": REPLY_TO, "link_error": [errback]});
    let chain = json!([
        step("t.add", json!([4]), options("fail-3"), false),
        step("t.fail", json!([]), options("fail-2"), false),
    ]);
    let embed = json!({"callbacks": null, "errbacks": [errback], "chain": chain, "chord": null});
    h.publish(
        "celery",
        python_message("t.add", "fail-1", json!([1, 2]), embed),
    )
    .await;

    let errbacks = h.runs_of("t.on_error", 1).await;
    assert_eq!(errbacks[0].args, json!(["fail-2"]));
    assert_eq!(errbacks[0].parent_id.as_deref(), Some("fail-2"));
    assert_eq!(errbacks[0].root_id.as_deref(), Some("fail-1"));
    // The failed step got the parent's result; the failure is stored under its id and,
    // as Celery's `_fail_chain` does, under the id of every step that will not run.
    assert_eq!(h.log.of("t.fail")[0].args, json!([3]));
    for id in ["fail-2", "fail-3"] {
        match h.result(id).await {
            Err(ResultError::Failed(failure)) => {
                assert_eq!(failure.exc_type, "KeyError");
                assert_eq!(failure.message, "3");
            }
            other => panic!("{id}: expected the KeyError, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        h.log.of("t.add").len(),
        1,
        "the chain went on after a failure"
    );
    assert_eq!(h.log.of("t.on_error").len(), 1, "one errback, sent once");
}

/// `add.apply_async((1, 2), link=[record.s(), add.s(10)], link_error=on_error.s())`.
#[tokio::test(start_paused = true)]
async fn link_callbacks_run_after_success_with_the_result_and_errbacks_do_not() {
    let h = harness().await;
    let embed = json!({
        "callbacks": [
            step("t.record", json!([]), json!({}), false),
            step("t.add", json!([10]), json!({"task_id": "link-2"}), false),
        ],
        "errbacks": [step("t.on_error", json!([]), json!({}), false)],
        "chain": null, "chord": null});
    h.publish(
        "celery",
        python_message("t.add", "link-1", json!([1, 2]), embed),
    )
    .await;
    assert_eq!(h.result("link-2").await.unwrap(), json!(13));
    let recorded = h.runs_of("t.record", 1).await;
    assert_eq!(recorded[0].args, json!([3]));
    assert_eq!(recorded[0].parent_id.as_deref(), Some("link-1"));
    assert_eq!(h.result("link-1").await.unwrap(), json!(3));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.log.of("t.on_error").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_plain_task_failure_runs_its_errback_and_not_its_callbacks() {
    let h = harness().await;
    let embed = json!({
        "callbacks": [step("t.record", json!([]), json!({}), false)],
        "errbacks": [step("t.on_error", json!([]), json!({"task_id": "err-cb"}), false)],
        "chain": null, "chord": null});
    h.publish(
        "celery",
        python_message("t.fail", "err-1", json!([7]), embed),
    )
    .await;
    assert_eq!(h.result("err-cb").await.unwrap(), Value::Null);
    assert_eq!(h.log.of("t.on_error")[0].args, json!(["err-1"]));
    assert!(matches!(
        h.app
            .client()
            .result::<Value>("err-1")
            .state()
            .await
            .unwrap(),
        TaskState::Failure
    ));
    assert!(h.log.of("t.record").is_empty());
}

/// A step naming a task this worker does not know goes where Celery's router sends it
/// (`celery`), as the message a Python worker expects: the parent's result prepended,
/// this task as parent, the same root, the rest of the chain and the client's reply queue.
#[tokio::test(start_paused = true)]
async fn a_step_for_a_python_task_is_sent_as_celery_sends_it() {
    let h = harness_on(&["rust"]).await;
    let last = step("py.last", json!([]), json!({"task_id": "py-3"}), false);
    let chain = json!([
        last,
        step(
            "py.mul",
            json!([5]),
            json!({"task_id": "py-2", "reply_to": REPLY_TO, "link_error": [step("py.err", json!([]), json!({}), false)]}),
            false
        ),
    ]);
    let embed = json!({"callbacks": null, "errbacks": null, "chain": chain, "chord": null});
    let mut first = python_message("t.add", "py-1", json!([1, 2]), embed);
    first.headers.insert("root_id".into(), json!("root-0"));
    h.publish("rust", first).await;

    let sent = h.take("celery", 1).await.remove(0);
    assert_eq!(sent.task(), "py.mul");
    assert_eq!(sent.id(), "py-2");
    assert_eq!(sent.args, vec![json!(3), json!(5)]);
    assert_eq!(sent.headers.parent_id.as_deref(), Some("py-1"));
    assert_eq!(sent.headers.root_id.as_deref(), Some("root-0"));
    assert_eq!(sent.headers.argsrepr.as_deref(), Some("(3, 5)"));
    assert!(sent.headers.origin.is_some());
    assert_eq!(sent.properties.correlation_id.as_deref(), Some("py-2"));
    assert_eq!(sent.properties.reply_to.as_deref(), Some(REPLY_TO));
    assert_eq!(sent.embed.chain, Some(vec![last]));
    let errbacks = sent.embed.errbacks.expect("the step's link_error");
    assert_eq!(errbacks[0]["task"], "py.err");
    assert_eq!(sent.embed.callbacks, None);
}

/// Several callbacks are sent as one group (`trace.py`): the same group id, and each its
/// index.
#[tokio::test(start_paused = true)]
async fn several_callbacks_are_sent_as_a_group() {
    let h = harness_on(&["rust"]).await;
    let embed = json!({
        "callbacks": [
            step("py.a", json!([]), json!({}), false),
            step("py.b", json!([1]), json!({}), true),
        ],
        "errbacks": null, "chain": null, "chord": null});
    h.publish("rust", python_message("t.add", "g-1", json!([1, 2]), embed))
        .await;
    let sent = h.take("celery", 2).await;
    let (a, b) = (&sent[0], &sent[1]);
    assert_eq!((a.task(), a.args.clone()), ("py.a", vec![json!(3)]));
    assert_eq!((b.task(), b.args.clone()), ("py.b", vec![json!(1)]));
    assert!(a.headers.group.is_some());
    assert_eq!(a.headers.group, b.headers.group);
    assert_eq!(
        (a.headers.group_index, b.headers.group_index),
        (Some(0), Some(1))
    );
}

/// `chain(add.s(1, 2), group(a.s(10), b.s(20)))`: the group's tasks each get the result
/// prepended and carry the group's id (its `task_id`) and their index.
#[tokio::test(start_paused = true)]
async fn a_chain_ending_in_a_group_sends_each_member_with_the_group_id() {
    let h = harness_on(&["rust"]).await;
    let member = |task: &str, arg: i64, id: &str, index: u64| {
        step(
            task,
            json!([arg]),
            json!({"task_id": id, "reply_to": REPLY_TO, "group_index": index}),
            false,
        )
    };
    let group = json!({"task": "celery.group", "args": [],
        "kwargs": {"tasks": [member("py.a", 10, "grp-a", 0), member("py.b", 20, "grp-b", 1)]},
        "options": {"task_id": "grp-1", "root_id": null, "parent_id": null},
        "subtask_type": "group", "immutable": false});
    let embed = json!({"callbacks": null, "errbacks": null, "chain": [group], "chord": null});
    h.publish(
        "rust",
        python_message("t.add", "grp-0", json!([1, 2]), embed),
    )
    .await;
    let sent = h.take("celery", 2).await;
    let seen: Vec<_> = sent
        .iter()
        .map(|m| {
            (
                m.task(),
                m.id(),
                m.args.clone(),
                m.headers.group.as_deref(),
                m.headers.group_index,
                m.headers.parent_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "py.a",
                "grp-a",
                vec![json!(3), json!(10)],
                Some("grp-1"),
                Some(0),
                Some("grp-0")
            ),
            (
                "py.b",
                "grp-b",
                vec![json!(3), json!(20)],
                Some("grp-1"),
                Some(1),
                Some("grp-0")
            ),
        ]
    );
}

/// `add.apply_async((1, 2), link=group(record.s(), add.s(5)))`.
#[tokio::test(start_paused = true)]
async fn a_group_link_runs_each_member_with_the_result() {
    let h = harness().await;
    let group = json!({"task": "celery.group", "args": [],
        "kwargs": {"tasks": [
            step("t.record", json!([]), json!({}), false),
            step("t.add", json!([5]), json!({"task_id": "glink-2"}), false),
        ]},
        "options": {}, "subtask_type": "group", "immutable": false});
    let embed = json!({"callbacks": [group], "errbacks": null, "chain": null, "chord": null});
    h.publish(
        "celery",
        python_message("t.add", "glink-1", json!([1, 2]), embed),
    )
    .await;
    assert_eq!(h.result("glink-2").await.unwrap(), json!(8));
    assert_eq!(h.runs_of("t.record", 1).await[0].args, json!([3]));
}

/// `chain(add.s(1, 2), chord([add.s(10), add.s(20)], sum.s()))` from Python: the chord
/// step's header tasks get the previous result, the body gets the header's results.
#[tokio::test(start_paused = true)]
async fn a_chord_step_in_a_python_chain_runs_its_header_then_its_body() {
    let h = harness().await;
    let chord = json!({"task": "celery.chord", "args": [],
        "kwargs": {"kwargs": {}, "header": [
            step("t.add", json!([10]), json!({"task_id": "part-1"}), false),
            step("t.add", json!([20]), json!({"task_id": "part-2"}), false)],
            "body": step("t.sum", json!([]), json!({"task_id": "chord-body"}), false)},
        "options": {"task_id": "chord-group"}, "subtask_type": "chord", "immutable": false});
    let embed = json!({"callbacks": null, "errbacks": null, "chain": [chord], "chord": null});
    h.publish(
        "celery",
        python_message("t.add", "chord-1", json!([1, 2]), embed),
    )
    .await;
    assert_eq!(h.result("chord-body").await.unwrap(), json!(36));
    assert_eq!(h.result("part-2").await.unwrap(), json!(23));
    assert_eq!(h.log.of("t.sum")[0].args, json!([[13, 23]]));
    assert_eq!(h.log.of("t.sum").len(), 1);
}

/// A chord frozen by Celery holds its header as a group signature (`_chord.freeze`), as
/// `chain(add.s(1, 2), chord([add.s(10), add.s(20)], sum.s()))` sends it.
#[tokio::test(start_paused = true)]
async fn a_frozen_python_chord_with_a_group_header_runs() {
    let h = harness().await;
    let header = json!({"task": "celery.group", "args": [], "subtask_type": "group",
        "immutable": false, "options": {"task_id": "frozen-group"},
        "kwargs": {"tasks": [
            step("t.add", json!([10]), json!({"task_id": "frozen-1", "group_index": 0}), false),
            step("t.add", json!([20]), json!({"task_id": "frozen-2", "group_index": 1}), false)]}});
    let chord = json!({"task": "celery.chord", "args": [], "subtask_type": "chord",
        "immutable": false, "options": {"task_id": "frozen-group"},
        "kwargs": {"kwargs": {}, "header": header,
            "body": step("t.sum", json!([]), json!({"task_id": "frozen-body"}), false)}});
    let embed = json!({"callbacks": null, "errbacks": null, "chain": [chord], "chord": null});
    h.publish(
        "celery",
        python_message("t.add", "frozen-0", json!([1, 2]), embed),
    )
    .await;
    assert_eq!(h.result("frozen-body").await.unwrap(), json!(36));
    assert_eq!(h.result("frozen-0").await.unwrap(), json!(3));
}

// Workflows built in Rust with the typed canvas.

use celerity::canvas::{Sig, Takes, arg, chain, chord, group};
use celerity::{SendOptions, TaskCall};

/// The signature of `spec` taking the previous result as its first argument, followed by
/// `rest`: what the generated `<task>_s(...)` methods build.
fn partial<A, R>(spec: &'static TaskSpec, rest: &[i64]) -> Sig<Takes<A>, R> {
    Sig::of_task(
        spec,
        rest.iter().map(arg),
        serde_json::Map::new(),
        &SendOptions::default(),
    )
}

impl Harness {
    fn add(&self, x: i64, y: i64) -> TaskCall<AddArgs, i64> {
        TaskCall::new(&self.app.client(), &ADD, AddArgs { x, y })
    }
}

#[tokio::test(start_paused = true)]
async fn a_typed_chain_of_four_passes_each_result_on_and_knows_its_parents() {
    let h = harness().await;
    let workflow = chain(h.add(1, 2).s())
        .then(partial::<i64, i64>(&ADD, &[3]))
        .then(TaskCall::<_, i64>::new(&h.app.client(), &MUL, MulArgs { x: 2, y: 5 }).si())
        .then(partial::<i64, i64>(&ADD, &[4]));
    let last = h.app.client().send(workflow).await.unwrap();
    assert_eq!(last.get(WAIT).await.unwrap(), 14);
    let runs = h.log.runs();
    let seen: Vec<(&str, &Value)> = runs.iter().map(|r| (r.task.as_str(), &r.args)).collect();
    assert_eq!(
        seen,
        [
            ("t.add", &json!([1, 2])),
            ("t.add", &json!([3, 3])),
            ("t.mul", &json!([2, 5])),
            ("t.add", &json!([10, 4]))
        ]
    );
    // The handle's parents are the earlier steps, newest first, with their results.
    let mut parents = Vec::new();
    let mut step = last.parent();
    while let Some(parent) = step {
        parents.push(parent.get(WAIT).await.unwrap());
        step = parent.parent();
    }
    assert_eq!(parents, [json!(10), json!(6), json!(3)]);
    assert_eq!(runs[3].id, last.id());
    assert!(
        runs.iter()
            .all(|r| r.root_id.as_deref() == Some(runs[0].id.as_str()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_group_of_fifty_returns_every_result_in_order_and_can_be_saved_and_restored() {
    let h = harness().await;
    let sent = h
        .app
        .client()
        .send(group((0..50).map(|i| h.add(i, i).s())))
        .await
        .unwrap();
    let values = sent.get(WAIT).await.unwrap();
    assert_eq!(values, (0..50).map(|i| 2 * i).collect::<Vec<_>>());
    assert_eq!(sent.results().len(), 50);
    assert_eq!(sent.completed_count().await.unwrap(), 50);

    sent.save().await.unwrap();
    let client = h.app.client();
    let restored = celerity::canvas::GroupResult::<i64>::restore(&client, sent.id())
        .await
        .unwrap()
        .expect("the saved group");
    assert_eq!(restored.get(WAIT).await.unwrap(), values);
    restored.delete().await.unwrap();
    assert!(
        celerity::canvas::GroupResult::<i64>::restore(&client, sent.id())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn group_members_carry_the_group_id_and_their_index() {
    let h = harness_on(&["nobody"]).await;
    let client = h.app.client();
    let sent = client
        .send(group((0..3).map(|i| h.add(i, 1).s().queue("held"))))
        .await
        .unwrap();
    let messages = h.take("held", 3).await;
    for (index, message) in messages.iter().enumerate() {
        assert_eq!(message.headers.group.as_deref(), Some(sent.id()));
        assert_eq!(message.headers.group_index, Some(index as u64));
        assert_eq!(message.id(), sent.results()[index].id());
    }
}

#[tokio::test(start_paused = true)]
async fn a_chord_of_twenty_sends_its_body_once_with_every_result_in_order() {
    let h = harness().await;
    let header = group((1..=20).map(|i| h.add(i, 0).s()));
    let total = h
        .app
        .client()
        .send(chord(header, partial::<Vec<i64>, i64>(&SUM, &[])))
        .await
        .unwrap();
    assert_eq!(total.get(WAIT).await.unwrap(), 210);
    let sums = h.log.of("t.sum");
    assert_eq!(sums.len(), 1);
    assert_eq!(sums[0].args, json!([(1..=20).collect::<Vec<i64>>()]));
}

#[tokio::test(start_paused = true)]
async fn a_chain_containing_a_group_and_a_chord_whose_body_is_a_chain() {
    let h = harness().await;
    let client = h.app.client();
    // add(1, 1), then each of add(·, 1) and add(·, 2) on its result.
    let fan_out = chain(h.add(1, 1).s()).then(group([
        partial::<i64, i64>(&ADD, &[1]),
        partial::<i64, i64>(&ADD, &[2]),
    ]));
    let sent = client.send(fan_out).await.unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), [3, 4]);

    // chord(add(1, 2), add(3, 4)) → sum → mul(·, 10).
    let body = chain(partial::<Vec<i64>, i64>(&SUM, &[])).then(partial::<i64, i64>(&MUL, &[10]));
    let sent = client
        .send(chord(group([h.add(1, 2).s(), h.add(3, 4).s()]), body))
        .await
        .unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), 100);

    // A group followed by a step is a chord, as in Celery.
    let upgraded =
        chain(group([h.add(1, 1).s(), h.add(2, 2).s()])).then(partial::<Vec<i64>, i64>(&SUM, &[]));
    let sent = client.send(upgraded).await.unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_a_typed_chain_stops_it_and_sends_the_errback_the_task_id() {
    let h = harness().await;
    let on_error = partial::<String, ()>(&ON_ERROR, &[]);
    let failing = partial::<i64, i64>(&FAIL, &[])
        .link_error(on_error)
        .unwrap();
    let workflow = chain(h.add(1, 2).s())
        .then(failing)
        .then(partial::<i64, i64>(&ADD, &[4]));
    let last = h.app.client().send(workflow).await.unwrap();
    match last.get(WAIT).await {
        Err(ResultError::Failed(failure)) => {
            assert_eq!(
                (failure.exc_type.as_str(), failure.message.as_str()),
                ("KeyError", "3")
            );
        }
        other => panic!("expected the chain to fail, got {other:?}"),
    }
    let failed_id = last.parent().unwrap().id().to_owned();
    let errbacks = h.runs_of("t.on_error", 1).await;
    assert_eq!(errbacks[0].args, json!([failed_id]));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        h.log.of("t.add").len(),
        1,
        "the step after the failure did not run"
    );
}

#[tokio::test(start_paused = true)]
async fn a_link_callback_gets_the_result() {
    let h = harness().await;
    let sent = h
        .app
        .client()
        .send(
            h.add(20, 1)
                .s()
                .link(partial::<i64, i64>(&RECORD, &[]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), 21);
    assert_eq!(h.runs_of("t.record", 1).await[0].args, json!([21]));
}

#[tokio::test(start_paused = true)]
async fn a_failed_chord_part_fails_the_body_with_a_chord_error_and_never_runs_it() {
    let h = harness().await;
    let on_error = partial::<String, ()>(&ON_ERROR, &[]);
    let body = partial::<Vec<i64>, i64>(&SUM, &[])
        .link_error(on_error)
        .unwrap();
    let header = group([
        h.add(1, 1).s(),
        TaskCall::<_, i64>::new(&h.app.client(), &FAIL, FailArgs { x: 7 }).s(),
        h.add(2, 2).s(),
    ]);
    let sent = h.app.client().send(chord(header, body)).await.unwrap();
    let failed_part = h.runs_of("t.fail", 1).await[0].id.clone();
    match sent.get(WAIT).await {
        Err(ResultError::Failed(failure)) => {
            assert_eq!(failure.exc_type, "ChordError");
            assert_eq!(failure.exc_module.as_deref(), Some("celery.exceptions"));
            assert_eq!(
                failure.message,
                format!("Dependency {failed_part} raised KeyError('7')")
            );
            // As Celery records it: the part's exception, then the ChordError it caused.
            // (The message is `BaseException.__str__`'s; KeyError's quotes are not copied.)
            let traceback = failure.traceback.expect("a traceback");
            assert!(
                traceback.starts_with(
                    "KeyError: 7\n\nThe above exception was the direct cause of the following exception:\n\nTraceback (most recent call last):\n  File \""
                ) && traceback.ends_with(&format!(
                    ", in t.sum\ncelery.exceptions.ChordError: Dependency {failed_part} raised KeyError('7')\n"
                )),
                "{traceback}"
            );
        }
        other => panic!("expected a ChordError, got {other:?}"),
    }
    assert_eq!(h.runs_of("t.on_error", 1).await[0].args, json!([sent.id()]));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.log.of("t.sum").is_empty(), "the body ran");
}

#[tokio::test(start_paused = true)]
async fn an_empty_chord_header_sends_the_body_an_empty_list() {
    let h = harness().await;
    let header = group(Vec::<Sig<(), i64>>::new());
    let sent = h
        .app
        .client()
        .send(chord(header, partial::<Vec<i64>, i64>(&SUM, &[])))
        .await
        .unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn chains_as_group_members_and_as_chord_header_parts() {
    let h = harness().await;
    let client = h.app.client();
    // Each member: add(i, i), then mul(·, 10).
    let member = |i: i64| chain(h.add(i, i).s()).then(partial::<i64, i64>(&MUL, &[10]));
    let sent = client.send(group((1..=3).map(member))).await.unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), [20, 40, 60]);

    // The same chains as a chord's header: the body gets each chain's last result.
    let sent = client
        .send(chord(
            group((1..=3).map(member)),
            partial::<Vec<i64>, i64>(&SUM, &[]),
        ))
        .await
        .unwrap();
    assert_eq!(sent.get(WAIT).await.unwrap(), 120);
    assert_eq!(h.log.of("t.sum").len(), 1);
}
