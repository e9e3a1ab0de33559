//! What a Redis worker's memory costs per task it holds for a countdown, and whether a
//! graceful stop hands them all back.
//!
//! ```sh
//! cargo run --release --example held_eta                  # 100,000 tasks, countdown 1 h
//! cargo run --release --example held_eta -- 20000         # another count
//! CELERITY_WORKER_MAX_HELD_ETA=10000 cargo run --release --example held_eta
//! ```
//!
//! It starts a worker in a process of its own on a fresh queue (Redis from
//! `CELERITY_BROKER_URL`, default `redis://127.0.0.1:6379/0`), publishes the tasks with
//! `countdown=3600`, waits until the worker has taken all it will take, and reports the
//! worker's resident memory (`VmRSS`) before and after, per held task. Then it stops the
//! worker with SIGTERM, checks that every task is back on the queue, and deletes it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use celerity::backend::MemoryBackend;
use celerity::broker::RedisBroker;
use celerity::{App, ArgSpec, BuildError, Component, Invoke, TaskCall, TaskContext, TaskResult};
use celerity::{TaskSpec, WorkerBuilder};

static NOOP: TaskSpec = TaskSpec::new("held_eta.noop", &[ArgSpec::new("n", true)]);

#[derive(serde::Serialize, serde::Deserialize)]
struct NoopArgs {
    n: i64,
}

struct Noop;

impl Component for Noop {
    type Deps = ();
    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Noop)
    }
}

impl Invoke<Noop> for NoopArgs {
    type Output = i64;
    async fn invoke(self, _c: &Noop, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.n)
    }
}

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = std::env::var("CELERITY_BROKER_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let outcome = match args.first().map(String::as_str) {
        Some("worker") => run_worker(&url, &args[1]),
        count => measure(
            &url,
            count.map_or(Ok(100_000), str::parse).unwrap_or(100_000),
        ),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("held_eta: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The worker process: holds what it is sent until SIGTERM.
fn run_worker(url: &str, queue: &str) -> Result<(), Failure> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let app = App::new(RedisBroker::connect(url).await?, MemoryBackend::new());
        let mut builder = WorkerBuilder::new(app.client());
        builder
            .register::<Noop, NoopArgs>(&NOOP)
            .queues([queue])
            .concurrency(8);
        configure(&mut builder);
        builder.start().await?.run_until_signal().await?;
        Ok(())
    })
}

/// The cap on held tasks, from `CELERITY_WORKER_MAX_HELD_ETA` when set.
fn configure(builder: &mut WorkerBuilder) {
    if let Some(cap) = std::env::var("CELERITY_WORKER_MAX_HELD_ETA")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.max_held_eta(cap);
    }
}

fn measure(url: &str, count: usize) -> Result<(), Failure> {
    let queue = format!("held-eta-{}", uuid::Uuid::new_v4());
    let mut redis = Resp::connect(url)?;
    let mut worker = Command::new(std::env::current_exe()?)
        .args(["worker", &queue])
        .spawn()?;
    let result = measure_with(url, count, &queue, &mut redis, &mut worker);
    if result.is_err() {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    redis.command(&["DEL", &queue])?;
    result
}

fn measure_with(
    url: &str,
    count: usize,
    queue: &str,
    redis: &mut Resp,
    worker: &mut Child,
) -> Result<(), Failure> {
    std::thread::sleep(Duration::from_secs(2));
    let idle_kb = rss_kb(worker.id()).ok_or("the worker is not running")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    runtime.block_on(async {
        let app = App::new(RedisBroker::connect(url).await?, MemoryBackend::new());
        let client = app.client();
        for first in (0..count).step_by(10_000) {
            let calls = (first..count.min(first + 10_000)).map(|n| {
                TaskCall::<_, i64>::new(&client, &NOOP, NoopArgs { n: n as i64 })
                    .queue(queue)
                    .countdown(Duration::from_secs(3600))
            });
            client.send_batch(calls).await?;
        }
        Ok::<_, Failure>(())
    })?;
    println!(
        "published {count} tasks with countdown=3600 in {:.1?}",
        started.elapsed()
    );
    // Taken all it will: the queue is empty, or stays the same for two seconds.
    let mut left = redis.command(&["LLEN", queue])?;
    let mut still_since = Instant::now();
    while left > 0 && still_since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        let now = redis.command(&["LLEN", queue])?;
        if now != left {
            still_since = Instant::now();
        }
        left = now;
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = count - usize::try_from(left)?;
    let rss = rss_kb(worker.id()).ok_or("the worker is not running")?;
    let grown = rss.saturating_sub(idle_kb) * 1024;
    println!(
        "worker holds {held} tasks ({left} left on the queue) after {:.1?}",
        started.elapsed()
    );
    println!(
        "worker RSS: {:.1} MB idle, {:.1} MB holding them: {} bytes per held task",
        idle_kb as f64 / 1024.0,
        rss as f64 / 1024.0,
        grown / held.max(1) as u64
    );
    let stopping = Instant::now();
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()?;
    worker.wait()?;
    let back = redis.command(&["LLEN", queue])?;
    println!(
        "graceful stop in {:.1?}: {back} of {count} tasks back on the queue",
        stopping.elapsed()
    );
    if usize::try_from(back)? != count {
        return Err(format!("{} tasks did not come back", count as i64 - back).into());
    }
    Ok(())
}

/// `VmRSS` of `pid`, in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Just enough RESP for `LLEN` and `DEL`: commands whose reply is an integer.
struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    fn connect(url: &str) -> Result<Resp, Failure> {
        let rest = url.strip_prefix("redis://").ok_or("only redis:// URLs")?;
        let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
        let (address, db) = rest.split_once('/').unwrap_or((rest, "0"));
        let address = if address.contains(':') {
            address.to_owned()
        } else {
            format!("{address}:6379")
        };
        let writer = TcpStream::connect(address)?;
        let mut resp = Resp {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        };
        let db = db
            .split('?')
            .next()
            .filter(|d| !d.is_empty())
            .unwrap_or("0");
        resp.send(&["SELECT", db])?;
        let mut line = String::new();
        resp.reader.read_line(&mut line)?;
        Ok(resp)
    }

    fn send(&mut self, parts: &[&str]) -> Result<(), Failure> {
        let mut out = format!("*{}\r\n", parts.len());
        for part in parts {
            out.push_str(&format!("${}\r\n{part}\r\n", part.len()));
        }
        self.writer.write_all(out.as_bytes())?;
        Ok(())
    }

    fn command(&mut self, parts: &[&str]) -> Result<i64, Failure> {
        self.send(parts)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        match line.strip_prefix(':') {
            Some(number) => Ok(number.trim().parse()?),
            None => {
                let mut rest = Vec::new();
                let _ = self.reader.get_mut().set_nonblocking(true);
                let _ = self.reader.read_to_end(&mut rest);
                Err(format!("unexpected reply {line:?}").into())
            }
        }
    }
}
