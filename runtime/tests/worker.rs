//! Worker semantics on the embedded broker, on tokio's paused clock: countdowns, retries,
//! time limits and shutdown are deterministic and take no real time.
//!
//! The argument structs and `Invoke` impls are written here the way generated code
//! writes them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celerity::backend::MemoryBackend;
use celerity::broker::MemoryBroker;
use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, ResultError, RetryPolicy, SendOptions,
    TaskContext, TaskError, TaskResult, TaskSpec, TaskState, Worker,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(24 * 3600);

/// What the probe components saw, shared by every execution.
#[derive(Default)]
struct Log {
    builds: AtomicUsize,
    cleanups: AtomicUsize,
    /// (task, retries, when) of every run.
    runs: Mutex<Vec<(String, u32, Instant)>>,
    started: tokio::sync::Notify,
}

impl Log {
    fn runs(&self) -> Vec<(String, u32, Instant)> {
        self.runs.lock().unwrap().clone()
    }
}

struct Probe {
    log: Arc<Log>,
}

impl Component for Probe {
    type Deps = Arc<Log>;

    async fn build(log: Arc<Log>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        log.builds.fetch_add(1, Ordering::SeqCst);
        Ok(Probe { log })
    }

    async fn cleanup(self) {
        self.log.cleanups.fetch_add(1, Ordering::SeqCst);
    }
}

impl Probe {
    fn record(&self, ctx: &TaskContext) {
        self.log
            .runs
            .lock()
            .unwrap()
            .push((ctx.name.clone(), ctx.retries, Instant::now()));
        self.log.started.notify_waiters();
    }
}

/// Declares a task spec, its argument struct and its `Invoke` impl.
macro_rules! probe_task {
    ($spec:ident = $builder:expr; $args:ident { $($field:ident : $ty:ty),* } => $output:ty, |$probe:ident, $ctx:ident, $a:ident| $body:expr) => {
        static $spec: TaskSpec = $builder;

        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct $args { $($field: $ty),* }

        impl Invoke<Probe> for $args {
            type Output = $output;

            fn invoke<'a>(self, $probe: &'a Probe, $ctx: &'a TaskContext) -> impl Future<Output = TaskResult<$output>> + Send + 'a {
                let $a = self;
                async move {
                    $probe.record($ctx);
                    $body
                }
            }
        }
    };
}

probe_task!(ECHO = TaskSpec::new("t.echo", &[ArgSpec::new("value", true)]);
    EchoArgs { value: i64 } => i64, |_p, _ctx, a| Ok(a.value));
probe_task!(SLEEP = TaskSpec::new("t.sleep", &[ArgSpec::new("secs", true)]);
    SleepArgs { secs: u64 } => u64, |_p, _ctx, a| { tokio::time::sleep(Duration::from_secs(a.secs)).await; Ok(a.secs) });
probe_task!(SLEEP_LATE = TaskSpec::new("t.sleep_late", &[ArgSpec::new("secs", true)]).acks_late(true);
    SleepLateArgs { secs: u64 } => u64, |_p, _ctx, a| { tokio::time::sleep(Duration::from_secs(a.secs)).await; Ok(a.secs) });
probe_task!(FAIL = TaskSpec::new("t.fail", &[]);
    FailArgs {} => (), |_p, _ctx, _a| Err(TaskError::new("KeyError", "'missing'")));
probe_task!(PANIC = TaskSpec::new("t.panic", &[]);
    PanicArgs {} => (), |_p, _ctx, _a| { if true { panic!("kaboom") } Ok(()) });
probe_task!(RETRY_ONCE = TaskSpec::new("t.retry_once", &[]);
RetryOnceArgs {} => u32, |_p, ctx, _a| {
    if ctx.retries == 0 { Err(TaskError::retry(Some(Duration::from_secs(30)))) } else { Ok(ctx.retries) }
});
probe_task!(FLAKY = TaskSpec::new("t.flaky", &[]).retry(
        RetryPolicy::new().max_retries(3).delay(Duration::from_secs(2)).max_delay(Duration::from_secs(5)).exponential().on(&["ConnectionError"]));
    FlakyArgs {} => (), |_p, _ctx, _a| Err(TaskError::new("ConnectionError", "broker down")));
probe_task!(HARD_LIMIT = TaskSpec::new("t.hard", &[]).time_limit(Duration::from_secs(5));
    HardArgs {} => (), |_p, _ctx, _a| { tokio::time::sleep(Duration::from_secs(60)).await; Ok(()) });
probe_task!(SOFT_LIMIT = TaskSpec::new("t.soft", &[]).soft_time_limit(Duration::from_secs(5)).time_limit(Duration::from_secs(60));
SoftArgs {} => String, |_p, ctx, _a| {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(30)) => Ok("finished".to_owned()),
        () = ctx.soft_time_limit() => Ok(format!("stopped early: exceeded={}", ctx.soft_time_limit_exceeded())),
    }
});
probe_task!(STARTED = TaskSpec::new("t.started", &[]).track_started(true);
    StartedArgs {} => (), |_p, _ctx, _a| { tokio::time::sleep(Duration::from_secs(10)).await; Ok(()) });
probe_task!(LIMITED = TaskSpec::new("t.limited", &[]).rate_limit(10, Duration::from_secs(60));
    LimitedArgs {} => (), |_p, _ctx, _a| Ok(()));
probe_task!(IGNORED = TaskSpec::new("t.ignored", &[]).ignore_result(true);
    IgnoredArgs {} => i64, |_p, _ctx, _a| Ok(1));

struct Harness {
    app: App,
    broker: MemoryBroker,
    worker: Worker,
    log: Arc<Log>,
}

async fn harness(concurrency: usize, prefetch_multiplier: usize) -> Harness {
    let broker = MemoryBroker::new();
    let app = App::new(broker.clone(), MemoryBackend::new());
    let worker = start_worker(&app, concurrency, prefetch_multiplier).await;
    let log = worker.singleton::<Log>().expect("the log singleton");
    Harness {
        app,
        broker,
        worker,
        log,
    }
}

/// A worker of every probe task on `app`'s broker, with a log of its own.
async fn start_worker(app: &App, concurrency: usize, prefetch_multiplier: usize) -> Worker {
    start_worker_with(app, concurrency, prefetch_multiplier, |_| {}).await
}

/// As [`start_worker`], with more settings made by `configure`.
async fn start_worker_with(
    app: &App,
    concurrency: usize,
    prefetch_multiplier: usize,
    configure: impl FnOnce(&mut celerity::WorkerBuilder),
) -> Worker {
    let mut builder = app.worker();
    configure(&mut builder);
    builder
        .singleton(Log::default())
        .concurrency(concurrency)
        .prefetch_multiplier(prefetch_multiplier)
        .queues(["celery"]);
    builder
        .register::<Probe, EchoArgs>(&ECHO)
        .register::<Probe, SleepArgs>(&SLEEP)
        .register::<Probe, SleepLateArgs>(&SLEEP_LATE)
        .register::<Probe, FailArgs>(&FAIL)
        .register::<Probe, PanicArgs>(&PANIC)
        .register::<Probe, RetryOnceArgs>(&RETRY_ONCE)
        .register::<Probe, FlakyArgs>(&FLAKY)
        .register::<Probe, HardArgs>(&HARD_LIMIT)
        .register::<Probe, SoftArgs>(&SOFT_LIMIT)
        .register::<Probe, StartedArgs>(&STARTED)
        .register::<Probe, IgnoredArgs>(&IGNORED)
        .register::<Probe, LimitedArgs>(&LIMITED);
    builder.start().await.expect("the worker starts")
}

impl Harness {
    async fn send(&self, spec: &'static TaskSpec, args: Value) -> celerity::AsyncResult<Value> {
        self.send_with(spec, args, SendOptions::default()).await
    }

    async fn send_with(
        &self,
        spec: &'static TaskSpec,
        args: Value,
        options: SendOptions,
    ) -> celerity::AsyncResult<Value> {
        let Value::Array(args) = args else {
            panic!("args must be a list")
        };
        self.app
            .client()
            .send_task(spec, args)
            .with_options(options)
            .await
            .expect("sent")
    }
}

fn failure(result: Result<Value, ResultError>) -> celerity::TaskFailure {
    match result {
        Err(ResultError::Failed(failure)) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_task_does_not_block_others() {
    let h = harness(2, 4).await;
    let slow = h.send(&SLEEP, json!([3600])).await;
    let fast = h.send(&ECHO, json!([7])).await;
    assert_eq!(fast.get(WAIT).await.unwrap(), json!(7));
    assert_eq!(
        slow.state().await.unwrap(),
        TaskState::Pending,
        "the slow task is still running"
    );
    assert_eq!(slow.get(WAIT).await.unwrap(), json!(3600));
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cleanup_runs_after_every_outcome() {
    let h = harness(4, 4).await;
    let outcomes = [
        h.send(&ECHO, json!([1])).await,
        h.send(&FAIL, json!([])).await,
        h.send(&PANIC, json!([])).await,
        h.send(&HARD_LIMIT, json!([])).await,
        h.send(&RETRY_ONCE, json!([])).await,
    ];
    for result in &outcomes {
        let _ = result.get(WAIT).await;
    }
    let builds = h.log.builds.load(Ordering::SeqCst);
    assert_eq!(builds, 6, "five tasks, one of them run twice (retry)");
    assert_eq!(
        h.log.cleanups.load(Ordering::SeqCst),
        builds,
        "every built component was cleaned up"
    );
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failures_panics_and_time_limits_are_recorded_and_the_worker_goes_on() {
    let h = harness(2, 4).await;
    let failed = failure(h.send(&FAIL, json!([])).await.get(WAIT).await);
    assert_eq!(
        (failed.exc_type.as_str(), failed.message.as_str()),
        ("KeyError", "'missing'")
    );
    let panicked = failure(h.send(&PANIC, json!([])).await.get(WAIT).await);
    assert_eq!(
        (panicked.exc_type.as_str(), panicked.message.as_str()),
        ("Panic", "kaboom")
    );
    let started = Instant::now();
    let hard = failure(h.send(&HARD_LIMIT, json!([])).await.get(WAIT).await);
    assert_eq!(
        (
            hard.exc_type.as_str(),
            hard.message.as_str(),
            hard.exc_module.as_deref()
        ),
        ("TimeLimitExceeded", "5", Some("celery.exceptions"))
    );
    assert_eq!(
        started.elapsed().as_secs(),
        5,
        "aborted at the hard limit, not after the task's 60 s"
    );
    assert_eq!(
        h.send(&ECHO, json!([3])).await.get(WAIT).await.unwrap(),
        json!(3)
    );
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_soft_time_limit_is_visible_to_the_task() {
    let h = harness(1, 1).await;
    let started = Instant::now();
    let result = h
        .send(&SOFT_LIMIT, json!([]))
        .await
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(result, json!("stopped early: exceeded=true"));
    assert_eq!(started.elapsed().as_secs(), 5);
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_explicit_retry_is_a_new_message_with_the_same_id_after_its_countdown() {
    let h = harness(1, 4).await;
    let sent = h.send(&RETRY_ONCE, json!([])).await;
    assert_eq!(
        sent.get(WAIT).await.unwrap(),
        json!(1),
        "the second run sees retries = 1"
    );
    let runs = h.log.runs();
    assert_eq!(runs.len(), 2);
    // ETAs are wall-clock times: the paused clock waits a few microseconds less.
    assert_eq!(
        (runs[1].2 - runs[0].2).as_secs_f64().round(),
        30.0,
        "the retry waited for its countdown"
    );
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn automatic_retries_back_off_exponentially_then_fail_with_the_last_error() {
    let h = harness(1, 4).await;
    let sent = h.send(&FLAKY, json!([])).await;
    let failed = failure(sent.get(WAIT).await);
    assert_eq!(
        (failed.exc_type.as_str(), failed.message.as_str()),
        ("ConnectionError", "broker down")
    );
    let runs = h.log.runs();
    let retries: Vec<u32> = runs.iter().map(|r| r.1).collect();
    assert_eq!(
        retries,
        [0, 1, 2, 3],
        "the first run and max_retries = 3 retries"
    );
    let gaps: Vec<u64> = runs
        .windows(2)
        // ETAs are wall-clock times: the paused clock waits a few microseconds less.
        .map(|w| (w[1].2 - w[0].2).as_secs_f64().round() as u64)
        .collect();
    assert_eq!(gaps, [2, 4, 5], "2 s doubling, capped at max_delay = 5 s");
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retry_state_is_visible_while_waiting() {
    let h = harness(1, 4).await;
    let sent = h.send(&RETRY_ONCE, json!([])).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(sent.state().await.unwrap(), TaskState::Retry);
    assert_eq!(sent.get(WAIT).await.unwrap(), json!(1));
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_countdown_holds_the_task_without_blocking_others() {
    let h = harness(1, 4).await;
    let t0 = Instant::now();
    let later = h
        .send_with(
            &ECHO,
            json!([1]),
            SendOptions {
                countdown: Some(Duration::from_secs(600)),
                ..Default::default()
            },
        )
        .await;
    let now = h.send(&ECHO, json!([2])).await;
    assert_eq!(now.get(WAIT).await.unwrap(), json!(2));
    assert_eq!(later.state().await.unwrap(), TaskState::Pending);
    assert_eq!(later.get(WAIT).await.unwrap(), json!(1));
    let runs = h.log.runs();
    assert_eq!(runs.len(), 2);
    assert!(
        (runs[1].2 - t0).as_secs_f64().round() >= 600.0,
        "ran no earlier than its countdown"
    );
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_returns_held_eta_tasks_and_pending_retries_to_the_queue() {
    let h = harness(2, 1).await;
    let soon = SendOptions {
        countdown: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let mut sent = Vec::new();
    for n in 0..10 {
        sent.push((json!(n), h.send_with(&ECHO, json!([n]), soon.clone()).await));
    }
    // Runs at once, then waits 30 s for its retry: held by the worker as a new message.
    let retried = h.send(&RETRY_ONCE, json!([])).await;
    while retried.state().await.unwrap() != TaskState::Retry || !h.broker.is_empty("celery") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.broker.unacked(), 11, "ten ETA tasks and one retry held");
    h.worker.shutdown().await;
    assert_eq!(
        (h.broker.len("celery"), h.broker.unacked()),
        (11, 0),
        "every held message is back on the queue when shutdown returns"
    );

    let t0 = Instant::now();
    let replacement = start_worker(&h.app, 2, 1).await;
    sent.push((json!(1), retried));
    let mut completed = 0;
    for (expected, result) in &sent {
        assert_eq!(
            result.get(Duration::from_secs(31)).await.unwrap(),
            *expected
        );
        completed += 1;
    }
    assert_eq!(completed, 11, "sent 11, completed 11, none lost");
    let runs = replacement.singleton::<Log>().unwrap().runs();
    assert_eq!(runs.len(), 11, "each ran once on the replacement");
    assert!(
        runs.iter().all(|r| (r.2 - t0) <= Duration::from_secs(31)),
        "each ran by its ETA, not after a timeout"
    );
    replacement.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn beyond_the_held_cap_eta_tasks_take_window_places_and_fetching_pauses() {
    let broker = MemoryBroker::new();
    let app = App::new(broker.clone(), MemoryBackend::new());
    let mut builder = app.worker();
    builder
        .singleton(Log::default())
        .concurrency(1)
        .prefetch_multiplier(1)
        .max_held_eta(2)
        .queues(["celery"])
        .register::<Probe, EchoArgs>(&ECHO);
    let worker = builder.start().await.unwrap();
    let client = app.client();
    let later = SendOptions {
        countdown: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let mut sent = Vec::new();
    for n in 0..5 {
        let result = client
            .send_task::<Value>(&ECHO, vec![json!(n)])
            .with_options(later.clone())
            .await
            .unwrap();
        sent.push((json!(n), result));
    }
    let now = client
        .send_task::<Value>(&ECHO, vec![json!(9)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (broker.unacked(), broker.len("celery")),
        (3, 3),
        "two held outside the window of one, the third in it; the rest left on the broker"
    );
    // Nothing is requeued or lost: each runs once its turn comes.
    sent.push((json!(9), now));
    for (expected, result) in &sent {
        assert_eq!(
            result.get(Duration::from_secs(200)).await.unwrap(),
            *expected
        );
    }
    let runs = worker.singleton::<Log>().unwrap().runs();
    assert_eq!(runs.len(), 6, "each ran once");
    worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_task_is_revoked_and_not_run() {
    let h = harness(1, 4).await;
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let sent = h
        .send_with(
            &ECHO,
            json!([1]),
            SendOptions {
                expires_at: Some(past),
                ..Default::default()
            },
        )
        .await;
    match sent.get(WAIT).await {
        Err(ResultError::Revoked(failure)) => assert_eq!(
            (failure.exc_type.as_str(), failure.message.as_str()),
            ("TaskRevokedError", "expired")
        ),
        other => panic!("expected REVOKED, got {other:?}"),
    }
    assert!(h.log.runs().is_empty());
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_revoked_task_is_not_run() {
    let h = harness(1, 4).await;
    let sent = h
        .send_with(
            &ECHO,
            json!([1]),
            SendOptions {
                countdown: Some(Duration::from_secs(60)),
                ..Default::default()
            },
        )
        .await;
    sent.revoke().await.unwrap();
    match sent.get(WAIT).await {
        Err(ResultError::Revoked(failure)) => assert_eq!(failure.message, "revoked"),
        other => panic!("expected REVOKED, got {other:?}"),
    }
    assert!(h.log.runs().is_empty());
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn track_started_records_started_and_ignore_result_stores_nothing() {
    let h = harness(2, 4).await;
    let running = h.send(&STARTED, json!([])).await;
    h.log.started.notified().await;
    tokio::task::yield_now().await;
    assert_eq!(running.state().await.unwrap(), TaskState::Started);
    assert_eq!(running.get(WAIT).await.unwrap(), Value::Null);
    let ignored = h.send(&IGNORED, json!([])).await;
    assert_eq!(
        h.send(&ECHO, json!([1])).await.get(WAIT).await.unwrap(),
        json!(1)
    );
    assert_eq!(
        h.log.runs().iter().filter(|r| r.0 == "t.ignored").count(),
        1,
        "it ran"
    );
    // Drained first, so a result stored late would be there.
    h.worker.shutdown().await;
    assert_eq!(
        ignored.state().await.unwrap(),
        TaskState::Pending,
        "but stored nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn late_ack_keeps_the_message_unacknowledged_until_the_result_is_stored() {
    let h = harness(1, 1).await;
    let late = h.send(&SLEEP_LATE, json!([10])).await;
    h.log.started.notified().await;
    assert_eq!(h.broker.unacked(), 1, "acks_late: held while running");
    late.get(WAIT).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(h.broker.unacked(), 0);
    let early = h.send(&SLEEP, json!([10])).await;
    h.log.started.notified().await;
    assert_eq!(
        h.broker.unacked(),
        0,
        "early ack: acknowledged before running"
    );
    early.get(WAIT).await.unwrap();
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_worker_holds_no_more_messages_than_its_prefetch_window() {
    let h = harness(1, 1).await;
    for _ in 0..3 {
        h.send(&SLEEP, json!([100])).await;
    }
    h.log.started.notified().await;
    assert_eq!(
        h.broker.len("celery"),
        2,
        "concurrency 1 × multiplier 1: one message held"
    );
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_spaces_starts_without_blocking_other_tasks() {
    let h = harness(2, 4).await;
    let t0 = Instant::now();
    let limited = [
        h.send(&LIMITED, json!([])).await,
        h.send(&LIMITED, json!([])).await,
        h.send(&LIMITED, json!([])).await,
    ];
    assert_eq!(
        h.send(&ECHO, json!([1])).await.get(WAIT).await.unwrap(),
        json!(1)
    );
    for result in &limited {
        result.get(WAIT).await.unwrap();
    }
    let starts: Vec<u64> = h
        .log
        .runs()
        .iter()
        .filter(|r| r.0 == "t.limited")
        .map(|r| (r.2 - t0).as_secs_f64().round() as u64)
        .collect();
    assert_eq!(starts, [0, 6, 12], "10/m: one start every 6 s");
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_running_tasks_finish() {
    let h = harness(1, 1).await;
    let running = h.send(&SLEEP, json!([20])).await;
    h.log.started.notified().await;
    let waiting = h.send(&ECHO, json!([1])).await;
    h.worker.shutdown().await;
    assert_eq!(
        running.get(Duration::from_secs(1)).await.unwrap(),
        json!(20),
        "finished during shutdown"
    );
    assert_eq!(
        waiting.state().await.unwrap(),
        TaskState::Pending,
        "not started: left on the broker"
    );
    assert_eq!(h.broker.len("celery"), 1);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_each_outcome_per_task_and_queue_and_show_what_is_held() {
    let broker = MemoryBroker::new();
    let app = App::new(broker.clone(), MemoryBackend::new());
    let worker = start_worker_with(&app, 2, 4, |b| {
        b.metrics(true);
    })
    .await;
    let h = Harness {
        log: worker.singleton::<Log>().expect("the log singleton"),
        app,
        broker,
        worker,
    };
    for value in 1..=3 {
        h.send(&ECHO, json!([value])).await.get(WAIT).await.unwrap();
    }
    let _ = h.send(&FAIL, json!([])).await.get(WAIT).await;
    h.send(&RETRY_ONCE, json!([]))
        .await
        .get(WAIT)
        .await
        .unwrap();
    let countdown = SendOptions {
        countdown: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let revoked = h.send_with(&ECHO, json!([9]), countdown.clone()).await;
    revoked.revoke().await.unwrap();
    let _ = revoked.get(WAIT).await;
    // Held now: one task running, one waiting for its countdown.
    let _running = h.send(&SLEEP, json!([3600])).await;
    let _held = h.send_with(&ECHO, json!([10]), countdown).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let text = h.worker.metrics().expect("metrics are on").render();
    let host = h.worker.hostname();
    let labels = |name: &str| format!(r#"name="{name}",hostname="{host}",queue_name="celery""#);
    let expected = [
        format!("celery_task_received_total{{{}}} 5", labels("t.echo")),
        format!("celery_task_started_total{{{}}} 3", labels("t.echo")),
        format!("celery_task_succeeded_total{{{}}} 3", labels("t.echo")),
        format!("celery_task_revoked_total{{{}}} 1", labels("t.echo")),
        format!("celery_task_runtime_count{{{}}} 3", labels("t.echo")),
        format!(
            "celery_task_queue_latency_seconds_count{{{}}} 3",
            labels("t.echo")
        ),
        format!(
            r#"celery_task_failed_total{{{},exception="KeyError"}} 1"#,
            labels("t.fail")
        ),
        format!("celery_task_received_total{{{}}} 2", labels("t.retry_once")),
        format!("celery_task_retried_total{{{}}} 1", labels("t.retry_once")),
        format!(
            "celery_task_succeeded_total{{{}}} 1",
            labels("t.retry_once")
        ),
        format!(r#"celery_worker_up{{hostname="{host}"}} 1"#),
        format!(r#"celery_worker_tasks_active{{hostname="{host}"}} 1"#),
        format!(r#"celery_worker_tasks_scheduled{{hostname="{host}"}} 1"#),
        format!(r#"celery_worker_tasks_reserved{{hostname="{host}"}} 0"#),
        format!(r#"celery_worker_concurrency{{hostname="{host}"}} 2"#),
        "# TYPE celery_task_runtime histogram".to_owned(),
        r#"celerity_reconnects_total{transport="redis"} 0"#.to_owned(),
    ];
    for line in expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    h.worker.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_are_off_unless_asked_for() {
    let h = harness(1, 1).await;
    assert!(h.worker.metrics().is_none());
    h.worker.shutdown().await;
}
