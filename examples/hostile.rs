//! Hostile and broken messages sent raw to a running worker, one kind at a time: after
//! each, the worker must have recorded the expected outcome, still be alive, and still run
//! a good task. Prints a table of what each kind did: the outcome stored for its task id,
//! the longest log line the worker wrote for it, and the worker's memory before and after.
//!
//! ```sh
//! cargo run --release --example hostile                  # Redis
//! cargo run --release --example hostile -- --broker amqp # RabbitMQ (results in Redis)
//! ```
//!
//! The worker is the shop's worker command line (this program's `worker` subcommand) in a
//! process of its own, with its default limits (16 MiB messages). Brokers:
//! `CELERITY_HOSTILE_REDIS_URL` (default `redis://127.0.0.1:6379/12`, also the result
//! backend) and `CELERITY_HOSTILE_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! Exits with 1 when an outcome is not the one expected, or the worker stops answering.

#[path = "../runtime/tests/support/celery_message.rs"]
mod celery_message;
#[allow(dead_code)] // each example uses part of what they share
#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celerity::App;
use celerity::protocol::{RawMessage, TaskState};
use celerity_shop::tasks::TasksRegistry;
use celery_message::message;
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::CliWorker;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// What a kind of message must end as.
#[derive(Clone, Copy, PartialEq)]
enum Expected {
    /// Logged and rejected; nothing stored (it names no task, or no id can be read).
    NothingStored,
    /// A FAILURE of this exception type stored for its id.
    Failure(&'static str),
}

/// How a message reaches the queue.
enum Payload {
    /// Published through the broker, which wraps it as any producer's message.
    Message(RawMessage),
    /// Pushed onto the Redis list as it is, not a kombu envelope made by a producer.
    RedisRaw(String),
}

struct Case {
    kind: &'static str,
    id: String,
    payload: Payload,
    expected: Expected,
}

/// An empty embed: what Celery sends as the third element of the body.
const EMBED: &str = r#"{"callbacks": null, "errbacks": null, "chain": null, "chord": null}"#;

/// Every kind of hostile message; the Redis-only ones when `redis` is set.
fn cases(queue: &str, redis: bool) -> Vec<Case> {
    let id = || uuid::Uuid::new_v4().to_string();
    let body = |args: &str, kwargs: &str| format!("[{args}, {kwargs}, {EMBED}]").into_bytes();
    let ping = |body: &[u8]| message("tasks.ping", &id(), body.to_vec());
    let cleanup =
        |args: String, kwargs: &str| message("tasks.cleanup_sessions", &id(), body(&args, kwargs));
    let with_header = |name: &str, value: Value| {
        let mut raw = ping(&body("[]", "{}"));
        raw.headers.insert(name.into(), value);
        raw
    };
    let mut cases = Vec::new();
    let mut no_task = ping(&body("[]", "{}"));
    no_task.headers.remove("task");
    cases.push(Case {
        kind: "no task name",
        id: no_task.headers["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        payload: Payload::Message(no_task),
        expected: Expected::NothingStored,
    });
    if redis {
        cases.push(Case {
            kind: "not a kombu envelope (Redis)",
            id: id(),
            payload: Payload::RedisRaw("not json at all".into()),
            expected: Expected::NothingStored,
        });
        let unreadable = id();
        let envelope = celery_message::envelope_not_base64("tasks.ping", &unreadable, queue);
        cases.push(Case {
            kind: "body not base64 (Redis)",
            id: unreadable,
            payload: Payload::RedisRaw(envelope.to_string()),
            expected: Expected::Failure("DecodeError"),
        });
    }
    let mut pickled = ping(b"\x80\x04\x95.");
    pickled.content_type = "application/x-python-serialize".into();
    pickled.content_encoding = "binary".into();
    let huge = |len: usize, c: &str| format!("[\"{}\"]", c.repeat(len));
    // Each of these names its id in its headers and must fail with the exception type.
    let mut failing = vec![
        (
            "17 MiB message (limit 16 MiB)",
            "InvalidTaskError",
            cleanup(huge(17 << 20, "y"), "{}"),
        ),
        ("pickle content type", "ContentDisallowed", pickled),
        ("body not JSON", "DecodeError", ping(b"{oops")),
        // JSON, but not the protocol's `[args, kwargs, embed]`.
        ("2-element body", "InvalidTaskError", ping(b"[[], {}]")),
        (
            "retries -1",
            "InvalidTaskError",
            with_header("retries", json!(-1)),
        ),
        (
            "retries 2^40",
            "InvalidTaskError",
            with_header("retries", json!(1u64 << 40)),
        ),
        (
            "eta unparseable",
            "InvalidTaskError",
            with_header("eta", json!("tomorrow-ish")),
        ),
        (
            "expires unparseable",
            "InvalidTaskError",
            with_header("expires", json!({"not": "a time"})),
        ),
        (
            "10 MiB ill-typed argument",
            "TypeError",
            cleanup(huge(10 << 20, "x"), "{}"),
        ),
        (
            "unknown task",
            "NotRegistered",
            message("tasks.no_such_task", &id(), body("[]", "{}")),
        ),
        (
            "ill-typed argument",
            "TypeError",
            cleanup("[\"thirty\"]".into(), "{}"),
        ),
        (
            "unexpected keyword argument",
            "TypeError",
            cleanup("[]".into(), r#"{"max_idle": 5}"#),
        ),
    ];
    if redis {
        // On RabbitMQ the headers must fit in one frame: a 100 KiB header is refused at
        // publish (`frame_too_large`, the connection closed), so it never reaches a worker.
        let name = "n".repeat(100 * 1024);
        let raw = message(&name, &id(), body("[]", "{}"));
        failing.push(("100 KiB task name (Redis)", "NotRegistered", raw));
    }
    cases.extend(failing.into_iter().map(|(kind, exc_type, raw)| Case {
        kind,
        id: raw.headers["id"].as_str().unwrap_or_default().to_owned(),
        payload: Payload::Message(raw),
        expected: Expected::Failure(exc_type),
    }));
    cases
}

/// The worker's log lines, as it writes them to stderr.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn len(&self) -> usize {
        self.0.lock().expect("log lock").len()
    }

    /// Lines from `from` on: how many, and the longest.
    fn since(&self, from: usize) -> (usize, usize) {
        let lines = self.0.lock().expect("log lock");
        let new = &lines[from.min(lines.len())..];
        (new.len(), new.iter().map(String::len).max().unwrap_or(0))
    }

    fn contains_since(&self, from: usize, text: &str) -> bool {
        let lines = self.0.lock().expect("log lock");
        lines[from.min(lines.len())..]
            .iter()
            .any(|l| l.contains(text))
    }
}

struct Row {
    kind: &'static str,
    outcome: String,
    ok: bool,
    lines: usize,
    longest: usize,
    rss_before_kb: u64,
    rss_after_kb: u64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        return support::run_cli_worker(&args[1..], celerity_shop::register);
    }
    let amqp = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] | ["--broker", "redis"] => false,
        ["--broker", "amqp"] => true,
        _ => {
            eprintln!("usage: cargo run --release --example hostile -- [--broker redis|amqp]");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(amqp)) {
        Ok((rows, settled_kb)) => {
            print!("{}", render(&rows, settled_kb, amqp));
            if rows.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("hostile: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The rows, and the worker's `VmRSS` in kB once left alone after the last message.
async fn run(amqp: bool) -> Result<(Vec<Row>, u64), Failure> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let redis_url = env("CELERITY_HOSTILE_REDIS_URL", "redis://127.0.0.1:6379/12");
    let broker_url = if amqp {
        env(
            "CELERITY_HOSTILE_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        )
    } else {
        redis_url.clone()
    };
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let queue = format!("hostile-{run}");
    let args: Vec<String> = [
        "--broker-url",
        &broker_url,
        "--result-backend",
        &redis_url,
        "-Q",
        &queue,
        "-n",
        &format!("hostile-{run}@%h"),
    ]
    .map(str::to_owned)
    .into();
    let mut worker = CliWorker::spawn(&args, &[], Stdio::piped())?;
    let log = Log::default();
    let stderr = worker.take_stderr().expect("piped");
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.0.lock().expect("log lock").push(line);
        }
    });
    let app = App::from_urls(&broker_url, &redis_url).await?;
    let mut redis = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let tasks = TasksRegistry::new(app.client());
    let mut ids = vec![alive(&tasks, &queue).await?];
    let mut rows = Vec::new();
    for case in cases(&queue, !amqp) {
        let rss_before_kb = worker.memory_kb("VmRSS").unwrap_or(0);
        let from = log.len();
        match case.payload {
            Payload::Message(raw) => app.broker().publish(&queue, raw).await?,
            Payload::RedisRaw(text) => redis.lpush::<_, _, ()>(&queue, text).await?,
        }
        let outcome = outcome(&app, &log, from, &case.id, case.expected).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (lines, longest) = log.since(from);
        // Alive, and still running good tasks.
        let ok = outcome.1 && worker.is_alive();
        ids.push(alive(&tasks, &queue).await?);
        ids.push(case.id);
        let row = Row {
            kind: case.kind,
            outcome: outcome.0,
            ok,
            lines,
            longest,
            rss_before_kb,
            rss_after_kb: worker.memory_kb("VmRSS").unwrap_or(0),
        };
        eprintln!(
            "{}: {} ({} lines, longest {} bytes)",
            row.kind, row.outcome, row.lines, row.longest
        );
        rows.push(row);
    }
    // What the worker keeps once it has been left alone for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled_kb = worker.memory_kb("VmRSS").unwrap_or(0);
    worker.stop(Duration::from_secs(30))?;
    app.close().await;
    let mut keys: Vec<String> = ids
        .iter()
        .map(|id| format!("{}{id}", celerity::backend::TASK_META_PREFIX))
        .collect();
    if !amqp {
        keys.extend([
            queue.clone(),
            format!("_kombu.binding.{queue}"),
            format!("_kombu.binding_permanent.{queue}"),
        ]);
    }
    let _: () = redis.del(&keys).await?;
    Ok((rows, settled_kb))
}

/// Sends `tasks.ping` and waits for its `pong`: the worker is alive and still runs tasks.
async fn alive(tasks: &TasksRegistry, queue: &str) -> Result<String, Failure> {
    let sent = tasks.ping().queue(queue).await?;
    let pong = sent.get(Duration::from_secs(20)).await?;
    if pong != "pong" {
        return Err(format!("tasks.ping returned {pong:?}").into());
    }
    Ok(sent.id().to_owned())
}

/// What became of `id`, and whether that is what was `expected`.
async fn outcome(
    app: &App,
    log: &Log,
    from: usize,
    id: &str,
    expected: Expected,
) -> Result<(String, bool), Failure> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(meta) = app.backend().get(id).await? {
            if meta.status.is_ready() {
                let exc_type = meta.exception_info().map(|e| e.exc_type);
                let text = format!(
                    "{} {}",
                    meta.status.as_str(),
                    exc_type.as_deref().unwrap_or("")
                );
                let ok = meta.status == TaskState::Failure
                    && matches!(expected, Expected::Failure(want) if exc_type.as_deref() == Some(want));
                return Ok((text.trim_end().to_owned(), ok));
            }
        }
        if expected == Expected::NothingStored && log.contains_since(from, "invalid task message") {
            // Refused at once; a result would have been stored before the log line.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let stored = app.backend().get(id).await?.is_some();
            let text = if stored {
                "stored a result"
            } else {
                "logged, nothing stored"
            };
            return Ok((text.to_owned(), !stored));
        }
        if Instant::now() > deadline {
            return Ok(("nothing within 20 s".to_owned(), false));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn render(rows: &[Row], settled_kb: u64, amqp: bool) -> String {
    let mb = |kb: u64| kb as f64 / 1024.0;
    let mut out = format!(
        "hostile input on {}: the worker answered tasks.ping after every message\n\n",
        if amqp { "amqp" } else { "redis" }
    );
    out.push_str("| message | outcome | as expected | log lines | longest log line (bytes) | worker RSS before → after (MB) |\n");
    out.push_str("|---|---|---|---:|---:|---|\n");
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} → {:.1} |\n",
            row.kind,
            row.outcome,
            if row.ok { "yes" } else { "**no**" },
            row.lines,
            row.longest,
            mb(row.rss_before_kb),
            mb(row.rss_after_kb)
        ));
    }
    out.push_str(&format!(
        "\nworker RSS {:.1} MB at the start, {:.1} MB 5 s after the last message\n",
        mb(rows.first().map_or(0, |r| r.rss_before_kb)),
        mb(settled_kb)
    ));
    out
}
