//! What a Redis deployment must not lose, on servers of the test's own: a killed
//! consumer's task comes back after the visibility timeout its URL sets, a result stored
//! while Redis is away for longer than an operation's retry window still arrives (or, for
//! a late-acked task, the task runs again and stores it), and a worker's memory comes back
//! after a large message.
#![cfg(feature = "redis")]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use celerity::backend::RedisBackend;
use celerity::broker::RedisBroker;
use celerity::{App, ArgSpec, TaskSpec};
use redis::AsyncCommands;
use serde_json::json;
use support::{DOUBLE, DoubleArgs, Doubler, to, unique_queue};

const CONSUMER_URL: &str = "CELERITY_KILLED_CONSUMER_URL";
const CONSUMER_QUEUE: &str = "CELERITY_KILLED_CONSUMER_QUEUE";

/// The consumer the visibility test kills: takes one message, says so, and waits.
#[tokio::test]
#[ignore = "run as a child process by a_killed_consumers_task_returns_after_the_urls_visibility_timeout"]
async fn consumer_to_kill() {
    let url = std::env::var(CONSUMER_URL).expect("started by the visibility test");
    let queue = std::env::var(CONSUMER_QUEUE).expect("started by the visibility test");
    let app = App::from_urls(&url, "memory://").await.unwrap();
    let mut consumer = app.broker().consume(&[queue]).await.unwrap();
    let delivery = consumer.next().await.unwrap();
    println!("taken");
    std::future::pending::<()>().await;
    drop(delivery);
}

/// Runs the ignored test `name` of this binary in a process of its own with `env`, and
/// reads its output until it prints `line` (true) or ends (false).
fn child_test(name: &str, env: &[(&str, &str)], line: &str) -> (std::process::Child, bool) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let seen = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .any(|printed| printed == line);
    (child, seen)
}

#[tokio::test]
async fn a_killed_consumers_task_returns_after_the_urls_visibility_timeout() {
    let Some(server) = support::RedisServer::start().await else {
        return;
    };
    let queue = unique_queue();
    let app = App::from_urls(&server.url(), &server.url()).await.unwrap();
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(21)])
        .with_options(to(&queue))
        .await
        .unwrap();

    // A consumer on the default visibility timeout (an hour) takes it and is SIGKILLed.
    let (mut child, taken) = child_test(
        "consumer_to_kill",
        &[(CONSUMER_URL, &server.url()), (CONSUMER_QUEUE, &queue)],
        "taken",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(taken, "the consumer took the task");
    let killed = Instant::now();

    // A worker whose URL sets a 2 s visibility timeout gives it back and runs it.
    let url = format!("{}?visibility_timeout=2", server.url());
    let rescuer = App::from_urls(&url, &url).await.unwrap();
    let worker = support::doubler(&rescuer, &queue).await;
    let value = sent.get(Duration::from_secs(20)).await;
    let waited = killed.elapsed();
    worker.shutdown().await;
    assert_eq!(
        value.unwrap(),
        42,
        "the task returned within 20 s, not after an hour"
    );
    assert!(
        waited >= Duration::from_secs(1),
        "it came back by the timeout, not at once ({waited:?})"
    );
}

/// `t.early(x) -> 2x` after a pause, acknowledged before it runs (Celery's default).
static EARLY: TaskSpec = TaskSpec::new("t.early", &[ArgSpec::new("x", true)]);
/// `t.late(x) -> 2x` after a pause, acknowledged after its result is stored.
static LATE: TaskSpec = TaskSpec::new("t.late", &[ArgSpec::new("x", true)]).acks_late(true);
/// How many times each has started.
static EARLY_RUNS: AtomicUsize = AtomicUsize::new(0);
static LATE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(serde::Deserialize)]
struct EarlyArgs {
    x: i64,
}

impl celerity::Invoke<Doubler> for EarlyArgs {
    type Output = i64;
    async fn invoke(self, _c: &Doubler, _ctx: &celerity::TaskContext) -> celerity::TaskResult<i64> {
        EARLY_RUNS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(self.x * 2)
    }
}

#[derive(serde::Deserialize)]
struct LateArgs {
    x: i64,
}

impl celerity::Invoke<Doubler> for LateArgs {
    type Output = i64;
    async fn invoke(self, _c: &Doubler, _ctx: &celerity::TaskContext) -> celerity::TaskResult<i64> {
        LATE_RUNS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(self.x * 2)
    }
}

/// Waits until `runs` reaches `count`.
async fn started(runs: &AtomicUsize, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs.load(Ordering::SeqCst) < count {
        assert!(Instant::now() < deadline, "the task did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_result_stored_during_an_outage_longer_than_the_retry_window_arrives() {
    let Some(mut server) = support::RedisServer::start().await else {
        return;
    };
    let url = server.url();
    // Operations give up after 2 s; storing a result keeps trying for a minute.
    let worker_app = App::new(
        RedisBroker::connect(&url)
            .await
            .unwrap()
            .retry_window(Duration::from_secs(2)),
        RedisBackend::connect(&url)
            .await
            .unwrap()
            .retry_window(Duration::from_secs(2))
            .result_retry_window(Duration::from_secs(60)),
    );
    let queue = unique_queue();
    let mut builder = worker_app.worker();
    builder
        .register::<Doubler, EarlyArgs>(&EARLY)
        .queues([queue.clone()]);
    let worker = builder.start().await.unwrap();
    let client = App::from_urls(&url, &url).await.unwrap();
    let sent = client
        .client()
        .send_task::<i64>(&EARLY, vec![json!(21)])
        .with_options(to(&queue))
        .await
        .unwrap();

    started(&EARLY_RUNS, 1).await;
    server.kill();
    // The task finishes a second later. Redis stays away for 20 s: longer than the 2 s
    // window plus the reconnection attempts one try of an operation waits for.
    tokio::time::sleep(Duration::from_secs(20)).await;
    server.restart().await;

    let value = sent.get(Duration::from_secs(30)).await;
    worker.shutdown().await;
    assert_eq!(value.unwrap(), 42, "the result arrives after the outage");
    assert_eq!(EARLY_RUNS.load(Ordering::SeqCst), 1, "the task ran once");
}

#[tokio::test]
async fn a_late_acked_task_whose_result_is_given_up_runs_again_and_stores_it() {
    let (Some(broker_server), Some(mut backend_server)) = (
        support::RedisServer::start().await,
        support::RedisServer::start().await,
    ) else {
        return;
    };
    let (broker_url, backend_url) = (broker_server.url(), backend_server.url());
    // The backend gives a result up after 2 s; the broker stays reachable.
    let worker_app = App::new(
        RedisBroker::connect(&broker_url).await.unwrap(),
        RedisBackend::connect(&backend_url)
            .await
            .unwrap()
            .retry_window(Duration::from_secs(2))
            .result_retry_window(Duration::from_secs(2)),
    );
    let queue = unique_queue();
    let mut builder = worker_app.worker();
    builder
        .register::<Doubler, LateArgs>(&LATE)
        .queues([queue.clone()]);
    let worker = builder.start().await.unwrap();
    let client = App::from_urls(&broker_url, &backend_url).await.unwrap();
    let sent = client
        .client()
        .send_task::<i64>(&LATE, vec![json!(21)])
        .with_options(to(&queue))
        .await
        .unwrap();

    started(&LATE_RUNS, 1).await;
    backend_server.kill();
    // Its result is given up 2 s after the task ends: the message is requeued, not
    // acknowledged, and the task starts again.
    started(&LATE_RUNS, 2).await;
    backend_server.restart().await;

    let value = sent.get(Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert_eq!(value.unwrap(), 42, "the result of a later run is stored");
    let runs = LATE_RUNS.load(Ordering::SeqCst);
    assert!(runs >= 2, "the task ran again ({runs} runs)");
    let mut raw = support::raw_redis(&broker_url).await;
    let unacked: usize = raw.hlen("unacked").await.unwrap();
    let queued: usize = raw.llen(&queue).await.unwrap();
    assert_eq!((unacked, queued), (0, 0), "nothing is left to run again");
}

const MEASURED_URL: &str = "CELERITY_MEASURED_WORKER_URL";
const MEASURED_QUEUE: &str = "CELERITY_MEASURED_WORKER_QUEUE";

/// The worker whose memory the large-message test reads from outside: a process of its
/// own, so that no other test's allocations count.
#[tokio::test]
#[ignore = "run as a child process by a_workers_memory_comes_back_after_a_large_message"]
async fn worker_to_measure() {
    let url = std::env::var(MEASURED_URL).expect("started by the memory test");
    let queue = std::env::var(MEASURED_QUEUE).expect("started by the memory test");
    let app = App::from_urls(&url, &url).await.unwrap();
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue]);
    let _worker = builder.start().await.unwrap();
    println!("ready");
    std::future::pending::<()>().await;
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_workers_memory_comes_back_after_a_large_message() {
    let Some(server) = support::RedisServer::start().await else {
        return;
    };
    let queue = unique_queue();
    let (mut child, ready) = child_test(
        "worker_to_measure",
        &[(MEASURED_URL, &server.url()), (MEASURED_QUEUE, &queue)],
        "ready",
    );
    assert!(ready, "the worker started");
    let app = App::from_urls(&server.url(), &server.url()).await.unwrap();
    let client = app.client();
    let warm = client
        .send_task::<i64>(&DOUBLE, vec![json!(1)])
        .queue(&queue)
        .await
        .unwrap();
    assert_eq!(warm.get(Duration::from_secs(10)).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(child.id());

    // 12 MiB of ill-typed argument: under the message size limit, so fetched, decoded and
    // failed as a TypeError.
    let huge = "x".repeat(12 * 1024 * 1024);
    let large = client
        .send_task::<i64>(&DOUBLE, vec![json!(huge)])
        .queue(&queue)
        .await
        .unwrap();
    drop(huge);
    let failed = large.get(Duration::from_secs(30)).await;
    assert!(failed.is_err(), "a string is no integer: {failed:?}");
    // The worker still runs tasks, through its new connection.
    let after_large = client
        .send_task::<i64>(&DOUBLE, vec![json!(2)])
        .queue(&queue)
        .await
        .unwrap();
    assert_eq!(after_large.get(Duration::from_secs(10)).await.unwrap(), 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 6 * 1024,
        "the worker kept {grown} KiB after a 12 MiB message ({before} KiB before, {after} KiB after)"
    );
}
