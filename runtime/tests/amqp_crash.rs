//! A worker process killed with SIGKILL while it runs late-acknowledged tasks loses none
//! of them: RabbitMQ redelivers what it had not acknowledged, and another worker completes
//! every task.
//!
//! The killed worker is this test binary run again with `CELERITY_AMQP_CRASH_QUEUE` set,
//! which turns the same test into the worker. Both processes append `start`/`done` lines
//! to one log, so the test knows which tasks were in flight when the worker died.
//!
//! Needs RabbitMQ (`CELERITY_TEST_AMQP_URL`); skips without it unless
//! `CELERITY_REQUIRE_BROKERS=1`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, SendOptions, TaskContext, TaskResult, TaskSpec,
};
use serde_json::json;

/// Set in the worker process: the queue it consumes.
const QUEUE_VAR: &str = "CELERITY_AMQP_CRASH_QUEUE";
/// Set in the worker process: the shared log.
const LOG_VAR: &str = "CELERITY_AMQP_CRASH_LOG";
const TASKS: i64 = 40;

/// `t.crash_work(n)`: logs its start, works 300 ms, logs its end; acknowledged late.
static WORK: TaskSpec = TaskSpec::new("t.crash_work", &[ArgSpec::new("n", true)]).acks_late(true);

/// Where both processes log.
struct CrashLog(PathBuf);

struct Workbench {
    log: Arc<CrashLog>,
}

impl Component for Workbench {
    type Deps = Arc<CrashLog>;
    async fn build(log: Arc<CrashLog>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Workbench { log })
    }
}

impl Workbench {
    /// One line per write, appended: lines of both processes never interleave.
    fn note(&self, what: &str, n: i64) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log.0)
            .expect("the crash log opens");
        let line = format!("{what} {n} {}\n", std::process::id());
        file.write_all(line.as_bytes())
            .expect("the crash log is written");
    }
}

#[derive(serde::Deserialize)]
struct WorkArgs {
    n: i64,
}

impl Invoke<Workbench> for WorkArgs {
    type Output = i64;
    async fn invoke(self, bench: &Workbench, _ctx: &TaskContext) -> TaskResult<i64> {
        bench.note("start", self.n);
        tokio::time::sleep(Duration::from_millis(300)).await;
        bench.note("done", self.n);
        Ok(self.n)
    }
}

async fn start_worker(app: &App, queue: &str, log: &Path) -> celerity::Worker {
    let mut builder = app.worker();
    builder
        .singleton(CrashLog(log.to_owned()))
        .register::<Workbench, WorkArgs>(&WORK)
        .queues([queue.to_owned()])
        .concurrency(4)
        .prefetch_multiplier(1);
    builder.start().await.expect("the worker starts")
}

/// The worker process: works until it is killed, or gives up after a minute so that it
/// never outlives a failed test.
async fn work_until_killed(url: &str, queue: &str, log: &Path) {
    let app = App::from_urls(url, "rpc://")
        .await
        .expect("the worker connects");
    let _worker = start_worker(&app, queue, log).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    std::process::exit(2);
}

/// `(started, done)` task numbers per process id, read from the log.
fn read_log(path: &Path) -> BTreeMap<u32, (BTreeSet<i64>, BTreeSet<i64>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_pid: BTreeMap<u32, (BTreeSet<i64>, BTreeSet<i64>)> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [what, n, pid] = parts[..] else {
            panic!("bad log line {line:?}")
        };
        let entry = by_pid.entry(pid.parse().unwrap()).or_default();
        let n: i64 = n.parse().unwrap();
        match what {
            "start" => entry.0.insert(n),
            "done" => entry.1.insert(n),
            other => panic!("bad log entry {other:?}"),
        };
    }
    by_pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_late_ack_tasks_are_redelivered_and_all_complete() {
    if let Ok(queue) = std::env::var(QUEUE_VAR) {
        let url = std::env::var("CELERITY_TEST_AMQP_URL").expect("the parent passes the URL");
        let log = std::env::var_os(LOG_VAR).expect("the parent passes the log");
        return work_until_killed(&url, &queue, Path::new(&log)).await;
    }
    let Some(url) = support::amqp_url() else {
        return;
    };
    let queue = support::unique_queue();
    let log = std::env::temp_dir().join(format!("{queue}.log"));
    let app = App::from_urls(&url, "rpc://").await.unwrap();
    let options = SendOptions {
        queue: Some(queue.clone()),
        ..Default::default()
    };
    let mut sent = Vec::new();
    for n in 0..TASKS {
        sent.push(
            app.client()
                .send_task::<i64>(&WORK, vec![json!(n)])
                .with_options(options.clone())
                .await
                .unwrap(),
        );
    }

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_killed_workers_late_ack_tasks_are_redelivered_and_all_complete",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(QUEUE_VAR, &queue)
        .env(LOG_VAR, &log)
        .env("CELERITY_TEST_AMQP_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker process starts");
    // Let it complete a few tasks, then kill it while a batch is running.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (started, done) = read_log(&log)
            .get(&child.id())
            .map(|(started, done)| (started.len(), done.len()))
            .unwrap_or_default();
        if done >= 4 && started >= done + 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker process never got going"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    let killed = child.id();
    child.wait().expect("the worker process is reaped");

    let before = read_log(&log);
    let (started, finished) = before.get(&killed).cloned().unwrap_or_default();
    let in_flight: BTreeSet<i64> = started.difference(&finished).copied().collect();
    assert!(!in_flight.is_empty(), "killed with late-ack tasks running");

    let worker = start_worker(&app, &queue, &log).await;
    let mut completed = BTreeSet::new();
    for (n, result) in sent.iter().enumerate() {
        // Counted, not panicked on, so the line below can say how many were lost.
        match result.get(Duration::from_secs(30)).await {
            Ok(value) if value == n as i64 => {
                completed.insert(value);
            }
            Ok(value) => eprintln!("task {n} returned {value}"),
            Err(error) => eprintln!("task {n} was lost: {error}"),
        }
    }
    worker.shutdown().await;

    let after = read_log(&log);
    let rescued = after
        .get(&std::process::id())
        .map(|(_, done)| in_flight.iter().filter(|n| done.contains(n)).count())
        .unwrap_or(0);
    let lost = TASKS as usize - completed.len();
    println!(
        "sent {TASKS}, completed {} (by the killed worker {}, in flight when killed {}, re-run after redelivery {rescued}), lost {lost}",
        completed.len(),
        finished.len(),
        in_flight.len(),
    );
    assert_eq!(lost, 0);
    assert_eq!(
        rescued,
        in_flight.len(),
        "every task in flight was redelivered and run again"
    );
    // A task the killed worker finished but whose ack it never sent runs twice, as with
    // Celery (at least once); such a copy may still wait in the queue, flagged redelivered.
    let raw = support::RawAmqp::connect(&url).await;
    while let Some(left) = raw.get(&queue).await {
        assert!(
            left.delivery.redelivered,
            "only redelivered copies may be left over"
        );
    }
    raw.delete(&queue).await;
    let _ = std::fs::remove_file(&log);
}
