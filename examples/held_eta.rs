//! What a Redis worker's memory costs per task it holds for a countdown, and whether a
//! graceful stop hands them all back.
//!
//! ```sh
//! cargo run --release --example held_eta                  # 100,000 tasks, countdown 1 h
//! cargo run --release --example held_eta -- 20000         # another count
//! CELERITY_WORKER_MAX_HELD_ETA=10000 cargo run --release --example held_eta
//! ```
//!
//! It starts the shop's worker in a process of its own on a fresh queue (Redis from
//! `CELERITY_BROKER_URL`, default `redis://127.0.0.1:6379/0`, results there too),
//! publishes `tasks.ping` with `countdown=3600`, waits until the worker has taken all it
//! will, and reports the worker's resident memory (`VmRSS`) before and after, per held
//! task (the benchmark's held-task row measures the same way, through the same code).
//! Then it stops the worker gracefully, checks that every task is back on the queue, and
//! deletes it.

#[allow(dead_code)] // shared with the benchmark, which uses all of it
#[path = "bench/held.rs"]
mod held;
#[allow(dead_code)] // shared with the benchmark, which uses all of it
#[path = "bench/redis_admin.rs"]
mod redis_admin;
#[allow(dead_code)] // each example uses part of what they share
#[path = "support/mod.rs"]
mod support;
#[allow(dead_code)] // shared with the benchmark, which uses all of it
#[path = "bench/worker.rs"]
mod worker;

use std::process::ExitCode;
use std::time::Instant;

use redis_admin::RedisAdmin;
use worker::{WorkerLimits, WorkerProcess};

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return worker::main(&args[1..]);
    }
    let url = std::env::var("CELERITY_BROKER_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let count = args
        .first()
        .and_then(|n| n.replace(['_', ','], "").parse().ok())
        .unwrap_or(100_000);
    match measure(&url, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("held_eta: {error}");
            ExitCode::FAILURE
        }
    }
}

fn measure(url: &str, count: usize) -> Result<(), Failure> {
    let queue = format!("held-eta-{}", uuid::Uuid::new_v4());
    let mut redis = RedisAdmin::connect(url)?;
    // The cap on held tasks, from `CELERITY_WORKER_MAX_HELD_ETA` when set.
    let limits = WorkerLimits {
        concurrency: Some(8),
        max_held_eta: std::env::var("CELERITY_WORKER_MAX_HELD_ETA")
            .ok()
            .and_then(|v| v.parse().ok()),
        ..WorkerLimits::default()
    };
    let worker = WorkerProcess::spawn(url, url, &queue, limits, None)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let runtime = tokio::runtime::Runtime::new()?;
    let held = runtime.block_on(async {
        let app = worker::connect(url, url, std::slice::from_ref(&queue)).await?;
        held::measure(&app, &mut redis, &queue, count, worker.pid()).await
    });
    let stopping = Instant::now();
    worker.stop();
    let back = redis.llen(&queue)?;
    redis.delete_queue(&queue)?;
    let held = held?;
    println!(
        "worker holds {} of {count} tasks; RSS {:.1} MB idle, {:.1} MB holding them: {:.0} bytes per held task",
        held.held,
        held.idle_kb as f64 / 1024.0,
        held.holding_kb as f64 / 1024.0,
        held.bytes_per_task()
    );
    println!(
        "graceful stop in {:.1?}: {back} of {count} tasks back on the queue",
        stopping.elapsed()
    );
    if usize::try_from(back)? != count {
        return Err(format!("{} tasks did not come back", count as i64 - back as i64).into());
    }
    Ok(())
}
