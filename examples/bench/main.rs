//! Benchmarks Celerity beside Python Celery, in one command:
//!
//! ```sh
//! cargo run --release --example bench                  # every reachable broker, with Python
//! cargo run --release --example bench -- --help        # flags
//! ```
//!
//! For the memory, Redis and RabbitMQ brokers it measures the publish rate from one client
//! (one call at a time, and in batches), end-to-end throughput of `tasks.ping` with results
//! stored (from the first publish to the last stored result), the round-trip latency of
//! sequential calls, the worker's memory and the Redis commands each task costs; on Redis,
//! the worker's memory per task held for a one-hour countdown (100,000 tasks, the cap on
//! held tasks raised to match; `--no-held` skips it) and the time a chord of 10,000 header
//! tasks takes to its body's result, with the chord keys it leaves behind (`--chord-tasks`,
//! `--no-chord`); then the generator's time for a 1,000-task schema. With a Python that
//! has Celery (`CELERITY_PYTHON`, else `./.venv/bin/python`), `bench/celery_bench.py` runs
//! the same workload on a prefork worker of concurrency 2 (the chord: of the Celerity
//! worker's concurrency). It prints a markdown table on stdout, progress on stderr.
//! Benchmarks report figures; they assert nothing about them.

mod brokers;
mod chord;
mod generator;
mod held;
mod measure;
mod options;
mod python;
mod redis_admin;
mod report;
#[allow(dead_code)] // each example uses part of what they share
#[path = "../support/mod.rs"]
mod support;
mod worker;

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use celerity::broker::{AmqpBroker, AmqpOptions};

use measure::BenchResult;
use options::{Broker, Options};
use redis_admin::RedisAdmin;
use report::Figures;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return worker::main(&args[1..]);
    }
    let options = match Options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn reachable(options: &Options, broker: Broker) -> Result<(), String> {
    match broker {
        Broker::Memory => Ok(()),
        Broker::Redis => RedisAdmin::connect(&options.redis_url)?.version().map(drop),
        Broker::Amqp => {
            // The RabbitMQ rows keep results in Redis.
            RedisAdmin::connect(&options.redis_url)?.version()?;
            let quick = AmqpOptions::default().connect_timeout(Duration::from_secs(3));
            let broker = AmqpBroker::connect_with(&options.amqp_url, quick)
                .await
                .map_err(|e| e.to_string())?;
            broker.close().await;
            Ok(())
        }
    }
}

async fn run(options: Options) -> BenchResult<()> {
    let load_at_start = report::load_average();
    let started_at = chrono::Utc::now();
    let mut brokers = Vec::new();
    for broker in
        options
            .brokers
            .clone()
            .unwrap_or(vec![Broker::Memory, Broker::Redis, Broker::Amqp])
    {
        match reachable(&options, broker).await {
            Ok(()) => brokers.push(broker),
            Err(error) if options.brokers.is_none() => {
                eprintln!("skipping {}: {error}", broker.name());
            }
            Err(error) => return Err(format!("{}: {error}", broker.name()).into()),
        }
    }
    let python = match options.python {
        Some(false) => None,
        Some(true) => Some(
            support::python_with_celery()
                .ok_or("--python: no Python with Celery (set CELERITY_PYTHON)")?,
        ),
        None => support::python_with_celery(),
    };
    if python.is_none() && options.python.is_none() {
        eprintln!(
            "no Python with Celery found (CELERITY_PYTHON, ./.venv/bin/python): Celerity only"
        );
    }

    let mut results = Vec::new();
    for broker in brokers {
        eprintln!("== {}: Celerity", broker.name());
        let ours = match broker {
            Broker::Memory => brokers::bench_memory(&options).await?,
            _ => brokers::bench_remote(&options, broker).await?,
        };
        let mut theirs = match (&python, broker) {
            (Some(python), Broker::Redis | Broker::Amqp) => {
                eprintln!("== {}: Python Celery", broker.name());
                python_side(python.clone(), &options, broker).await
            }
            _ => None,
        };
        let mut ours = ours;
        if broker == Broker::Redis && options.held {
            eprintln!("== redis: tasks held for their countdown, Celerity");
            let held = brokers::bench_held(&options).await?;
            (ours.held_n, ours.held_bytes_per_task, ours.held_rss_kb) =
                (held.held_n, held.held_bytes_per_task, held.held_rss_kb);
            if let Some(python) = &python {
                eprintln!("== redis: tasks held for their countdown, Python Celery");
                if let Some(held) = python_held(python.clone(), &options).await {
                    let theirs = theirs.get_or_insert_with(Default::default);
                    (
                        theirs.held_n,
                        theirs.held_bytes_per_task,
                        theirs.held_rss_kb,
                    ) = (held.held_n, held.held_bytes_per_task, held.held_rss_kb);
                }
            }
        }
        if broker == Broker::Redis && options.chord {
            let concurrency = worker_concurrency(&options);
            eprintln!(
                "== redis: a chord of {} tasks, Celerity",
                options.chord_tasks
            );
            ours.take_chord(brokers::bench_chord(&options, concurrency).await?);
            if let Some(python) = &python {
                eprintln!(
                    "== redis: a chord of {} tasks, Python Celery",
                    options.chord_tasks
                );
                if let Some(chord) = python_chord(python.clone(), &options, concurrency).await {
                    theirs
                        .get_or_insert_with(Default::default)
                        .take_chord(chord);
                }
            }
        }
        results.push((broker, ours, theirs));
    }
    let generator = if options.generator {
        eprintln!("== generator");
        let (best, lines) = generator::time_generator(3)?;
        eprintln!(
            "  1,000-task schema: {:.0} ms, {lines} lines",
            best.as_secs_f64() * 1000.0
        );
        Some((best, lines))
    } else {
        None
    };

    print!(
        "{}",
        render(&options, started_at, &load_at_start, &results, generator)?
    );
    Ok(())
}

async fn python_side(python: PathBuf, options: &Options, broker: Broker) -> Option<Figures> {
    let (broker_url, backend_url) = (
        options.broker_url(broker).to_owned(),
        options.redis_url.clone(),
    );
    let (tasks, publish, samples) = (
        options.python_tasks,
        options.python_publish_tasks,
        options.python_latency_samples,
    );
    python_figures(move || python::run(&python, &broker_url, &backend_url, tasks, publish, samples))
        .await
}

/// The Python side of the held-task row, or `None` (said why) when it failed.
async fn python_held(python: PathBuf, options: &Options) -> Option<Figures> {
    let url = options.redis_url.clone();
    let tasks = options.python_held_tasks;
    python_figures(move || python::run_held(&python, &url, &url, tasks)).await
}

/// The Python side of the chord row, on a prefork worker of `concurrency` processes, or
/// `None` (said why) when it failed.
async fn python_chord(python: PathBuf, options: &Options, concurrency: usize) -> Option<Figures> {
    let url = options.redis_url.clone();
    let tasks = options.chord_tasks;
    python_figures(move || python::run_chord(&python, &url, tasks, concurrency)).await
}

/// The Celerity worker's concurrency: `--concurrency`, else the worker's own default (read
/// from it rather than worked out again here).
fn worker_concurrency(options: &Options) -> usize {
    options
        .concurrency
        .unwrap_or_else(|| celerity::App::memory().worker().settings().concurrency)
}

/// Runs a Python measurement off the runtime: its figures, or `None` (said why) when it
/// failed.
async fn python_figures(
    run: impl FnOnce() -> Result<Figures, String> + Send + 'static,
) -> Option<Figures> {
    let outcome = tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| e.to_string())
        .and_then(|figures| figures);
    outcome
        .inspect_err(|error| eprintln!("  Python Celery: {error}"))
        .ok()
}

type Results = [(Broker, Figures, Option<Figures>)];

fn render(
    options: &Options,
    started_at: chrono::DateTime<chrono::Utc>,
    load_at_start: &str,
    results: &Results,
    generator: Option<(Duration, usize)>,
) -> BenchResult<String> {
    let mut out = String::new();
    let redis_version = RedisAdmin::connect(&options.redis_url)
        .and_then(|mut admin| admin.version())
        .unwrap_or_else(|_| "?".into());
    let python = results.iter().find_map(|(_, _, theirs)| theirs.as_ref());
    let concurrency = match options.concurrency {
        Some(n) => n.to_string(),
        None => format!("{} (its default)", worker_concurrency(options)),
    };
    writeln!(
        out,
        "Measured {}{} on {}; load average {load_at_start} at the start, {} at the end. \
         Redis {redis_version}; Celerity worker concurrency {concurrency}, task events {}; {}.\n",
        started_at.format("%Y-%m-%d %H:%M UTC"),
        report::revision().map_or_else(String::new, |r| format!(" at {r}")),
        report::machine(),
        report::load_average(),
        if options.task_events { "on" } else { "off" },
        python.map_or("Python Celery not run".to_owned(), |p| format!(
            "Python {}, Celery {}, prefork worker with concurrency {}",
            p.python.as_deref().unwrap_or("?"),
            p.celery.as_deref().unwrap_or("?"),
            p.worker_concurrency
                .map_or_else(|| "?".to_owned(), |n| n.to_string())
        )),
    )?;
    report::header(&mut out);
    for (broker, ours, theirs) in results {
        report::broker_rows(broker.name(), ours, theirs.as_ref(), &mut out);
    }
    if let Some((best, lines)) = generator {
        report::generator_row(best.as_secs_f64() * 1000.0, lines, &mut out);
    }
    out.push_str(
        "\n¹ Python Celery has no batch publish: its figure is the same `apply_async` loop \
         holding one producer, so this row's ratio compares batching with none. The end-to-end \
         rows differ in workload too: Celerity publishes in batches from several senders and \
         runs its own default concurrency; Python runs one sender, 10,000 tasks by default and \
         concurrency 2.\n\
         ² The Celerity worker runs in a process of its own (VmRSS before the run, VmHWM \
         after it); Python's is the prefork parent and its two children added up.\n\
         ³ Server-wide `INFO commandstats` over the end-to-end run, less the benchmark's own \
         result reads; commands that Lua scripts run count too. Below, each command's calls \
         per task and the Redis time they took per task (a script's time includes its \
         commands'). The `get` time of those reads is not reported apart by Redis: it is \
         taken out in proportion to calls, an estimate.\n\
         ⁴ CPU time over the end-to-end run divided by the tasks: the worker's threads \
         (`/proc/<pid>/task/*/schedstat`; Python: the prefork parent and children), and \
         the Redis server's (`INFO cpu`, server-wide, with the benchmark's own result reads: \
         one GET per task from Celerity's collector, one MGET per 1,000 from Python's, so \
         this row overstates Celerity's Redis time against Python's) \
         and RabbitMQ's (its `beam.smp` process, when it runs on this machine). \
         On the memory broker producer, \
         worker and result reads share one process.\n\
         ⁵ `tasks.ping` sent with a one-hour countdown to a fresh queue of a fresh worker: \
         its `VmRSS` once it has taken every task (the queue empty or unchanged for 2 s) less \
         its `VmRSS` before, per task held. The Celerity worker's cap on held tasks \
         (`--max-held-eta`, 50,000 by default) is raised to the count so that it holds them \
         all; Python's prefork worker holds ETA tasks in its parent process (parent and \
         children added up). The queue is deleted afterwards.\n\
         ⁶ One chord of N `bench.add(i, i)` header tasks and a `bench.tsum` body, sent by \
         each side's own client (Celerity's typed canvas; Python's \
         `chord(add.s(i, i) …)(tsum.s())`) to a worker of the Celerity worker's concurrency \
         (Python: a prefork worker with as many processes), broker and results on Redis, \
         after a warm-up chord of ten. The time runs from building the chord to the body's \
         `date_done`; tasks per second is N over it. The chord's \
         `celery-taskset-meta-<gid>*` keys are counted once the body's result is stored \
         (waiting up to 5 s for the cleanup that follows sending the body): Celery 5.7 \
         deletes `.s .t .j .d` and keeps `.c` as a `done` marker for 300 s.",
    );
    for (_, ours, theirs) in results {
        if let Some(n) = ours.chord_concurrency {
            let python = theirs.as_ref().and_then(|t| t.chord_concurrency);
            write!(out, " Concurrency: Celerity {n}")?;
            if let Some(processes) = python {
                write!(out, ", Python {processes} processes")?;
            }
            out.push('.');
        }
    }
    for (broker, ours, theirs) in results {
        for (side, figures) in [("Celerity", Some(ours)), ("Python", theirs.as_ref())] {
            if let Some(commands) = figures.and_then(|f| f.redis_commands.as_ref()) {
                let listed: Vec<String> = commands
                    .iter()
                    .map(|(name, [calls, us])| format!("{name} {calls:.2} ({us:.1} µs)"))
                    .collect();
                write!(
                    out,
                    "\n  {side} on {}: {}",
                    broker.name(),
                    listed.join(", ")
                )?;
            }
        }
    }
    out.push('\n');
    for (broker, ours, theirs) in results {
        for (side, figures) in [("Celerity", Some(ours)), ("Python Celery", theirs.as_ref())] {
            if let Some(failures) = figures.and_then(|f| f.e2e_failures).filter(|&f| f > 0) {
                writeln!(
                    out,
                    "\n{side} on {}: {failures} tasks did not return \"pong\"",
                    broker.name()
                )?;
            }
        }
    }
    Ok(out)
}
