//! The answers to remote-control commands, compared with what a Python Celery 5.7 worker
//! answers (captured with `app.control` against a threads-pool worker and a prefork one).

use super::*;
use crate::container::{BuildError, Component};
use crate::spec::{ArgSpec, TaskSpec};
use crate::task::{TaskContext, TaskResult};
use crate::worker::Invoke;
use crate::worker::observe::Lifecycle;
use crate::{App, SendOptions};

static ADD: TaskSpec =
    TaskSpec::new("t.add", &[ArgSpec::new("x", true), ArgSpec::new("y", true)]).queue("work");
static SLOW: TaskSpec = TaskSpec::new("t.slow", &[]).queue("work");

struct Adder;

impl Component for Adder {
    type Deps = ();
    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Adder)
    }
}

#[derive(serde::Deserialize)]
struct AddArgs {
    x: i64,
    y: i64,
}

impl Invoke<Adder> for AddArgs {
    type Output = i64;
    async fn invoke(self, _c: &Adder, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.x + self.y)
    }
}

#[derive(serde::Deserialize)]
struct NoArgs {}

impl Invoke<Adder> for NoArgs {
    type Output = ();
    async fn invoke(self, _c: &Adder, _ctx: &TaskContext) -> TaskResult<()> {
        Ok(())
    }
}

struct Worker {
    shared: Arc<Shared>,
    queue_changes: tokio::sync::mpsc::UnboundedReceiver<QueueChange>,
}

async fn worker() -> Worker {
    let app = App::memory();
    let mut builder = app.worker();
    builder
        .register::<Adder, AddArgs>(&ADD)
        .register::<Adder, NoArgs>(&SLOW)
        .concurrency(2)
        .hostname("w1@test");
    let (shared, queue_changes) = builder.shared_for_tests().await;
    Worker {
        shared,
        queue_changes,
    }
}

impl Worker {
    /// The answer to `method` with `arguments`, as `app.control` would get it.
    fn ask(&self, method: &str, arguments: Value) -> Option<Value> {
        let body = json!({"method": method, "arguments": arguments, "destination": null,
            "ticket": "t", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "r"}});
        let command = MailboxCommand::from_json(body.to_string().as_bytes()).unwrap();
        handle(&self.shared, &command)
    }

    fn answer(&self, method: &str, arguments: Value) -> Value {
        self.ask(method, arguments)
            .unwrap_or_else(|| panic!("{method} answers"))
    }

    /// Records task `id` of `ADD` as received, then started when `running`.
    fn hold(&self, id: &str, running: bool) {
        let message = self.shared.client.message(
            &ADD,
            vec![1.into(), 2.into()],
            Default::default(),
            &SendOptions {
                task_id: Some(id.into()),
                ..Default::default()
            },
        );
        let state = &self.shared.state;
        state.record(&Lifecycle::Received {
            message: &message,
            queue: "work",
            eta_held: false,
        });
        if running {
            state.record(&Lifecycle::Started { id, name: ADD.name });
        }
    }
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("{value} is not an object"))
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn reads_task_ids_in_every_form_celery_sends() {
    assert_eq!(ids(Some(&json!("a"))), ["a"]);
    assert_eq!(ids(Some(&json!(["a", "b"]))), ["a", "b"]);
    assert_eq!(ids(Some(&json!({"a": 1.0}))), ["a"]);
    assert!(ids(None).is_empty());
    assert_eq!(
        set_repr(&["a".into(), "b".into()]),
        "{'a', 'b'}",
        "as Python prints a set"
    );
}

#[tokio::test]
async fn stats_has_the_keys_of_a_celery_worker_s() {
    let worker = worker().await;
    worker.hold("a", true);
    let stats = worker.answer("stats", json!({}));
    // A prefork worker's `inspect stats`, captured.
    assert_eq!(
        keys(&stats),
        [
            "total",
            "pid",
            "clock",
            "uptime",
            "pool",
            "broker",
            "prefetch_count",
            "rusage"
        ]
    );
    assert_eq!(stats["total"], json!({"t.add": 1}));
    assert_eq!(stats["pid"], std::process::id());
    assert!(stats["clock"].is_string(), "Celery sends str(clock)");
    assert!(stats["uptime"].is_u64());
    let pool = &stats["pool"];
    for key in [
        "max-concurrency",
        "processes",
        "max-tasks-per-child",
        "put-guarded-by-semaphore",
        "timeouts",
    ] {
        assert!(pool.get(key).is_some(), "pool.{key} in {pool}");
    }
    assert_eq!(pool["max-concurrency"], 2);
    assert_eq!(stats["prefetch_count"], 8, "2 slots × 4");
    assert_eq!(stats["broker"]["transport"], "memory");
}

#[tokio::test]
async fn the_other_inspect_commands_answer_in_celery_s_shapes() {
    let worker = worker().await;
    assert_eq!(worker.answer("ping", json!({})), json!({"ok": "pong"}));
    assert!(worker.answer("clock", json!({}))["clock"].is_u64());
    let report = worker.answer("report", json!({}));
    let text = report["ok"].as_str().expect("{ok: text}");
    assert!(text.contains("software -> celerity:"), "{text}");
    assert!(text.contains("broker_url: 'memory://'"), "{text}");
    let conf = worker.answer("conf", json!({"with_defaults": false}));
    assert_eq!(conf["broker_url"], "memory://");
    assert_eq!(conf["worker_concurrency"], 2);
    assert_eq!(conf["worker_prefetch_multiplier"], 4);
    assert_eq!(worker.answer("revoked", json!({})), json!([]));
    worker.answer("revoke", json!({"task_id": ["x", "y"]}));
    assert_eq!(worker.answer("dump_revoked", json!({})), json!(["x", "y"]));
    assert_eq!(
        worker.answer("registered", json!({})),
        json!(["t.add", "t.slow"])
    );
    assert_eq!(
        worker.answer(
            "registered",
            json!({"taskinfoitems": ["queue", "acks_late", "time_limit", "nothing"]})
        ),
        json!([
            "t.add [queue=work acks_late=False]",
            "t.slow [queue=work acks_late=False]"
        ]),
        "attributes the task has, in the order asked"
    );
    let queues = worker.answer("active_queues", json!({}));
    assert_eq!(queues[0]["name"], "work");
    assert_eq!(queues[0]["exchange"]["type"], "direct");
    assert_eq!(
        worker.answer("nosuch", json!({})),
        json!({"error": "KeyError('nosuch')"}),
        "as Celery's dispatcher answers an unknown command"
    );
}

#[tokio::test]
async fn rate_limit_answers_as_celery_does() {
    let worker = worker().await;
    let set = |rate: Value| {
        worker.answer(
            "rate_limit",
            json!({"task_name": "t.add", "rate_limit": rate}),
        )
    };
    assert_eq!(
        set(json!("10/m")),
        json!({"ok": "new rate limit set successfully"})
    );
    assert_eq!(worker.shared.limits.rate(&ADD).unwrap().text, "10/m");
    assert_eq!(
        worker.answer("registered", json!({}))[0],
        "t.add [rate_limit=10/m]",
        "shown by default, as in Celery"
    );
    assert_eq!(
        set(json!("")),
        json!({"ok": "rate limit disabled successfully"})
    );
    assert_eq!(worker.shared.limits.rate(&ADD), None);
    assert_eq!(set(json!("x/y")), json!({"error": "KeyError('y')"}));
    assert_eq!(
        set(json!("abc/s")),
        json!({"error": "Invalid rate limit string: ValueError(\"could not convert string to float: 'abc'\")"})
    );
    assert_eq!(
        worker.answer(
            "rate_limit",
            json!({"task_name": "nope", "rate_limit": "1/s"})
        ),
        json!({"error": "unknown task"})
    );
}

#[tokio::test]
async fn time_limit_replaces_both_limits() {
    let worker = worker().await;
    assert_eq!(
        worker.answer(
            "time_limit",
            json!({"task_name": "t.add", "soft": 1.5, "hard": null})
        ),
        json!({"ok": "time limits set successfully"})
    );
    let limits = worker.shared.limits.times(&ADD);
    assert_eq!(
        (limits.soft, limits.hard),
        (Some(Duration::from_millis(1500)), None)
    );
    assert_eq!(
        worker.answer("time_limit", json!({"task_name": "nope", "soft": 1})),
        json!({"error": "unknown task"})
    );
}

#[tokio::test]
async fn the_pool_grows_and_shrinks_and_stats_follow() {
    let worker = worker().await;
    assert_eq!(
        worker.answer("pool_grow", json!({"n": 3})),
        json!({"ok": "pool will grow"})
    );
    let stats = worker.answer("stats", json!({}));
    assert_eq!(
        (&stats["pool"]["max-concurrency"], &stats["prefetch_count"]),
        (&json!(5), &json!(20))
    );
    assert_eq!(
        worker.answer("pool_shrink", json!({})),
        json!({"ok": "pool will shrink"}),
        "by one by default"
    );
    assert_eq!(worker.shared.pool.concurrency(), 4);
    let refused = worker.answer("pool_shrink", json!({"n": 4}));
    assert!(refused["error"].is_string(), "{refused}");
    assert_eq!(worker.shared.pool.concurrency(), 4);
}

#[tokio::test]
async fn consumer_commands_ask_the_consuming_loop_for_the_change() {
    let mut worker = worker().await;
    assert_eq!(
        worker.answer("add_consumer", json!({"queue": "extra"})),
        json!({"ok": "add consumer extra"})
    );
    assert_eq!(
        worker.answer("cancel_consumer", json!({"queue": "work"})),
        json!({"ok": "no longer consuming from work"})
    );
    assert_eq!(
        worker.queue_changes.try_recv().unwrap(),
        QueueChange::Add("extra".into())
    );
    assert_eq!(
        worker.queue_changes.try_recv().unwrap(),
        QueueChange::Cancel("work".into())
    );
    assert_eq!(
        worker.answer("add_consumer", json!({})),
        json!({"error": "TypeError(\"add_consumer() missing 1 required positional argument: 'queue'\")"})
    );
}

#[tokio::test]
async fn shutdown_answers_nothing_and_asks_the_worker_to_stop() {
    let worker = worker().await;
    let mut requested = worker.shared.shutdown_requested.subscribe();
    assert_eq!(worker.ask("shutdown", json!({})), None);
    assert!(*requested.borrow_and_update());
}

#[tokio::test]
async fn revoke_with_terminate_stops_the_running_copy_and_names_it() {
    let worker = worker().await;
    assert_eq!(
        worker.answer(
            "revoke",
            json!({"task_id": "gone", "terminate": true, "signal": "SIGKILL"})
        ),
        json!({"ok": "terminate: tasks unknown"})
    );
    worker.hold("r", true);
    let (_running, stop) = worker.shared.running.register("r");
    assert_eq!(
        worker.answer("revoke", json!({"task_id": ["r"], "terminate": true})),
        json!({"ok": "terminate: r"})
    );
    tokio::time::timeout(Duration::from_secs(1), stop.requested())
        .await
        .expect("the running task is asked to stop");
    assert_eq!(
        worker.answer("revoke", json!({"task_id": "r"})),
        json!({"ok": "tasks {'r'} flagged as revoked"})
    );
}

#[tokio::test]
async fn task_events_are_switched_as_celery_answers_and_a_heartbeat_goes_out_at_once() {
    let worker = worker().await;
    let events = &worker.shared.events;
    assert!(!events.task_events());
    assert_eq!(
        worker.answer("enable_events", json!({})),
        json!({"ok": "task events enabled"})
    );
    assert!(events.task_events());
    assert_eq!(
        worker.answer("enable_events", json!({})),
        json!({"ok": "task events already enabled"})
    );
    assert_eq!(
        worker.answer("disable_events", json!({})),
        json!({"ok": "task events disabled"})
    );
    assert!(!events.task_events());
    assert_eq!(
        worker.answer("disable_events", json!({})),
        json!({"ok": "task events already disabled"})
    );
    // Celery's `heartbeat` handler returns nothing: the answer is `{node: null}`.
    assert_eq!(worker.answer("heartbeat", json!({})), Value::Null);
    let sent = events.outbox().take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind(), "worker-heartbeat");
    assert_eq!(sent[0].hostname(), "w1@test");
}
