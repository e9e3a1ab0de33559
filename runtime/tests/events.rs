//! Celery's monitoring events from a Celerity worker, read on the memory broker
//! (`MemoryBroker::subscribe_events`) as a monitor reads them on Redis or RabbitMQ: the
//! worker's online, heartbeat and offline events, each task event with Celery's fields,
//! task events switched on and off while the worker runs, and the bound on the events
//! waiting for a slow broker.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celerity::backend::MemoryBackend;
use celerity::broker::{Broker, Consumer, Control, ControlStream, MemoryBroker, MemoryEvents};
use celerity::events::Event;
use celerity::protocol::{RawMessage, ResultMeta};
use celerity::{
    App, ArgSpec, BuildError, Component, TaskContext, TaskError, TaskResult, TaskSpec, Worker,
};
use futures::future::BoxFuture;
use serde_json::{Value, json};

static ADD: TaskSpec = TaskSpec::new("t.add", &[ArgSpec::new("x", true), ArgSpec::new("y", true)]);
static FAIL: TaskSpec = TaskSpec::new("t.fail", &[ArgSpec::new("reason", true)]);
static FLAKY: TaskSpec = TaskSpec::new("t.flaky", &[]);
static LATE: TaskSpec = TaskSpec::new("t.late", &[]).acks_late(true);
static NOPE: TaskSpec = TaskSpec::new("t.nope", &[]);

const WAIT: Duration = Duration::from_secs(10);
const NODE: &str = "events@test";

struct Calc;

impl Component for Calc {
    type Deps = ();
    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Calc)
    }
}

#[derive(serde::Deserialize)]
struct AddArgs {
    x: i64,
    y: i64,
}

impl celerity::Invoke<Calc> for AddArgs {
    type Output = i64;
    async fn invoke(self, _c: &Calc, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.x + self.y)
    }
}

#[derive(serde::Deserialize)]
struct FailArgs {
    reason: String,
}

impl celerity::Invoke<Calc> for FailArgs {
    type Output = ();
    async fn invoke(self, _c: &Calc, _ctx: &TaskContext) -> TaskResult<()> {
        Err(TaskError::python("ValueError", "builtins", self.reason))
    }
}

/// `t.flaky` times out once, is retried at once, then returns its retry count; `t.late`
/// returns `"late"`.
#[derive(serde::Deserialize)]
struct NoArgs {}

impl celerity::Invoke<Calc> for NoArgs {
    type Output = Value;
    async fn invoke(self, _c: &Calc, ctx: &TaskContext) -> TaskResult<Value> {
        if ctx.name == FLAKY.name && ctx.retries == 0 {
            let cause = TaskError::new("GatewayTimeout", "attempt 1 timed out");
            return Err(TaskError::retry(Some(Duration::from_millis(10))).because(cause));
        }
        if ctx.name == LATE.name {
            return Ok(json!("late"));
        }
        Ok(json!(ctx.retries))
    }
}

/// A worker of the test tasks named [`NODE`], with task events as asked.
async fn worker(app: &App, task_events: bool) -> Worker {
    let mut builder = app.worker();
    builder
        .register::<Calc, AddArgs>(&ADD)
        .register::<Calc, FailArgs>(&FAIL)
        .register::<Calc, NoArgs>(&FLAKY)
        .register::<Calc, NoArgs>(&LATE)
        .hostname(NODE)
        .concurrency(4)
        .task_events(task_events);
    builder.start().await.expect("the worker starts")
}

/// A memory app whose events are subscribed to before any worker starts.
fn app() -> (App, MemoryEvents) {
    let broker = MemoryBroker::new();
    let events = broker.subscribe_events();
    (App::new(broker, MemoryBackend::new()), events)
}

/// The events received until one satisfies `last` (included), within [`WAIT`].
async fn until(events: &mut MemoryEvents, last: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no such event within {WAIT:?}; saw {}", kinds(&seen)))
            .expect("the broker is open");
        let done = last(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// The event `kind` about task `id`.
fn is(kind: &'static str, id: &str) -> impl Fn(&Event) -> bool {
    let id = id.to_owned();
    move |event| event.kind() == kind && event.task_id() == Some(id.as_str())
}

/// The types of `events`, for messages.
fn kinds(events: &[Event]) -> String {
    let kinds: Vec<&str> = events.iter().map(Event::kind).collect();
    kinds.join(", ")
}

/// The types of the events about task `id`, in order.
fn task_kinds<'a>(events: &'a [Event], id: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e.task_id() == Some(id))
        .map(Event::kind)
        .collect()
}

/// The `task-received` and `task-revoked` of task `id`, once revoked; nothing else came
/// about it.
async fn revoked_after_receipt(events: &mut MemoryEvents, id: &str) -> (Event, Event) {
    let seen = until(events, is("task-revoked", id)).await;
    assert_eq!(task_kinds(&seen, id), ["task-received", "task-revoked"]);
    let mut about = seen.into_iter().filter(|e| e.task_id() == Some(id));
    (about.next().unwrap(), about.next().unwrap())
}

/// `terminated`, `signum` and `expired` of a `task-revoked`.
fn revocation(revoked: &Event) -> (Value, Value, Value) {
    let fields = revoked.fields();
    let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
    (field("terminated"), field("signum"), field("expired"))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What every event carries, as `EventDispatcher._prepare_event` stamps it.
fn assert_stamped(event: &Event) {
    let fields = event.fields();
    assert_eq!(fields["hostname"], NODE);
    assert_eq!(fields["pid"], std::process::id());
    assert_eq!(fields["type"], event.kind());
    assert!(fields["clock"].as_u64().is_some(), "{fields:?}");
    assert!(fields["utcoffset"].as_f64().is_some(), "{fields:?}");
    let timestamp = fields["timestamp"].as_f64().unwrap();
    assert!((now() - timestamp).abs() < 60.0, "{timestamp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_succeeds_is_received_started_and_succeeded_between_online_and_offline() {
    let (app, mut events) = app();
    let worker = worker(&app, true).await;
    let online = until(&mut events, |e| e.kind() == "worker-online").await;
    assert_eq!(online.len(), 1, "the first event: {}", kinds(&online));
    let online = &online[0];
    assert_stamped(online);
    let fields = online.fields();
    assert_eq!(fields["freq"], 2.0);
    assert_eq!(
        (&fields["active"], &fields["processed"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(fields["sw_ident"], "celerity");
    assert_eq!(fields["sw_ver"], env!("CARGO_PKG_VERSION"));
    if cfg!(target_os = "linux") {
        assert_eq!(fields["sw_sys"], "Linux", "platform.system()");
    }
    assert_eq!(fields["loadavg"].as_array().map(Vec::len), Some(3));

    let sum = app
        .client()
        .send_task::<i64>(&ADD, vec![json!(2), json!(3)])
        .await
        .unwrap();
    assert_eq!(sum.get(WAIT).await.unwrap(), 5);
    let seen = until(&mut events, is("task-succeeded", sum.id())).await;
    assert_eq!(
        task_kinds(&seen, sum.id()),
        ["task-received", "task-started", "task-succeeded"]
    );
    let of = |kind: &str| {
        seen.iter()
            .find(|e| e.kind() == kind && e.task_id() == Some(sum.id()))
            .unwrap()
    };
    let received = of("task-received").fields();
    assert_eq!(received["uuid"], sum.id());
    assert_eq!(received["name"], "t.add");
    assert_eq!(received["args"], "(2, 3)");
    assert_eq!(received["kwargs"], "{}");
    assert_eq!(received["root_id"], sum.id());
    assert_eq!(received["parent_id"], Value::Null);
    assert_eq!(received["retries"], 0);
    assert_eq!(
        (&received["eta"], &received["expires"]),
        (&Value::Null, &Value::Null)
    );
    let succeeded = of("task-succeeded").fields();
    assert_eq!(succeeded["result"], "5", "the result's repr");
    let runtime = succeeded["runtime"].as_f64().unwrap();
    assert!((0.0..5.0).contains(&runtime), "{runtime}");
    for event in &seen {
        assert_stamped(event);
    }
    let clocks: Vec<u64> = seen.iter().map(Event::clock).collect();
    assert!(
        clocks.windows(2).all(|pair| pair[0] < pair[1]),
        "the clock moves forward: {clocks:?}"
    );

    worker.shutdown().await;
    let rest = until(&mut events, |e| e.kind() == "worker-offline").await;
    let offline = rest.last().unwrap();
    assert_stamped(offline);
    assert_eq!(offline.get("processed"), Some(json!(1)));
    assert_eq!(offline.get("active"), Some(json!(0)));
    assert!(events.try_next().is_none(), "nothing after worker-offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retries_revokes_and_unknown_tasks_are_reported_as_celery_reports_them() {
    let (app, mut events) = app();
    let worker = worker(&app, true).await;
    let client = app.client();

    let failed = client
        .send_task::<()>(&FAIL, vec![json!("bad input")])
        .await
        .unwrap();
    let seen = until(&mut events, is("task-failed", failed.id())).await;
    assert_eq!(
        task_kinds(&seen, failed.id()),
        ["task-received", "task-started", "task-failed"]
    );
    let failure = seen.last().unwrap().fields();
    assert_eq!(failure["exception"], "ValueError('bad input')");
    let traceback = failure["traceback"].as_str().unwrap();
    assert!(
        traceback.starts_with("Traceback (most recent call last):")
            && traceback.trim_end().ends_with("ValueError: bad input"),
        "{traceback}"
    );

    let flaky = client.send_task::<u32>(&FLAKY, vec![]).await.unwrap();
    let seen = until(&mut events, is("task-succeeded", flaky.id())).await;
    assert_eq!(
        task_kinds(&seen, flaky.id()),
        [
            "task-received",
            "task-started",
            "task-retried",
            "task-received",
            "task-started",
            "task-succeeded"
        ]
    );
    let about = |kind: &str| -> Vec<_> {
        seen.iter()
            .filter(|e| e.kind() == kind && e.task_id() == Some(flaky.id()))
            .map(Event::fields)
            .collect()
    };
    let retried = &about("task-retried")[0];
    assert_eq!(
        retried["exception"],
        "GatewayTimeout('attempt 1 timed out')"
    );
    assert!(
        retried["traceback"]
            .as_str()
            .unwrap()
            .contains("GatewayTimeout: attempt 1 timed out"),
        "{retried:?}"
    );
    let received = about("task-received");
    assert_eq!(
        (&received[0]["retries"], &received[1]["retries"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(received[1]["parent_id"], flaky.id(), "the retry's parent");
    assert!(received[1]["eta"].is_string(), "a retry has an ETA");
    assert_eq!(about("task-succeeded")[0]["result"], "1");

    let expired = client
        .send_task::<i64>(&ADD, vec![json!(1), json!(1)])
        .expires_at(chrono::Utc::now() - chrono::Duration::seconds(5))
        .await
        .unwrap();
    let (received, revoked) = revoked_after_receipt(&mut events, expired.id()).await;
    assert!(received.get("expires").unwrap().is_string());
    assert_eq!(
        revocation(&revoked),
        (json!(false), Value::Null, json!(true))
    );

    // Revoked before it is sent, so the revoke is there when its countdown ends.
    let id = uuid::Uuid::new_v4().to_string();
    client.result::<i64>(&id).revoke().await.unwrap();
    let later = client
        .send_task::<i64>(&ADD, vec![json!(1), json!(2)])
        .task_id(&id)
        .countdown(Duration::from_millis(500))
        .await
        .unwrap();
    let (_, revoked) = revoked_after_receipt(&mut events, later.id()).await;
    assert_eq!(
        revocation(&revoked),
        (json!(false), Value::Null, json!(false))
    );

    // `Consumer.on_unknown_task`: failed with `NotRegistered`, no traceback.
    let unknown = client.send_task::<()>(&NOPE, vec![]).await.unwrap();
    let seen = until(&mut events, is("task-failed", unknown.id())).await;
    assert_eq!(task_kinds(&seen, unknown.id()), ["task-failed"]);
    let failure = seen.last().unwrap().fields();
    assert_eq!(failure["exception"], "NotRegistered('t.nope')");
    assert!(!failure.contains_key("traceback"));
    worker.shutdown().await;
}

/// A result backend that fails the first SUCCESS it is asked to store.
#[derive(Clone, Default)]
struct FailsOnce {
    inner: MemoryBackend,
    failed: Arc<std::sync::atomic::AtomicBool>,
}

impl celerity::backend::ResultBackend for FailsOnce {
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, celerity::Result<()>> {
        let first = meta.status == celerity::TaskState::Success
            && !self.failed.swap(true, std::sync::atomic::Ordering::SeqCst);
        if first {
            return Box::pin(async {
                Err(celerity::Error::new(
                    celerity::ErrorKind::Backend,
                    "the backend is down",
                ))
            });
        }
        self.inner.store(meta)
    }
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, celerity::Result<Option<ResultMeta>>> {
        self.inner.get(id)
    }
    fn wait_ready<'a>(&'a self, id: &'a str) -> BoxFuture<'a, celerity::Result<ResultMeta>> {
        self.inner.wait_ready(id)
    }
    fn forget<'a>(&'a self, id: &'a str) -> BoxFuture<'a, celerity::Result<()>> {
        self.inner.forget(id)
    }
    fn describe(&self) -> String {
        "fails-once://".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_requeued_because_its_result_was_not_stored_is_rejected() {
    let broker = MemoryBroker::new();
    let mut events = broker.subscribe_events();
    let app = App::new(broker, FailsOnce::default());
    let worker = worker(&app, true).await;
    let late = app
        .client()
        .send_task::<Value>(&LATE, vec![])
        .await
        .unwrap();
    assert_eq!(late.get(WAIT).await.unwrap(), "late");
    let mut seen = until(&mut events, is("task-rejected", late.id())).await;
    seen.extend(until(&mut events, is("task-succeeded", late.id())).await);
    assert_eq!(
        task_kinds(&seen, late.id()),
        [
            "task-received",
            "task-started",
            "task-succeeded",
            "task-rejected",
            "task-received",
            "task-started",
            "task-succeeded"
        ]
    );
    let rejected = seen.iter().find(|e| e.kind() == "task-rejected").unwrap();
    assert_eq!(rejected.get("requeue"), Some(json!(true)));
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn heartbeats_come_every_two_seconds_whether_task_events_are_on_or_not() {
    let (app, mut events) = app();
    let worker = worker(&app, false).await;
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let mut seen = Vec::new();
    while let Some(event) = events.try_next() {
        seen.push(event);
    }
    assert_eq!(
        kinds(&seen),
        "worker-online, worker-heartbeat, worker-heartbeat, worker-heartbeat",
        "at 0, 2, 4 and 6 s"
    );
    let sum = app
        .client()
        .send_task::<i64>(&ADD, vec![json!(1), json!(1)])
        .await
        .unwrap();
    assert_eq!(sum.get(WAIT).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let heartbeat = events.try_next().expect("a heartbeat at 8 s");
    assert_eq!(heartbeat.kind(), "worker-heartbeat", "and no task events");
    assert_eq!(heartbeat.get("processed"), Some(json!(1)));
    assert_eq!(heartbeat.get("freq"), Some(json!(2.0)));
    worker.shutdown().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        events.try_next().map(|e| e.kind().to_owned()).as_deref(),
        Some("worker-offline")
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(events.try_next().is_none(), "no heartbeat once stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_events_are_switched_on_and_off_while_the_worker_runs() {
    let (app, mut events) = app();
    let worker = worker(&app, false).await;
    assert!(!worker.task_events());
    let add = |x: i64| {
        let client = app.client();
        async move {
            let sent = client
                .send_task::<i64>(&ADD, vec![json!(x), json!(x)])
                .await
                .unwrap();
            assert_eq!(sent.get(WAIT).await.unwrap(), 2 * x);
            sent
        }
    };
    let unseen = add(1).await;
    worker.set_task_events(true);
    assert!(worker.task_events());
    let seen = add(2).await;
    let events_until_on = until(&mut events, is("task-succeeded", seen.id())).await;
    assert!(
        task_kinds(&events_until_on, unseen.id()).is_empty(),
        "{}",
        kinds(&events_until_on)
    );
    assert_eq!(
        task_kinds(&events_until_on, seen.id()),
        ["task-received", "task-started", "task-succeeded"]
    );
    worker.set_task_events(false);
    let unseen = add(3).await;
    worker.set_task_events(true);
    let seen = add(4).await;
    let events_until_on = until(&mut events, is("task-succeeded", seen.id())).await;
    assert!(task_kinds(&events_until_on, unseen.id()).is_empty());
    worker.shutdown().await;
}

/// The memory broker, with events that wait at a gate: a broker that does not keep up.
#[derive(Clone)]
struct SlowEvents {
    inner: MemoryBroker,
    gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<tokio::sync::Notify>,
}

impl Broker for SlowEvents {
    fn publish<'a>(
        &'a self,
        queue: &'a str,
        message: RawMessage,
    ) -> BoxFuture<'a, celerity::Result<()>> {
        self.inner.publish(queue, message)
    }
    fn publish_batch<'a>(
        &'a self,
        queue: &'a str,
        messages: Vec<RawMessage>,
    ) -> BoxFuture<'a, celerity::Result<()>> {
        self.inner.publish_batch(queue, messages)
    }
    fn consume<'a>(
        &'a self,
        queues: &'a [String],
    ) -> BoxFuture<'a, celerity::Result<Box<dyn Consumer>>> {
        self.inner.consume(queues)
    }
    fn describe(&self) -> String {
        "slow-events://".into()
    }
    fn broadcast<'a>(&'a self, command: Control) -> BoxFuture<'a, celerity::Result<()>> {
        self.inner.broadcast(command)
    }
    fn control<'a>(&'a self) -> BoxFuture<'a, celerity::Result<Box<dyn ControlStream>>> {
        self.inner.control()
    }
    fn publish_events<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, celerity::Result<()>> {
        Box::pin(async move {
            self.entered.notify_one();
            let _pass = self.gate.acquire().await.expect("the gate stays");
            self.inner.publish_events(events).await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_broker_cannot_take_in_time_are_dropped_oldest_first() {
    const BOUND: usize = 16_384;
    const TASKS: i64 = 7_000;
    let inner = MemoryBroker::new();
    let mut events = inner.subscribe_events();
    let broker = SlowEvents {
        inner,
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
        entered: Arc::new(tokio::sync::Notify::new()),
    };
    let app = App::new(broker.clone(), MemoryBackend::new());
    let worker = worker(&app, true).await;
    // The publisher holds `worker-online` at the gate: every task event waits behind it.
    broker.entered.notified().await;
    let client = app.client();
    let calls = (0..TASKS).map(|x| {
        client
            .send_task::<i64>(&ADD, vec![json!(x), json!(x)])
            .queue("celery")
    });
    let sums = client.send_batch(calls).await.unwrap();
    for sum in &sums {
        sum.get(WAIT).await.unwrap();
    }
    broker.gate.add_permits(usize::MAX >> 4);
    let last = sums.last().unwrap().id().to_owned();
    let mut seen = until(&mut events, |e| e.kind() == "worker-online").await;
    assert_eq!(seen.len(), 1);
    // Every task made three events: more than the outbox holds.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Some(event) = events.try_next() {
        seen.push(event);
    }
    let task_events = seen.iter().filter(|e| e.task_id().is_some()).count();
    assert!(
        seen.len() - 1 <= BOUND + 2 && task_events > BOUND - 10,
        "{} events after worker-online, {task_events} about tasks",
        seen.len() - 1
    );
    let first = sums[0].id();
    assert!(
        task_kinds(&seen, first).is_empty(),
        "the oldest are dropped: {:?}",
        task_kinds(&seen, first)
    );
    assert!(
        seen.iter()
            .any(|e| e.kind() == "task-succeeded" && e.task_id() == Some(last.as_str())),
        "the newest are kept"
    );
    // The worker carries on, its events flowing again.
    let after = client
        .send_task::<i64>(&ADD, vec![json!(1), json!(1)])
        .await
        .unwrap();
    until(&mut events, is("task-succeeded", after.id())).await;
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_dropped_without_shutdown_stops_beating() {
    let (app, mut events) = app();
    let worker = worker(&app, false).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    drop(worker);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut seen = Vec::new();
    while let Some(event) = events.try_next() {
        seen.push(event);
    }
    assert_eq!(kinds(&seen), "worker-online, worker-heartbeat");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(events.try_next().is_none(), "no heartbeat once dropped");
}
