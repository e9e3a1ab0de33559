//! The worker under test: the shop's worker in a process of its own (this program run with
//! the `worker` subcommand), so that its memory is its own to read from `/proc`. It runs
//! the chord row's two tasks too ([`chord_tasks`]).

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use celerity::App;
use celerity::backend::RedisBackend;
use celerity::broker::{AmqpBroker, AmqpOptions, AmqpQueue};

use crate::support::proc_status_kb;

// Beside this file, wherever it is included from (the benchmark, `held_eta`).
#[path = "chord_tasks.rs"]
pub mod chord_tasks;

/// Queues of the benchmark expire on RabbitMQ a minute after their last use, so a run
/// leaves nothing behind (`x-expires`); Redis queues are deleted instead.
const QUEUE_EXPIRES_MS: u64 = 60_000;

/// An app on `broker_url` with results in `backend_url`. On RabbitMQ, `queues` are
/// declared to expire when unused; the worker and the producer must agree on that.
pub async fn connect(
    broker_url: &str,
    backend_url: &str,
    queues: &[String],
) -> celerity::Result<App> {
    if !broker_url.starts_with("amqp") {
        return App::from_urls(broker_url, backend_url).await;
    }
    let options = queues
        .iter()
        .fold(AmqpOptions::default(), |options, queue| {
            options.queue(AmqpQueue::new(queue).argument("x-expires", QUEUE_EXPIRES_MS))
        });
    let broker = AmqpBroker::connect_with(broker_url, options).await?;
    Ok(App::new(broker, RedisBackend::connect(backend_url).await?))
}

/// `bench worker --broker URL --backend URL --queue NAME [--concurrency N]
/// [--max-held-eta N] [--task-events]`: runs the shop's worker on one queue, prints `ready` once consuming,
/// and shuts down gracefully when its standard input closes.
pub fn main(args: &[String]) -> ExitCode {
    let value = |flag: &str| {
        args.windows(2)
            .find(|pair| pair[0] == flag)
            .map(|pair| pair[1].clone())
    };
    let (Some(broker), Some(backend), Some(queue)) =
        (value("--broker"), value("--backend"), value("--queue"))
    else {
        eprintln!(
            "usage: bench worker --broker URL --backend URL --queue NAME [--concurrency N] [--max-held-eta N] [--task-events]"
        );
        return ExitCode::from(2);
    };
    let concurrency = value("--concurrency").and_then(|n| n.parse::<usize>().ok());
    let max_held_eta = value("--max-held-eta").and_then(|n| n.parse::<usize>().ok());
    let task_events = args.iter().any(|arg| arg == "--task-events");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(async move {
        let app = connect(&broker, &backend, std::slice::from_ref(&queue)).await?;
        let mut builder = app.worker();
        celerity_shop::register(&mut builder);
        chord_tasks::register(&mut builder);
        builder.queues([queue]);
        if let Some(concurrency) = concurrency {
            builder.concurrency(concurrency);
        }
        if let Some(cap) = max_held_eta {
            builder.max_held_eta(cap);
        }
        builder.task_events(task_events);
        let worker = builder.start().await?;
        println!("ready");
        let (closed, stdin_closed) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = closed.send(());
        });
        let _ = stdin_closed.await;
        worker.shutdown().await;
        Ok::<_, celerity::Error>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench worker: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What the worker process is told beyond its defaults.
#[derive(Clone, Copy, Default)]
pub struct WorkerLimits {
    /// Tasks run at once.
    pub concurrency: Option<usize>,
    /// Tasks held for their ETA outside the prefetch window.
    pub max_held_eta: Option<usize>,
    /// Whether it sends task events (Celery's `-E`).
    pub task_events: bool,
}

/// A worker process started by [`WorkerProcess::spawn`].
pub struct WorkerProcess {
    child: Child,
    /// Closing it asks the worker to shut down.
    stdin: Option<ChildStdin>,
}

impl WorkerProcess {
    /// Starts this program's `worker` subcommand and waits until it consumes. `prefix`
    /// (e.g. `perf record -g --`) runs it under another program.
    pub fn spawn(
        broker_url: &str,
        backend_url: &str,
        queue: &str,
        limits: WorkerLimits,
        prefix: Option<&str>,
    ) -> Result<WorkerProcess, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut words: Vec<String> = prefix
            .map(|p| p.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        words.push(exe.to_string_lossy().into_owned());
        words.extend(
            [
                "worker",
                "--broker",
                broker_url,
                "--backend",
                backend_url,
                "--queue",
                queue,
            ]
            .map(str::to_owned),
        );
        if let Some(n) = limits.concurrency {
            words.extend(["--concurrency".to_owned(), n.to_string()]);
        }
        if let Some(n) = limits.max_held_eta {
            words.extend(["--max-held-eta".to_owned(), n.to_string()]);
        }
        if limits.task_events {
            words.push("--task-events".to_owned());
        }
        let mut child = Command::new(&words[0])
            .args(&words[1..])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not start the worker: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!("the worker did not start ({status})"));
        }
        let stdin = child.stdin.take();
        Ok(WorkerProcess { child, stdin })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` (resident now) or `VmHWM` (peak resident) of the worker, in kB.
    pub fn memory_kb(&self, field: &str) -> Option<u64> {
        proc_status_kb(self.pid(), field)
    }

    /// Asks the worker to shut down, and kills it if it has not within 30 seconds (a
    /// profiler it runs under may take a while to write its data).
    pub fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the worker did not stop within 30 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of the threads of `pid` so far, in nanoseconds
/// (`/proc/<pid>/task/*/schedstat`); threads that have exited are not counted.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let on_cpu = |thread: std::fs::DirEntry| -> Option<u64> {
        let schedstat = std::fs::read_to_string(thread.path().join("schedstat")).ok()?;
        schedstat.split_whitespace().next()?.parse().ok()
    };
    Some(threads.flatten().filter_map(on_cpu).sum())
}

/// The first process whose command name is `name` (e.g. RabbitMQ's `beam.smp`).
pub fn process_named(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == name).then_some(pid)
        })
}
