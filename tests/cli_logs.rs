//! The worker's log lines, human and JSON, exactly as the README shows them: a real
//! worker on the embedded broker runs a task that succeeds, one that fails and one that is
//! retried, and the lines the `celerity::cli` subscriber writes are read back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celerity::cli::{LogFormat, subscriber};
use celerity::{
    App, BuildError, Component, Invoke, RetryPolicy, TaskContext, TaskError, TaskResult, TaskSpec,
};
use celerity_shop::tasks::{EmailAddress, TasksRegistry};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// `t.flaky`: asks for a retry on its first run, succeeds on the second.
static FLAKY: TaskSpec = TaskSpec::new("t.flaky", &[]).retry(RetryPolicy::new().max_retries(1));

struct Flaky;

impl Component for Flaky {
    type Deps = ();
    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Flaky)
    }
}

#[derive(serde::Deserialize)]
struct FlakyArgs {}

impl Invoke<Flaky> for FlakyArgs {
    type Output = u32;
    async fn invoke(self, _c: &Flaky, ctx: &TaskContext) -> TaskResult<u32> {
        if ctx.retries == 0 {
            let cause = TaskError::new("Busy", "the ledger is locked");
            return Err(TaskError::retry(Some(Duration::from_millis(50))).because(cause));
        }
        Ok(ctx.retries)
    }
}

/// Runs a ping, a failing email and the flaky task on a worker whose logs go to a buffer
/// in `format`; returns the lines and the three task ids.
fn run_tasks(format: LogFormat) -> (Vec<String>, [String; 3]) {
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let make_writer = {
        let buffer = buffer.clone();
        move || Capture(buffer.clone())
    };
    let subscriber = subscriber(format, "info", make_writer).expect("a valid filter");
    // One thread: every task the worker spawns logs through this subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ids = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let app = App::memory();
            let mut builder = app.worker();
            celerity_shop::register(&mut builder);
            builder
                .register::<Flaky, FlakyArgs>(&FLAKY)
                .hostname("celery@logs");
            let worker = builder.start().await.unwrap();
            let tasks = TasksRegistry::new(app.client());

            let ping = tasks.ping().await.unwrap();
            ping.get(WAIT).await.unwrap();
            let bad = EmailAddress {
                email: "nobody".into(),
                name: None,
            };
            let email = tasks
                .send_email(bad, "Hi".into(), String::new())
                .await
                .unwrap();
            email.get(WAIT).await.unwrap_err();
            let flaky = app.client().send_task::<u32>(&FLAKY, vec![]).await.unwrap();
            assert_eq!(flaky.get(WAIT).await.unwrap(), 1);
            worker.shutdown().await;
            [ping.id(), email.id(), flaky.id()].map(str::to_owned)
        })
    });
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    (text.lines().map(str::to_owned).collect(), ids)
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `[2026-11-21 09:30:00,123: INFO] message` → (`INFO`, `message`), checking the time.
fn split_human(line: &str) -> (&str, &str) {
    let (head, message) = line
        .split_once("] ")
        .unwrap_or_else(|| panic!("no `[time: LEVEL] ` prefix in {line:?}"));
    let (time, level) = head
        .trim_start_matches('[')
        .split_once(": ")
        .unwrap_or_else(|| panic!("no time in {line:?}"));
    chrono::NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S,%3f")
        .unwrap_or_else(|e| panic!("bad time {time:?} in {line:?}: {e}"));
    (level, message)
}

/// Replaces a duration such as `0.000412s` after `in ` with `<t>s`.
fn without_durations(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find(" in ") {
        let (before, after) = rest.split_at(at + 4);
        out.push_str(before);
        let digits = after
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(after.len());
        if digits > 0 && after[digits..].starts_with('s') {
            out.push_str("<t>");
        } else {
            out.push_str(&after[..digits]);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn human_lines_read_like_celerys() {
    let (lines, [ping, email, flaky]) = run_tasks(LogFormat::Human);
    let shown: Vec<(String, String)> = lines
        .iter()
        .map(|line| {
            let (level, message) = split_human(line);
            (level.to_owned(), without_durations(message))
        })
        .collect();
    let expect = |level: &str, message: String| {
        assert!(
            shown.contains(&(level.to_owned(), message.clone())),
            "no `{level}` line `{message}` in:\n{}",
            lines.join("\n")
        );
    };
    expect(
        "INFO",
        format!(
            r#"celery@logs ready. queues=["celery", "email", "orders", "reports", "shop"] {}"#,
            concurrency_fields()
        ),
    );
    expect("INFO", format!("Task tasks.ping[{ping}] received"));
    expect(
        "INFO",
        format!(r#"Task tasks.ping[{ping}] succeeded in <t>s: "pong""#),
    );
    expect("INFO", format!("Task tasks.send_email[{email}] received"));
    expect(
        "ERROR",
        format!(
            "Task tasks.send_email[{email}] failed in <t>s: InvalidAddress: `nobody` is not an email address"
        ),
    );
    expect("INFO", format!("Task t.flaky[{flaky}] received"));
    expect(
        "WARN",
        format!("Task t.flaky[{flaky}] retry: Retry in <t>s: Busy: the ledger is locked"),
    );
    expect(
        "INFO",
        format!("Task t.flaky[{flaky}] succeeded in <t>s: 1"),
    );
    // Received twice (first run and retry), succeeded once.
    let flaky_lines = shown.iter().filter(|(_, m)| m.contains(&flaky)).count();
    assert_eq!(flaky_lines, 4, "{}", lines.join("\n"));
}

/// The worker's default concurrency on this machine, as its ready line shows it.
fn concurrency_fields() -> String {
    let concurrency = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
    format!("concurrency={concurrency} prefetch={}", concurrency * 4)
}

#[test]
fn json_lines_carry_the_task_fields() {
    let (lines, [ping, email, flaky]) = run_tasks(LogFormat::Json);
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let find = |id: &str, start: &str| -> &Value {
        events
            .iter()
            .find(|e| {
                e["id"] == id
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&format!("] {start}")))
            })
            .unwrap_or_else(|| panic!("no `{start}` event for {id} in:\n{}", lines.join("\n")))
    };

    let received = find(&ping, "received");
    assert_eq!(received["level"], "INFO");
    assert_eq!(received["target"], "celerity::worker");
    assert_eq!(received["task"], "tasks.ping");
    assert_eq!(received["queue"], "shop");
    assert!(
        received["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let succeeded = find(&ping, "succeeded");
    assert_eq!(succeeded["task"], "tasks.ping");
    assert!(
        succeeded["duration_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 0.0)
    );
    // Inside the task's span: the span names the task too.
    assert_eq!(succeeded["span"]["name"], "task");
    assert_eq!(succeeded["span"]["task"], "tasks.ping");
    assert_eq!(succeeded["span"]["id"], ping.as_str());
    assert_eq!(succeeded["span"]["queue"], "shop");

    let failed = find(&email, "failed");
    assert_eq!(failed["level"], "ERROR");
    assert_eq!(failed["exc_type"], "InvalidAddress");
    assert_eq!(failed["error"], "`nobody` is not an email address");

    let retried = find(&flaky, "retry");
    assert_eq!(retried["level"], "WARN");
    assert_eq!(retried["reason"], "Busy: the ledger is locked");
    assert_eq!(retried["retries"], 1);
    assert_eq!(retried["countdown_ms"], 50);
    let eta = retried["eta"].as_str().expect("an eta");
    chrono::DateTime::parse_from_rfc3339(eta).expect("an RFC 3339 eta");
}
