//! Faults against real Redis servers: a worker killed with tasks in flight, and Redis
//! itself restarted under a running producer and worker. Every task sent must complete;
//! the tests count them.

mod support;

use std::time::{Duration, Instant};

use celerity::backend::RedisBackend;
use celerity::broker::RedisBroker;
use celerity::{App, ArgSpec, AsyncResult, TaskSpec, TaskState};
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{DOUBLE, DoubleArgs, Doubler, to, unique_queue};

/// `t.slow(x) -> 2x` after a pause, acknowledged only after it ran (late ack).
static SLOW: TaskSpec = TaskSpec::new("t.slow", &[ArgSpec::new("x", true)]).acks_late(true);

#[derive(serde::Deserialize)]
struct SlowArgs {
    x: i64,
}

impl celerity::Invoke<Doubler> for SlowArgs {
    type Output = i64;
    async fn invoke(self, _c: &Doubler, _ctx: &celerity::TaskContext) -> celerity::TaskResult<i64> {
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok(self.x * 2)
    }
}

const CRASH_URL: &str = "CELERITY_CRASH_TEST_URL";
const CRASH_QUEUE: &str = "CELERITY_CRASH_TEST_QUEUE";

async fn count_successes(results: &[AsyncResult<i64>]) -> usize {
    let mut done = 0;
    for result in results {
        if result.state().await.unwrap() == TaskState::Success {
            done += 1;
        }
    }
    done
}

/// The worker process the crash test kills: consumes the queue it is told, forever.
#[tokio::test]
#[ignore = "run as a child process by a_killed_workers_tasks_are_completed_by_another"]
async fn crash_test_worker_process() {
    let url = std::env::var(CRASH_URL).expect("started by the crash test");
    let queue = std::env::var(CRASH_QUEUE).expect("started by the crash test");
    let app = App::new(
        RedisBroker::connect(&url).await.unwrap(),
        RedisBackend::connect(&url).await.unwrap(),
    );
    let mut builder = app.worker();
    builder
        .register::<Doubler, SlowArgs>(&SLOW)
        .queues([queue])
        .concurrency(4);
    let _worker = builder.start().await.unwrap();
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_killed_workers_tasks_are_completed_by_another() {
    let Some(url) = support::redis_url() else {
        return;
    };
    // A database of its own: the restoring worker sweeps the whole `unacked` hash.
    let url = url
        .rsplit_once('/')
        .map_or(url.clone(), |(base, _)| format!("{base}/13"));
    let queue = unique_queue();
    let app = App::new(
        RedisBroker::connect(&url).await.unwrap(),
        RedisBackend::connect(&url).await.unwrap(),
    );
    const TASKS: i64 = 40;
    let mut sent = Vec::new();
    for x in 0..TASKS {
        sent.push(
            app.client()
                .send_task::<i64>(&SLOW, vec![json!(x)])
                .with_options(to(&queue))
                .await
                .unwrap(),
        );
    }

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_test_worker_process",
            "--nocapture",
        ])
        .env(CRASH_URL, &url)
        .env(CRASH_QUEUE, &queue)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it finish a few and hold more in flight (prefetch window 16, 4 running).
    let started = Instant::now();
    while count_successes(&sent).await < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker process ran nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let completed_before = count_successes(&sent).await;
    let mut raw = support::raw_redis(&url).await;
    // This queue's records only (`[envelope, exchange, routing key]`), not leftovers of
    // an earlier run in the same database.
    let records: Vec<String> = raw.hvals("unacked").await.unwrap();
    let in_flight = records
        .iter()
        .filter_map(|record| serde_json::from_str::<Value>(record).ok())
        .filter(|record| record[2] == queue.as_str())
        .count();
    let queued: usize = raw.llen(&queue).await.unwrap();
    assert!(in_flight > 0, "the killed worker held unacknowledged tasks");

    // Another worker restores them once the visibility timeout has passed, and runs them.
    let broker = RedisBroker::connect(&url)
        .await
        .unwrap()
        .visibility_timeout(Duration::from_secs(1));
    let rescuer = App::new(broker, RedisBackend::connect(&url).await.unwrap());
    let mut builder = rescuer.worker();
    builder
        .register::<Doubler, SlowArgs>(&SLOW)
        .queues([queue.clone()])
        .concurrency(8);
    let worker = builder.start().await.unwrap();
    let lost = support::lost_doubles(&sent, Duration::from_secs(60)).await;
    worker.shutdown().await;
    eprintln!(
        "crash: {TASKS} sent; {completed_before} done before SIGKILL, {in_flight} in flight, \
         {queued} still queued; {} completed in the end, {} lost",
        TASKS as usize - lost.len(),
        lost.len()
    );
    assert_eq!(
        lost,
        Vec::<String>::new(),
        "every task completes with its result"
    );
    assert_eq!(raw.hlen::<_, usize>("unacked").await.unwrap(), 0);
}

#[tokio::test]
async fn producer_and_worker_ride_out_a_redis_restart() {
    let Some(mut server) = support::RedisServer::start().await else {
        return;
    };
    let url = server.url();
    // A fetch that Redis applied just before it died, whose reply was lost, leaves the
    // message in `unacked` with no consumer holding it: the visibility timeout brings it
    // back (kombu's rule). A short one keeps the test short.
    let broker = RedisBroker::connect(&url)
        .await
        .unwrap()
        .visibility_timeout(Duration::from_secs(3));
    let app = App::new(broker, RedisBackend::connect(&url).await.unwrap());
    let queue = unique_queue();
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.clone()])
        .concurrency(4)
        .metrics(true);
    let worker = builder.start().await.unwrap();

    const TASKS: i64 = 300;
    let producer = {
        let client = app.client();
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for x in 0..TASKS {
                let result = client
                    .send_task::<i64>(&DOUBLE, vec![json!(x)])
                    .with_options(to(&queue))
                    .await
                    .expect("publishing rides out the restart");
                sent.push(result);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await;

    let sent = producer.await.unwrap();
    let lost = support::lost_doubles(&sent, Duration::from_secs(30)).await;
    eprintln!(
        "restart: {TASKS} sent across a Redis restart; {} completed, {} lost",
        TASKS as usize - lost.len(),
        lost.len()
    );
    assert_eq!(
        lost,
        Vec::<String>::new(),
        "every task completes with its result"
    );
    let metrics = worker.metrics().unwrap().render();
    let reconnects: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(r#"celerity_reconnects_total{transport="redis"} "#))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no Redis reconnect count in:\n{metrics}"));
    assert!(
        reconnects >= 1,
        "the restart shows in the metrics: {reconnects}"
    );
    worker.shutdown().await;
}
