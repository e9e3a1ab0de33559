//! A soak of a mixed fleet: one Python Celery worker and one Celerity worker on one queue,
//! a producer sending tens of thousands of late-acknowledged tasks, and the Celerity worker
//! killed with SIGKILL at spaced points and started again each time. Every execution of
//! every task is counted, so the soak reports what was sent, completed, run twice and lost.
//!
//! ```sh
//! cargo run --release --example soak                          # Redis, 50,000 tasks, 2 kills
//! cargo run --release --example soak -- --broker amqp         # RabbitMQ, 20,000 tasks
//! cargo run --release --example soak -- --tasks 10000 --kills 3 --task-ms 1
//! ```
//!
//! The task, `soak.record(run, ms)`, sleeps `ms` milliseconds then adds one to its task id
//! in a Redis hash of the side that ran it (`soak-<run>-celerity`, `soak-<run>-python`);
//! it is acknowledged late, so a killed worker's tasks go back to the queue (on Redis once
//! the visibility timeout, 10 s here, has passed; on RabbitMQ when the connection drops).
//! The Celerity worker is this program's `worker` subcommand: the shop's worker command
//! line with `soak.record` registered beside the shop's tasks. The Python worker is
//! `examples/soak/soak_tasks.py` on a prefork pool of 2, run by `CELERITY_PYTHON`, else
//! `./.venv/bin/python`.
//!
//! Brokers: `CELERITY_SOAK_REDIS_URL` (default `redis://127.0.0.1:6379/11`, also where the
//! executions are counted) and `CELERITY_SOAK_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). The Redis database should be the soak's own:
//! a worker with a short visibility timeout restores every old unacknowledged message of
//! the database. The program exits with 1 when a task is lost.

#[allow(dead_code)] // each example uses part of what they share
#[path = "../support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, Singleton, TaskCall, TaskContext, TaskError,
    TaskResult, TaskSpec,
};
use redis::AsyncCommands;
use support::CliWorker;

/// The soak's task, declared as `examples/soak/soak_tasks.py` declares it.
static RECORD: TaskSpec = TaskSpec::new(
    "soak.record",
    &[ArgSpec::new("run", true), ArgSpec::new("ms", true)],
)
.acks_late(true)
.ignore_result(true);

#[derive(serde::Serialize, serde::Deserialize)]
struct RecordArgs {
    run: String,
    ms: u64,
}

/// The connection executions are counted through (`SOAK_COUNTER`, a Redis URL).
struct Counter {
    redis: redis::aio::MultiplexedConnection,
}

impl Singleton for Counter {
    type Deps = ();

    async fn create(_: ()) -> Result<Self, BuildError> {
        let url = std::env::var("SOAK_COUNTER")
            .map_err(|_| BuildError::of::<Self>("SOAK_COUNTER is not set"))?;
        let redis = redis::Client::open(url)
            .map_err(|e| BuildError::of::<Self>(e.to_string()))?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| BuildError::of::<Self>(e.to_string()))?;
        Ok(Counter { redis })
    }
}

/// Runs `soak.record`.
struct Recorder {
    counter: Arc<Counter>,
}

impl Component for Recorder {
    type Deps = Arc<Counter>;

    async fn build(counter: Arc<Counter>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Recorder { counter })
    }
}

impl Invoke<Recorder> for RecordArgs {
    type Output = i64;

    async fn invoke(self, recorder: &Recorder, ctx: &TaskContext) -> TaskResult<i64> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        let mut redis = recorder.counter.redis.clone();
        redis
            .hincr(format!("soak-{}-celerity", self.run), &ctx.id, 1)
            .await
            .map_err(|e| TaskError::new("RedisError", e.to_string()))
    }
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "\
usage: cargo run --release --example soak -- [options]

  --broker redis|amqp       the broker (default redis)
  --tasks N                 tasks to send (default 50000 on Redis, 20000 on RabbitMQ)
  --kills N                 SIGKILLs of the Celerity worker, evenly spaced (default 2)
  --task-ms MS              how long each task sleeps (default 2)
  --visibility-timeout S    seconds, Redis only (default 10)
  --deadline S              how long to wait for the last tasks after the last send
                            (default 120 + 3 × the visibility timeout)

environment: CELERITY_SOAK_REDIS_URL (default redis://127.0.0.1:6379/11),
             CELERITY_SOAK_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f),
             CELERITY_PYTHON (default ./.venv/bin/python)";

struct Options {
    amqp: bool,
    tasks: Option<usize>,
    kills: usize,
    task_ms: u64,
    visibility_timeout: u64,
    deadline: Option<u64>,
    redis_url: String,
    amqp_url: String,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let env =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        let mut options = Options {
            amqp: false,
            tasks: None,
            kills: 2,
            task_ms: 2,
            visibility_timeout: 10,
            deadline: None,
            redis_url: env("CELERITY_SOAK_REDIS_URL", "redis://127.0.0.1:6379/11"),
            amqp_url: env(
                "CELERITY_SOAK_AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
            ),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut number = || -> Result<u64, String> {
                let text = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
                text.replace(['_', ','], "")
                    .parse()
                    .map_err(|_| format!("{flag}: `{text}` is not a whole number"))
            };
            match flag.as_str() {
                "--broker" => match args.next().map(String::as_str) {
                    Some("redis") => options.amqp = false,
                    Some("amqp" | "rabbitmq") => options.amqp = true,
                    other => return Err(format!("--broker: redis or amqp, not {other:?}")),
                },
                "--tasks" => options.tasks = Some(number()? as usize),
                "--kills" => options.kills = number()? as usize,
                "--task-ms" => options.task_ms = number()?,
                "--visibility-timeout" => options.visibility_timeout = number()?.max(1),
                "--deadline" => options.deadline = Some(number()?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(format!("unknown option `{other}`\n\n{USAGE}")),
            }
        }
        Ok(Some(options))
    }

    fn tasks(&self) -> usize {
        self.tasks
            .unwrap_or(if self.amqp { 20_000 } else { 50_000 })
            .max(1)
    }

    fn broker_url(&self) -> &str {
        if self.amqp {
            &self.amqp_url
        } else {
            &self.redis_url
        }
    }

    /// How long to wait for the last tasks once every task is sent.
    fn deadline(&self) -> Duration {
        Duration::from_secs(self.deadline.unwrap_or(120 + 3 * self.visibility_timeout))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return support::run_cli_worker(&args[1..], |worker| {
            celerity_shop::register(worker);
            worker
                .singleton_factory::<Counter>()
                .register::<Recorder, RecordArgs>(&RECORD);
        });
    }
    let options = match Options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(soak(&options)) {
        Ok(report) => {
            print!("{}", report.render(&options));
            if report.lost.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("soak: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What one soak measured.
struct Report {
    sent: usize,
    /// Executions of each task id, by side.
    celerity: HashMap<String, u64>,
    python: HashMap<String, u64>,
    /// Ids sent but never run.
    lost: Vec<String>,
    /// When each kill happened, and how many tasks had been run by then.
    kills: Vec<(Duration, usize)>,
    wall: Duration,
    peak_rss_kb: u64,
}

impl Report {
    fn render(&self, options: &Options) -> String {
        let ids: HashSet<&String> = self.celerity.keys().chain(self.python.keys()).collect();
        let runs = |id: &String| {
            self.celerity.get(id).copied().unwrap_or(0) + self.python.get(id).copied().unwrap_or(0)
        };
        let duplicates = ids.iter().filter(|id| runs(id) > 1).count();
        let extra: u64 = ids.iter().map(|id| runs(id).saturating_sub(1)).sum();
        let total = |side: &HashMap<String, u64>| side.values().sum::<u64>();
        let kills: Vec<String> = self
            .kills
            .iter()
            .map(|(at, done)| format!("{:.1} s ({done} run)", at.as_secs_f64()))
            .collect();
        let mut out = String::new();
        let broker = if options.amqp { "amqp" } else { "redis" };
        out.push_str(&format!(
            "soak on {broker}: {} tasks of {} ms, {} SIGKILLs of the Celerity worker at {}\n\n",
            self.sent,
            options.task_ms,
            self.kills.len(),
            kills.join(", ")
        ));
        out.push_str("| sent | completed | duplicates | lost | run by Celerity | run by Python | wall time | Celerity peak RSS |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        out.push_str(&format!(
            "| {} | {} | {duplicates} ({extra} extra runs) | {} | {} | {} | {:.1} s | {:.1} MB |\n",
            self.sent,
            ids.len(),
            self.lost.len(),
            total(&self.celerity),
            total(&self.python),
            self.wall.as_secs_f64(),
            self.peak_rss_kb as f64 / 1024.0
        ));
        for id in self.lost.iter().take(10) {
            out.push_str(&format!("lost: {id}\n"));
        }
        out
    }
}

async fn soak(options: &Options) -> Result<Report, Failure> {
    let python = support::python_with_celery()
        .ok_or("no Python with Celery (set CELERITY_PYTHON, or create ./.venv)")?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let queue = format!("soak-{run}");
    let n = options.tasks();
    let mut redis = redis::Client::open(options.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let hashes = [format!("soak-{run}-celerity"), format!("soak-{run}-python")];

    let python_worker = PythonWorker::start(&python, options, &queue, &run)?;
    eprintln!("python worker {} consuming {queue}", python_worker.pid());
    let mut args: Vec<String> = [
        "--broker-url",
        options.broker_url(),
        "--result-backend",
        &options.redis_url,
        "-Q",
        &queue,
        "-n",
        &format!("soak-rs-{run}@%h"),
        "-l",
        "warn",
    ]
    .map(str::to_owned)
    .into();
    if !options.amqp {
        args.extend([
            "--visibility-timeout".into(),
            options.visibility_timeout.to_string(),
        ]);
    }
    let env = [("SOAK_COUNTER", options.redis_url.as_str())];
    let spawn = || CliWorker::spawn(&args, &env, Stdio::inherit());
    let mut celerity = spawn()?;
    eprintln!("celerity worker {} consuming {queue}", celerity.pid());

    let started = Instant::now();
    let progress = Arc::new(AtomicUsize::new(0));
    let app = App::from_urls(options.broker_url(), &options.redis_url).await?;
    let producer = tokio::spawn(produce(
        app.clone(),
        queue.clone(),
        RecordArgs {
            run: run.clone(),
            ms: options.task_ms,
        },
        n,
        progress.clone(),
    ));
    let (mut peak_rss_kb, mut kills, mut sent_at) = (0, Vec::new(), None);
    let mut sent: Option<Vec<String>> = None;
    let (mut last_report, mut last_exact) = (Instant::now(), Instant::now());
    let mut producer = Some(producer);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss_kb = peak_rss_kb.max(celerity.memory_kb("VmHWM").unwrap_or(0));
        if !celerity.is_alive() {
            return Err("the Celerity worker exited on its own".into());
        }
        let mut run_so_far = 0;
        for hash in &hashes {
            run_so_far += redis.hlen::<_, usize>(hash).await?;
        }
        progress.store(run_so_far, Ordering::Relaxed);
        if kills.len() < options.kills && run_so_far >= n * (kills.len() + 1) / (options.kills + 1)
        {
            celerity.kill();
            kills.push((started.elapsed(), run_so_far));
            eprintln!(
                "{:6.1} s: SIGKILL to the celerity worker ({run_so_far} tasks run)",
                started.elapsed().as_secs_f64()
            );
            celerity = spawn()?;
            eprintln!("celerity worker {} consuming again", celerity.pid());
        }
        if producer.as_ref().is_some_and(|p| p.is_finished()) {
            sent = Some(producer.take().expect("checked").await??);
            sent_at = Some(Instant::now());
            eprintln!("{:6.1} s: all {n} sent", started.elapsed().as_secs_f64());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "{:6.1} s: {run_so_far} run",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if let (Some(sent), Some(sent_at)) = (&sent, sent_at) {
            // The exact count reads every id: at most once a second.
            if run_so_far >= sent.len() && last_exact.elapsed() > Duration::from_secs(1) {
                last_exact = Instant::now();
                if count(&mut redis, &hashes, sent).await?.2.is_empty() {
                    break;
                }
            }
            if sent_at.elapsed() > options.deadline() {
                eprintln!("deadline passed: counting what ran");
                break;
            }
        }
    }
    let wall = started.elapsed();
    peak_rss_kb = peak_rss_kb.max(celerity.memory_kb("VmHWM").unwrap_or(0));
    let stopped = celerity.stop(Duration::from_secs(30));
    python_worker.stop();
    stopped?;
    app.close().await;
    let sent = sent.expect("the loop ends once all are sent");
    let (celerity_runs, python_runs, lost) = count(&mut redis, &hashes, &sent).await?;
    delete_queue(&python, options, &queue);
    // What kombu's queue deletion leaves: the bindings the workers registered.
    let bindings = [
        format!("_kombu.binding.{queue}"),
        format!("_kombu.binding_permanent.{queue}"),
    ];
    let _: () = redis.del([&hashes[..], &bindings[..]].concat()).await?;
    Ok(Report {
        sent: sent.len(),
        celerity: celerity_runs,
        python: python_runs,
        lost,
        kills,
        wall,
        peak_rss_kb,
    })
}

/// Most tasks sent but not yet run at any time: a backlog, not the whole soak at once, so
/// that the kills happen while the producer is still sending.
const BACKLOG: usize = 5_000;

/// Sends `n` tasks in batches, keeping at most [`BACKLOG`] ahead of `progress`; returns
/// their ids.
async fn produce(
    app: App,
    queue: String,
    args: RecordArgs,
    n: usize,
    progress: Arc<AtomicUsize>,
) -> Result<Vec<String>, Failure> {
    let client = app.client();
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        if ids.len() >= progress.load(Ordering::Relaxed) + BACKLOG {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let size = 500.min(n - ids.len());
        let calls = (0..size).map(|_| {
            let args = RecordArgs {
                run: args.run.clone(),
                ms: args.ms,
            };
            TaskCall::<_, i64>::new(&client, &RECORD, args).queue(queue.as_str())
        });
        let sent = client.send_batch(calls).await?;
        ids.extend(sent.iter().map(|r| r.id().to_owned()));
    }
    Ok(ids)
}

type Runs = HashMap<String, u64>;

/// Executions by Celerity and by Python of each task id, and the sent ids that never ran.
async fn count(
    redis: &mut redis::aio::MultiplexedConnection,
    hashes: &[String; 2],
    sent: &[String],
) -> Result<(Runs, Runs, Vec<String>), Failure> {
    let celerity: Runs = redis.hgetall(&hashes[0]).await?;
    let python: Runs = redis.hgetall(&hashes[1]).await?;
    let lost = sent
        .iter()
        .filter(|id| !celerity.contains_key(*id) && !python.contains_key(*id))
        .cloned()
        .collect();
    Ok((celerity, python, lost))
}

/// The Python half of the fleet: `celery worker` on `soak_tasks.py`, prefork pool of 2,
/// in a process group of its own so its pool processes stop with it.
struct PythonWorker {
    child: Child,
}

fn soak_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/soak")
}

fn python_command(python: &Path, options: &Options) -> Command {
    let mut command = Command::new(python);
    command
        .current_dir(soak_dir())
        .env("SOAK_BROKER", options.broker_url())
        .env("SOAK_COUNTER", &options.redis_url)
        .env(
            "SOAK_VISIBILITY_TIMEOUT",
            options.visibility_timeout.to_string(),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Celery warns at length when its worker runs as root, as it does in containers.
        .env(
            "PYTHONWARNINGS",
            "ignore:You're running the worker with superuser privileges",
        );
    command
}

impl PythonWorker {
    /// Starts the worker and waits (up to a minute) until it logs that it is ready.
    fn start(python: &Path, options: &Options, queue: &str, run: &str) -> Result<Self, Failure> {
        let mut child = python_command(python, options)
            .args(["-m", "celery", "-A", "soak_tasks", "worker"])
            .args(["-P", "prefork", "-c", "2", "-Q", queue])
            .args(["-n", &format!("soak-py-{run}@%h")])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .args(["-l", "info"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (ready, is_ready) = std::sync::mpsc::channel();
        // Reads its log: says when it is ready, passes warnings and errors on.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.ends_with(" ready.") {
                    let _ = ready.send(());
                } else if !line.contains(": INFO/") {
                    eprintln!("[python] {line}");
                }
            }
        });
        let worker = PythonWorker { child };
        is_ready
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "the Python worker was not ready within a minute")?;
        Ok(worker)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to the group (Celery's warm shutdown), SIGKILL after 30 s.
    fn stop(mut self) {
        let group = format!("-{}", self.pid());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Drop for PythonWorker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

/// Deletes the queue (and on Redis its binding) through kombu.
fn delete_queue(python: &Path, options: &Options, queue: &str) {
    let deleted = python_command(python, options)
        .args(["soak_tasks.py", "delete-queue", queue])
        .status();
    if !deleted.is_ok_and(|s| s.success()) {
        eprintln!("could not delete the queue {queue}");
    }
}
