//! A chord whose worker dies: a worker running late-acked header tasks of a chord is
//! SIGKILLed with parts in flight, and another worker, whose URL sets a 2 s visibility
//! timeout, gets them back and finishes the chord. Parts that ran twice count once
//! (Celery 5.7's `.d` set), the body runs exactly once, and the chord leaves only its
//! `done` marker behind.
#![cfg(feature = "redis")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use celerity::canvas::{Sig, Takes, chord, group};
use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, SendOptions, TaskCall, TaskContext, TaskResult,
    TaskSpec, Worker,
};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

/// `t.crash_part(x) -> x` after 100 to 300 ms, acknowledged once its result is stored.
static PART: TaskSpec = TaskSpec::new("t.crash_part", &[ArgSpec::new("x", true)]).acks_late(true);
/// `t.crash_sum(xs) -> sum(xs)`: the chord's body.
static SUM: TaskSpec = TaskSpec::new("t.crash_sum", &[ArgSpec::new("xs", true)]);

/// How many header parts the chord has.
const PARTS: i64 = 40;
/// Counts every start of a header part, across processes.
const PART_STARTS: &str = "chord-crash:part-starts";
/// Counts every run of the body, across processes.
const BODY_RUNS: &str = "chord-crash:body-runs";

/// What a worker of the crash test shares between its tasks.
struct Counters {
    redis: redis::Client,
    /// Header parts this process has finished.
    finished: AtomicUsize,
    /// Print `running` once this many parts have finished here (the worker to kill).
    announce_after: Option<usize>,
}

impl Counters {
    async fn incr(&self, key: &str) {
        let mut connection = self
            .redis
            .get_multiplexed_async_connection()
            .await
            .expect("a Redis connection");
        let _: i64 = connection.incr(key, 1).await.expect("INCR");
    }
}

struct Crash {
    counters: Arc<Counters>,
}

impl Component for Crash {
    type Deps = Arc<Counters>;

    async fn build(counters: Arc<Counters>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Crash { counters })
    }
}

#[derive(Serialize, Deserialize)]
struct PartArgs {
    x: i64,
}

impl Invoke<Crash> for PartArgs {
    type Output = i64;

    async fn invoke(self, crash: &Crash, _ctx: &TaskContext) -> TaskResult<i64> {
        let counters = &crash.counters;
        counters.incr(PART_STARTS).await;
        let pause = 100 + (self.x as u64 * 37) % 200;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let finished = counters.finished.fetch_add(1, Ordering::SeqCst) + 1;
        if counters.announce_after == Some(finished) {
            println!("running");
        }
        Ok(self.x)
    }
}

#[derive(Deserialize)]
struct SumArgs {
    xs: Vec<i64>,
}

impl Invoke<Crash> for SumArgs {
    type Output = i64;

    async fn invoke(self, crash: &Crash, _ctx: &TaskContext) -> TaskResult<i64> {
        crash.counters.incr(BODY_RUNS).await;
        Ok(self.xs.iter().sum())
    }
}

/// A worker of the part and the body on `queue`, four tasks at a time.
async fn crash_worker(url: &str, queue: &str, announce_after: Option<usize>) -> Worker {
    let app = App::from_urls(url, url).await.expect("the worker's app");
    let counters = Counters {
        redis: redis::Client::open(url).expect("a valid URL"),
        finished: AtomicUsize::new(0),
        announce_after,
    };
    let mut builder = app.worker();
    builder
        .singleton(counters)
        .register::<Crash, PartArgs>(&PART)
        .register::<Crash, SumArgs>(&SUM)
        .queues([queue.to_owned()])
        .concurrency(4);
    builder.start().await.expect("the worker starts")
}

const KILLED_URL: &str = "CELERITY_KILLED_CHORD_WORKER_URL";
const KILLED_QUEUE: &str = "CELERITY_KILLED_CHORD_WORKER_QUEUE";

/// The worker the crash test kills: runs header parts and says `running` once three are
/// done, with more started and prefetched, none of them acknowledged before it finishes.
#[tokio::test]
#[ignore = "run as a child process by a_chord_whose_worker_is_killed_mid_header_runs_its_body_once"]
async fn chord_worker_to_kill() {
    let url = std::env::var(KILLED_URL).expect("started by the crash test");
    let queue = std::env::var(KILLED_QUEUE).expect("started by the crash test");
    let _worker = crash_worker(&url, &queue, Some(3)).await;
    // Ended by SIGKILL; a worker that never says `running` ends here instead, so the
    // crash test fails rather than waits for it forever.
    tokio::time::sleep(Duration::from_secs(20)).await;
    panic!("not killed within 20 s");
}

#[tokio::test]
async fn a_chord_whose_worker_is_killed_mid_header_runs_its_body_once() {
    let Some(server) = support::RedisServer::start().await else {
        return;
    };
    let url = server.url();
    let queue = support::unique_queue();
    let app = App::from_urls(&url, &url).await.unwrap();
    let client = app.client();
    let to_queue = SendOptions {
        queue: Some(queue.clone()),
        ..SendOptions::default()
    };
    let header = group((1..=PARTS).map(|x| {
        TaskCall::new(&client, &PART, PartArgs { x })
            .queue(&queue)
            .s()
    }));
    let body: Sig<Takes<Vec<i64>>, i64> =
        Sig::of_task(&SUM, std::iter::empty(), Default::default(), &to_queue);
    let total = client.send(chord(header, body)).await.unwrap();

    let (mut child, running) = support::child_test(
        "chord_worker_to_kill",
        &[(KILLED_URL, &url), (KILLED_QUEUE, &queue)],
        "running",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running, "the first worker ran parts of the header");
    let mut raw = support::raw_redis(&url).await;
    let unacked: usize = raw.hlen("unacked").await.unwrap();
    assert!(
        unacked > 0,
        "the killed worker left parts unacknowledged (late acks)"
    );

    // A worker whose URL sets a 2 s visibility timeout takes the rest of the queue and,
    // after the timeout, the killed worker's parts.
    let rescue_url = format!("{url}?visibility_timeout=2");
    let rescuer = crash_worker(&rescue_url, &queue, None).await;
    let started = Instant::now();
    let value = total.get(Duration::from_secs(15)).await;
    let waited = started.elapsed();
    // A duplicate body would come from a part run again after the chord completed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rescuer.shutdown().await;

    assert_eq!(
        value.unwrap(),
        (1..=PARTS).sum::<i64>(),
        "the body got every part's result ({waited:?} after the kill)"
    );
    let body_runs: i64 = raw.get(BODY_RUNS).await.unwrap();
    assert_eq!(body_runs, 1, "the body ran exactly once");
    let starts: i64 = raw.get(PART_STARTS).await.unwrap();
    assert!(
        starts > PARTS,
        "parts in flight when the worker was killed ran again ({starts} starts of {PARTS} parts)"
    );
    let mut keys: Vec<String> = raw.keys("celery-taskset-meta-*").await.unwrap();
    keys.sort();
    assert!(
        keys.len() == 1 && keys[0].ends_with(".c"),
        "only the chord's done marker is left: {keys:?}"
    );
    assert_eq!(raw.get::<_, String>(&keys[0]).await.unwrap(), "done");
    let unacked: usize = raw.hlen("unacked").await.unwrap();
    let queued: usize = raw.llen(&queue).await.unwrap();
    assert_eq!((unacked, queued), (0, 0), "nothing is left to run again");
}
