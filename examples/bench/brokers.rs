//! One broker's measurements, Celerity's side: the memory broker in this process, Redis
//! and RabbitMQ with the worker in a process of its own.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity::App;
use celerity_shop::tasks::TasksRegistry;

use crate::chord;
use crate::held;
use crate::measure::{self, BenchResult};
use crate::options::{Broker, Options};
use crate::redis_admin::RedisAdmin;
use crate::report::Figures;
use crate::worker::{self, WorkerLimits, WorkerProcess};

/// Sends and waits for a few round trips so connections and caches are warm.
async fn warm_up(app: &App, queue: &str) -> BenchResult<Vec<String>> {
    let tasks = TasksRegistry::new(app.client());
    let mut ids = Vec::new();
    for _ in 0..20 {
        let sent = tasks.ping().queue(queue).await?;
        sent.get(Duration::from_secs(30)).await?;
        ids.push(sent.id().to_owned());
    }
    Ok(ids)
}

/// The memory broker: producer and worker in this process, as the embedded default runs.
pub async fn bench_memory(options: &Options) -> BenchResult<Figures> {
    let queue = "bench-memory";
    let mut figures = Figures::default();
    let rates = measure::publish_rates(&App::memory(), queue, options.publish_tasks).await?;
    (figures.publish_one, figures.publish_n) = (Some(rates.one.0), Some(rates.one.1));
    (figures.publish_batched, figures.publish_batched_n) =
        (Some(rates.batched.0), Some(rates.batched.1));

    let app = App::memory();
    let mut builder = app.worker();
    celerity_shop::register(&mut builder);
    builder.queues([queue]);
    if let Some(concurrency) = options.concurrency {
        builder.concurrency(concurrency);
    }
    let worker = builder.start().await?;
    warm_up(&app, queue).await?;
    let cpu_before = worker::cpu_ns(std::process::id());
    let e2e = measure::end_to_end(&app, queue, options.tasks, options.publishers).await?;
    figures.worker_cpu_us = per_task_us(
        cpu_before,
        worker::cpu_ns(std::process::id()),
        options.tasks,
    );
    figures.e2e_n = Some(options.tasks as u64);
    figures.e2e_rate = Some(e2e.rate);
    figures.e2e_failures = Some(e2e.failures as u64);
    let latency = measure::latency(&app, queue, options.latency_samples).await?;
    figures.latency_n = Some(options.latency_samples as u64);
    figures.p50_ms = Some(latency.p50);
    figures.p99_ms = Some(latency.p99);
    figures.max_ms = Some(latency.max);
    worker.shutdown().await;
    Ok(figures)
}

/// Redis or RabbitMQ (results in Redis): the worker in a process of its own.
pub async fn bench_remote(options: &Options, broker: Broker) -> BenchResult<Figures> {
    let broker_url = options.broker_url(broker).to_owned();
    let backend_url = options.redis_url.clone();
    let mut admin = RedisAdmin::connect(&backend_url)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let publish_queue = format!("bench-{}-publish-{run_id}", broker.name());
    let queue = format!("bench-{}-e2e-{run_id}", broker.name());
    let mut figures = Figures::default();

    let app = worker::connect(
        &broker_url,
        &backend_url,
        std::slice::from_ref(&publish_queue),
    )
    .await?;
    let rates = measure::publish_rates(&app, &publish_queue, options.publish_tasks).await?;
    (figures.publish_one, figures.publish_n) = (Some(rates.one.0), Some(rates.one.1));
    (figures.publish_batched, figures.publish_batched_n) =
        (Some(rates.batched.0), Some(rates.batched.1));
    if broker == Broker::Redis {
        admin.delete(std::slice::from_ref(&publish_queue))?;
    }
    drop(app);

    let spawn = {
        let (broker_url, backend_url, queue) =
            (broker_url.clone(), backend_url.clone(), queue.clone());
        let (concurrency, prefix) = (options.concurrency, options.worker_prefix.clone());
        let task_events = options.task_events;
        move || {
            let limits = WorkerLimits {
                concurrency,
                task_events,
                ..WorkerLimits::default()
            };
            WorkerProcess::spawn(&broker_url, &backend_url, &queue, limits, prefix.as_deref())
        }
    };
    let worker = tokio::task::spawn_blocking(spawn).await??;
    eprintln!("  worker process {} consuming {queue}", worker.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    figures.idle_rss_kb = worker.memory_kb("VmRSS");

    let app = worker::connect(&broker_url, &backend_url, std::slice::from_ref(&queue)).await?;
    let mut ids = warm_up(&app, &queue).await?;
    let before = admin.command_stats()?;
    let (redis_cpu, worker_cpu) = (admin.cpu_seconds()?, worker::cpu_ns(worker.pid()));
    // RabbitMQ's CPU, when it runs on this machine.
    let rabbitmq = (broker == Broker::Amqp)
        .then(|| worker::process_named("beam.smp"))
        .flatten();
    let rabbitmq_cpu = rabbitmq.and_then(worker::cpu_ns);
    let e2e = measure::end_to_end(&app, &queue, options.tasks, options.publishers).await?;
    let after = admin.command_stats()?;
    figures.redis_cpu_us = Some((admin.cpu_seconds()? - redis_cpu) * 1e6 / options.tasks as f64);
    figures.worker_cpu_us = per_task_us(worker_cpu, worker::cpu_ns(worker.pid()), options.tasks);
    figures.rabbitmq_cpu_us = per_task_us(
        rabbitmq_cpu,
        rabbitmq.and_then(worker::cpu_ns),
        options.tasks,
    );
    figures.peak_rss_kb = worker.memory_kb("VmHWM");
    figures.e2e_n = Some(options.tasks as u64);
    figures.e2e_rate = Some(e2e.rate);
    figures.e2e_failures = Some(e2e.failures as u64);
    let per_task = commands_per_task(&before, &after, e2e.reads, options.tasks);
    figures.redis_commands_per_task = Some(per_task.values().map(|[calls, _]| calls).sum());
    figures.redis_commands = Some(per_task);
    ids.extend(e2e.ids);

    let latency = measure::latency(&app, &queue, options.latency_samples).await?;
    figures.latency_n = Some(options.latency_samples as u64);
    figures.p50_ms = Some(latency.p50);
    figures.p99_ms = Some(latency.p99);
    figures.max_ms = Some(latency.max);
    ids.extend(latency.ids);
    tokio::task::spawn_blocking(move || worker.stop()).await?;

    let mut keys: Vec<String> = ids
        .iter()
        .map(|id| format!("{}{id}", celerity::backend::TASK_META_PREFIX))
        .collect();
    if broker == Broker::Redis {
        keys.extend([
            queue.clone(),
            format!("_kombu.binding.{queue}"),
            format!("_kombu.binding_permanent.{queue}"),
        ]);
    }
    admin.delete(&keys)?;
    Ok(figures)
}

/// Memory per task held for its countdown on Redis: a worker of its own, its cap on held
/// tasks raised to `--held-tasks` so that it holds them all, on a fresh queue that is
/// deleted afterwards (the worker hands the tasks back when it stops).
pub async fn bench_held(options: &Options) -> BenchResult<Figures> {
    let url = options.redis_url.clone();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let queue = format!("bench-redis-held-{run_id}");
    let count = options.held_tasks;
    let spawn = {
        let (url, queue) = (url.clone(), queue.clone());
        let limits = WorkerLimits {
            concurrency: options.concurrency,
            max_held_eta: Some(count),
            ..WorkerLimits::default()
        };
        move || WorkerProcess::spawn(&url, &url, &queue, limits, None)
    };
    let worker = tokio::task::spawn_blocking(spawn).await??;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let app = worker::connect(&url, &url, std::slice::from_ref(&queue)).await?;
    let mut admin = RedisAdmin::connect(&url)?;
    let measured = held::measure(&app, &mut admin, &queue, count, worker.pid()).await;
    tokio::task::spawn_blocking(move || worker.stop()).await?;
    admin.delete_queue(&queue)?;
    let measured = measured?;
    Ok(Figures {
        held_n: Some(measured.held as u64),
        held_bytes_per_task: Some(measured.bytes_per_task()),
        held_rss_kb: Some(measured.holding_kb),
        ..Figures::default()
    })
}

/// A chord of `--chord-tasks` header tasks and one body on Redis: a worker of its own, of
/// `concurrency`, on a fresh queue that is deleted afterwards.
pub async fn bench_chord(options: &Options, concurrency: usize) -> BenchResult<Figures> {
    let url = options.redis_url.clone();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let queue = format!("bench-redis-chord-{run_id}");
    let spawn = {
        let (url, queue) = (url.clone(), queue.clone());
        let limits = WorkerLimits {
            concurrency: Some(concurrency),
            ..WorkerLimits::default()
        };
        let prefix = options.worker_prefix.clone();
        move || WorkerProcess::spawn(&url, &url, &queue, limits, prefix.as_deref())
    };
    let worker = tokio::task::spawn_blocking(spawn).await??;
    let app = worker::connect(&url, &url, std::slice::from_ref(&queue)).await?;
    let mut admin = RedisAdmin::connect(&url)?;
    let measured = chord::measure(&app, &mut admin, &queue, options.chord_tasks).await;
    tokio::task::spawn_blocking(move || worker.stop()).await?;
    admin.delete_queue(&queue)?;
    let measured = measured?;
    Ok(Figures {
        chord_n: Some(options.chord_tasks as u64),
        chord_seconds: Some(measured.seconds),
        chord_rate: Some(options.chord_tasks as f64 / measured.seconds),
        chord_keys_left: Some(measured.keys_left),
        chord_done_markers: Some(measured.done_markers),
        chord_concurrency: Some(concurrency as u64),
        ..Figures::default()
    })
}

/// Microseconds of CPU per task between two readings in nanoseconds.
fn per_task_us(before: Option<u64>, after: Option<u64>, tasks: usize) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 / 1000.0 / tasks as f64)
}

/// Calls and microseconds per task of each command between two `INFO commandstats`,
/// less the `reads` (GET) the benchmark made itself to collect results.
fn commands_per_task(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    reads: u64,
    tasks: usize,
) -> BTreeMap<String, [f64; 2]> {
    after
        .iter()
        .filter_map(|(name, &(calls, usec))| {
            let (calls_before, usec_before) = before.get(name).copied().unwrap_or((0, 0));
            let (mut calls, mut usec) = (
                calls.saturating_sub(calls_before),
                usec.saturating_sub(usec_before),
            );
            if name == "get" && calls > 0 {
                let theirs = calls.saturating_sub(reads);
                usec = usec * theirs / calls;
                calls = theirs;
            }
            let per_task = |n: u64| n as f64 / tasks as f64;
            (calls > 0).then(|| (name.clone(), [per_task(calls), per_task(usec)]))
        })
        .collect()
}
