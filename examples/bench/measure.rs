//! The measurements, through the generated client as an application would send tasks:
//! publish rates, end-to-end throughput and round-trip latency of `tasks.ping`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use celerity::App;
use celerity::backend::ResultBackend;
use celerity_shop::tasks::TasksRegistry;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Messages per `send_batch` call.
pub const BATCH: usize = 1000;

/// How many result reads run at once while collecting results.
const READERS: usize = 64;

/// How long each publish-rate loop may run: brokers that confirm every message to disk
/// one at a time (RabbitMQ) would otherwise take minutes.
const PUBLISH_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Publish rates into a queue nothing consumes.
pub struct PublishRates {
    /// Calls awaited one after another: tasks/s, and how many were sent.
    pub one: (f64, u64),
    /// Batches of [`BATCH`] from `Client::send_batch`: tasks/s, and how many were sent.
    pub batched: (f64, u64),
}

/// Publish rates into `queue`, which nothing consumes: up to `n` calls awaited one after
/// another, then up to `n` more in batches of [`BATCH`], each for at most
/// [`PUBLISH_TIME_LIMIT`].
pub async fn publish_rates(app: &App, queue: &str, n: usize) -> BenchResult<PublishRates> {
    let tasks = TasksRegistry::new(app.client());
    // Connects and declares the queue before the clock starts.
    tasks.ping().queue(queue).await?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < n && started.elapsed() < PUBLISH_TIME_LIMIT {
        tasks.ping().queue(queue).await?;
        sent += 1;
    }
    let one = (sent as f64 / started.elapsed().as_secs_f64(), sent as u64);
    eprintln!(
        "  publish one at a time: {:>10.0} tasks/s ({sent} sent)",
        one.0
    );
    let client = app.client();
    let started = Instant::now();
    let mut sent = 0;
    while sent < n && started.elapsed() < PUBLISH_TIME_LIMIT {
        let size = BATCH.min(n - sent);
        client
            .send_batch((0..size).map(|_| tasks.ping().queue(queue)))
            .await?;
        sent += size;
    }
    let batched = (sent as f64 / started.elapsed().as_secs_f64(), sent as u64);
    eprintln!(
        "  publish in batches:    {:>10.0} tasks/s ({sent} sent)",
        batched.0
    );
    Ok(PublishRates { one, batched })
}

/// What an end-to-end run measured.
pub struct EndToEnd {
    /// Tasks per second from the first publish to the latest `date_done` stored.
    pub rate: f64,
    /// Results that were not SUCCESS `"pong"`.
    pub failures: usize,
    /// The task ids, for cleaning up.
    pub ids: Vec<String>,
    /// Result reads this process made while waiting (to tell them from the worker's).
    pub reads: u64,
}

/// Publishes `n` pings to `queue` in batches from `publishers` concurrent senders, then
/// reads every result back. The clock runs from the first publish to the latest
/// `date_done` the worker stored, so the way results are collected does not count.
pub async fn end_to_end(
    app: &App,
    queue: &str,
    n: usize,
    publishers: usize,
) -> BenchResult<EndToEnd> {
    let publishers = publishers.clamp(1, n.max(1));
    let started_at = Utc::now();
    let started = Instant::now();
    let mut senders = JoinSet::new();
    for p in 0..publishers {
        let share = n / publishers + usize::from(p < n % publishers);
        let client = app.client();
        let queue = queue.to_owned();
        senders.spawn(async move {
            let tasks = TasksRegistry::new(client.clone());
            let mut ids = Vec::with_capacity(share);
            while ids.len() < share {
                let size = BATCH.min(share - ids.len());
                let sent = client
                    .send_batch((0..size).map(|_| tasks.ping().queue(queue.as_str())))
                    .await?;
                ids.extend(sent.iter().map(|r| r.id().to_owned()));
            }
            Ok::<_, celerity::Error>(ids)
        });
    }
    let mut shares = Vec::new();
    while let Some(share) = senders.join_next().await {
        shares.push(share??);
    }
    eprintln!(
        "  end to end: {n} published in {:.2} s; waiting for results",
        started.elapsed().as_secs_f64()
    );
    let backend = app.backend().clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    // The last task of each sender is among the last to run: wait for those first, then
    // read every result once.
    let mut reads = 0;
    let mut progress = Instant::now();
    for last in shares.iter().filter_map(|share| share.last()) {
        loop {
            reads += 1;
            if backend
                .get(last)
                .await?
                .is_some_and(|m| m.status.is_ready())
            {
                break;
            }
            if Instant::now() > deadline {
                return Err("no result within 10 minutes".into());
            }
            if progress.elapsed() > Duration::from_secs(5) {
                eprintln!("  ... {:.0} s", started.elapsed().as_secs_f64());
                progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let ids: Vec<String> = shares.into_iter().flatten().collect();
    let collected = collect(&backend, &ids, deadline).await?;
    reads += ids.len() as u64 + collected.extra_reads;
    let observed = started.elapsed().as_secs_f64();
    let elapsed = (collected.latest - started_at).to_std().unwrap_or_default();
    if elapsed.is_zero() {
        return Err("the last result was stored no later than the first publish".into());
    }
    // Only tasks that completed with their result count towards the rate.
    let rate = n.saturating_sub(collected.failures) as f64 / elapsed.as_secs_f64();
    eprintln!(
        "  end to end: {rate:>10.0} tasks/s ({:.2} s to the last result, all seen after {observed:.2} s, {} failures)",
        elapsed.as_secs_f64(),
        collected.failures
    );
    Ok(EndToEnd {
        rate,
        failures: collected.failures,
        ids,
        reads,
    })
}

struct Collected {
    latest: DateTime<Utc>,
    failures: usize,
    /// Reads beyond one per id (results not ready on the first read).
    extra_reads: u64,
}

/// Reads the result of every id, `READERS` at a time, until all are ready.
async fn collect(
    backend: &Arc<dyn ResultBackend>,
    ids: &[String],
    deadline: Instant,
) -> BenchResult<Collected> {
    let mut pending: Vec<String> = ids.to_vec();
    let mut collected = Collected {
        latest: DateTime::<Utc>::MIN_UTC,
        failures: 0,
        extra_reads: 0,
    };
    let mut first = true;
    while !pending.is_empty() {
        if !first {
            collected.extra_reads += pending.len() as u64;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first = false;
        if Instant::now() > deadline {
            return Err(format!("{} results missing after 10 minutes", pending.len()).into());
        }
        let mut readers = JoinSet::new();
        let chunk = pending.len().div_ceil(READERS).max(1);
        for ids in pending.chunks(chunk).map(<[String]>::to_vec) {
            let backend = backend.clone();
            readers.spawn(async move {
                let mut not_ready = Vec::new();
                let mut latest = DateTime::<Utc>::MIN_UTC;
                let mut failures = 0;
                for id in ids {
                    match backend.get(&id).await? {
                        Some(meta) if meta.status.is_ready() => {
                            let done = meta
                                .date_done
                                .as_deref()
                                .and_then(celerity::protocol::parse_celery_time);
                            // A result without its time is not measured: a failure.
                            match done {
                                Some(done)
                                    if meta.status == celerity::TaskState::Success
                                        && meta.result == "pong" =>
                                {
                                    latest = latest.max(done);
                                }
                                _ => failures += 1,
                            }
                        }
                        _ => not_ready.push(id),
                    }
                }
                Ok::<_, celerity::Error>((not_ready, latest, failures))
            });
        }
        pending.clear();
        while let Some(read) = readers.join_next().await {
            let (not_ready, latest, failures) = read??;
            pending.extend(not_ready);
            collected.latest = collected.latest.max(latest);
            collected.failures += failures;
        }
    }
    Ok(collected)
}

/// Round-trip latency percentiles, in milliseconds.
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// The task ids, for cleaning up.
    pub ids: Vec<String>,
}

/// `samples` sequential round trips (send, then the typed result), after a warm-up.
pub async fn latency(app: &App, queue: &str, samples: usize) -> BenchResult<Latency> {
    const WARMUP: usize = 50;
    let tasks = TasksRegistry::new(app.client());
    let mut times = Vec::with_capacity(samples);
    let mut ids = Vec::with_capacity(samples + WARMUP);
    for i in 0..WARMUP + samples {
        let started = Instant::now();
        let sent = tasks.ping().queue(queue).await?;
        let pong = sent.get(Duration::from_secs(30)).await?;
        let elapsed = started.elapsed();
        if pong != "pong" {
            return Err(format!("tasks.ping returned {pong:?}").into());
        }
        ids.push(sent.id().to_owned());
        if i >= WARMUP {
            times.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    // Nearest rank: the smallest sample with at least a fraction `q` of them at or below.
    let at = |q: f64| {
        let rank = (times.len() as f64 * q).ceil() as usize;
        times[rank.clamp(1, times.len()) - 1]
    };
    let latency = Latency {
        p50: at(0.5),
        p99: at(0.99),
        max: times[times.len() - 1],
        ids,
    };
    eprintln!(
        "  latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({samples} round trips)",
        latency.p50, latency.p99, latency.max
    );
    Ok(latency)
}
