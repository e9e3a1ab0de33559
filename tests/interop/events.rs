//! Celery's monitors watching Celerity workers: a Python `app.events.Receiver` feeding an
//! `app.events.State`, as Flower and `celery events` do (`tests/python/events.py`), sees
//! a Celerity worker's worker and task events, and both kinds of worker of a mixed fleet.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use celerity::{ResultError, Worker};
use serde_json::{Value, json};

use super::python::{Python, wait_until_ready};
use super::rust_worker;
use super::tasks::TasksRegistry;
use super::transport::Transport;
use super::unique_queue;

/// How long an event may take to be seen: a heartbeat comes every 2 s.
const WAIT: Duration = Duration::from_secs(30);

/// How long the receiver may take to start (imports are slow on a busy CI machine).
const MONITOR_START: Duration = Duration::from_secs(60);

/// A Python event receiver (`events.py`) and what it printed: one line per event, with
/// its `State`'s view of the event's worker and task.
pub struct EventMonitor {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    log: Arc<Mutex<String>>,
}

impl EventMonitor {
    /// Starts a receiver on `transport`'s broker and waits until it consumes.
    pub async fn start(python: &Python, transport: &Transport) -> EventMonitor {
        let mut command = python.command(transport, "celery");
        command
            .arg("events.py")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let name = transport.name;
        tokio::task::spawn_blocking(move || {
            let mut child = command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start events.py ({command:?}): {e}"));
            let lines = Arc::new(Mutex::new(Vec::new()));
            let log = Arc::new(Mutex::new(String::new()));
            let (ready_tx, ready) = mpsc::channel();
            let stdout = child.stdout.take().expect("piped stdout");
            let read_lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line == "ready" {
                        let _ = ready_tx.send(());
                        continue;
                    }
                    let parsed = serde_json::from_str(&line)
                        .unwrap_or_else(|e| json!({"unreadable": line, "error": e.to_string()}));
                    read_lines
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(parsed);
                }
            });
            let mut stderr = child.stderr.take().expect("piped stderr");
            let written = log.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                written
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&text);
            });
            let stdin = child.stdin.take();
            // Made first, so that a receiver that does not start is stopped as it is dropped.
            let mut monitor = EventMonitor {
                child,
                stdin,
                lines,
                log,
            };
            let what = format!("events.py on {name}");
            wait_until_ready(
                &mut monitor.child,
                &ready,
                &monitor.log,
                MONITOR_START,
                &what,
            );
            monitor
        })
        .await
        .expect("the receiver's start-up thread")
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every line so far.
    pub fn seen(&self) -> Vec<Value> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The first line that `matches`, waiting for it (at most [`WAIT`]); `what` names it
    /// in the failure.
    pub async fn until(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self.seen().into_iter().find(|line| matches(line)) {
                return line;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the receiver saw no {what} within {WAIT:?}; it saw:\n{}",
                    summary(&self.seen())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the receiver (closing its standard input) and returns every line it printed.
    pub async fn stop(mut self) -> Vec<Value> {
        drop(self.stdin.take());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.seen()
    }
}

impl Drop for EventMonitor {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- events.py stderr ---\n{}", self.log());
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `type hostname [uuid]`, one line per event, for failure messages.
fn summary(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|line| {
            let event = &line["event"];
            format!(
                "{} {} {}",
                text(&event["type"]),
                text(&event["hostname"]),
                text(&event["uuid"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Whether `line` is an event of `kind` sent by `node`.
fn from(line: &Value, kind: &str, node: &str) -> bool {
    line["event"]["type"] == kind && line["event"]["hostname"] == node
}

/// Whether `line` is an event of `kind` about task `id`.
fn about(line: &Value, kind: &str, id: &str) -> bool {
    line["event"]["type"] == kind && line["event"]["uuid"] == id
}

/// The line of the event of `kind` about task `id`.
fn line_about<'a>(lines: &'a [Value], kind: &str, id: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| about(line, kind, id))
        .unwrap_or_else(|| panic!("no {kind} about {id} in:\n{}", summary(lines)))
}

/// A node name no other test uses.
fn unique_node() -> String {
    format!(
        "celerity-events-{}@interop",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A Celerity worker with task events on, watched by Celery's receiver: every worker
/// event and every task event it sends are received and understood by Celery's `State`
/// (the worker alive while it beats and gone once offline, each task in the state its
/// events say), fields and all.
pub async fn celery_sees_celerity_events(transport: &Transport, python: &Python) {
    let monitor = EventMonitor::start(python, transport).await;
    let queue = unique_queue("events");
    let node = unique_node();
    let app = transport.app().await;
    let worker: Worker = rust_worker::start_with_task_events(&app, &queue, &node).await;
    let tasks = TasksRegistry::new(app.client());

    let added = tasks.add(1, 2).queue(&queue).await.unwrap();
    let declined = tasks
        .charge("4000000000000002".into(), 500)
        .queue(&queue)
        .await
        .unwrap();
    let retried = tasks.flaky(1).queue(&queue).await.unwrap();
    let expired = tasks
        .add(2, 2)
        .expires_at(chrono::Utc::now() - chrono::Duration::seconds(5))
        .queue(&queue)
        .await
        .unwrap();
    // Revoked before it is sent, so the revoke is there when its countdown ends.
    let revoked_id = uuid::Uuid::new_v4().to_string();
    app.client()
        .result::<i64>(&revoked_id)
        .revoke()
        .await
        .unwrap();
    let revoked = tasks
        .add(3, 3)
        .task_id(&revoked_id)
        .countdown(Duration::from_secs(2))
        .queue(&queue)
        .await
        .unwrap();

    assert_eq!(added.get(WAIT).await.unwrap(), 3);
    assert!(matches!(
        declined.get(WAIT).await,
        Err(ResultError::Failed(_))
    ));
    assert_eq!(retried.get(WAIT).await.unwrap(), 1);
    for (kind, id) in [
        ("task-succeeded", added.id()),
        ("task-failed", declined.id()),
        ("task-succeeded", retried.id()),
        ("task-revoked", expired.id()),
        ("task-revoked", revoked.id()),
    ] {
        monitor
            .until(&format!("{kind} of {id}"), |line| about(line, kind, id))
            .await;
    }
    // Two seconds after worker-online at the latest.
    let beating = monitor
        .until("a heartbeat", |line| from(line, "worker-heartbeat", &node))
        .await;
    worker.shutdown().await;
    monitor
        .until("worker-offline", |line| from(line, "worker-offline", &node))
        .await;
    let lines = monitor.stop().await;
    let ours: Vec<Value> = lines
        .iter()
        .filter(|line| line["event"]["hostname"] == node.as_str())
        .cloned()
        .collect();

    // The worker: online first, offline last, alive in between.
    let types: Vec<&str> = ours.iter().map(|l| text(&l["event"]["type"])).collect();
    assert_eq!(types.first(), Some(&"worker-online"), "{types:?}");
    assert_eq!(types.last(), Some(&"worker-offline"), "{types:?}");
    for kind in [
        "task-received",
        "task-started",
        "task-succeeded",
        "task-failed",
        "task-retried",
        "task-revoked",
    ] {
        assert!(types.contains(&kind), "no {kind} in {types:?}");
    }
    let alive = &beating["worker"];
    assert_eq!(
        alive["alive"], true,
        "State takes a beating worker for alive: {alive}"
    );
    assert_eq!(alive["sw_ident"], "celerity");
    assert_eq!(alive["freq"], 2.0);
    assert_eq!(alive["pid"], std::process::id());
    let gone = &ours.last().unwrap()["worker"];
    assert_eq!(gone["alive"], false, "gone once offline: {gone}");
    assert_eq!(gone["processed"], 4, "add, charge, and flaky twice: {gone}");
    let clocks: Vec<u64> = ours
        .iter()
        .map(|l| l["event"]["clock"].as_u64().unwrap())
        .collect();
    assert!(
        clocks.windows(2).all(|pair| pair[0] < pair[1]),
        "one worker's clock moves forward: {clocks:?}"
    );

    // Each task: its events' fields, and the state Celery's State makes of them.
    let received = &line_about(&ours, "task-received", added.id())["event"];
    assert_eq!(received["name"], "interop.add");
    assert_eq!(received["args"], "(1, 2)");
    assert_eq!(received["kwargs"], "{}");
    assert_eq!(received["retries"], 0);
    assert_eq!(received["root_id"], added.id());
    let task = &line_about(&ours, "task-succeeded", added.id())["task"];
    assert_eq!(
        (
            &task["state"],
            &task["result"],
            &task["name"],
            &task["worker"]
        ),
        (
            &json!("SUCCESS"),
            &json!("3"),
            &json!("interop.add"),
            &json!(node)
        )
    );
    assert!(task["runtime"].as_f64().is_some_and(|t| t >= 0.0), "{task}");

    let task = &line_about(&ours, "task-failed", declined.id())["task"];
    assert_eq!(task["state"], "FAILURE");
    assert_eq!(
        task["exception"],
        "PaymentDeclined('card 4000000000000002 was declined')"
    );
    assert!(
        text(&task["traceback"]).contains("PaymentDeclined: card 4000000000000002 was declined"),
        "{task}"
    );

    let task = &line_about(&ours, "task-retried", retried.id())["task"];
    assert_eq!(task["state"], "RETRY");
    assert_eq!(task["exception"], "GatewayTimeout('attempt 1 timed out')");
    let task = &line_about(&ours, "task-succeeded", retried.id())["task"];
    assert_eq!(
        (&task["state"], &task["result"], &task["retries"]),
        (&json!("SUCCESS"), &json!("1"), &json!(1))
    );

    let expired = &line_about(&ours, "task-revoked", expired.id());
    assert_eq!(
        (&expired["event"]["expired"], &expired["task"]["state"]),
        (&json!(true), &json!("REVOKED"))
    );
    let revoked = &line_about(&ours, "task-revoked", revoked.id());
    assert_eq!(
        (
            &revoked["event"]["expired"],
            &revoked["event"]["terminated"],
            &revoked["task"]["state"]
        ),
        (&json!(false), &json!(false), &json!("REVOKED"))
    );
}

/// A Python worker and a Celerity worker on one queue, both sending task events: the
/// receiver sees both alive, and the task events of each worker for the tasks it ran.
pub async fn celery_sees_both_workers_of_a_mixed_fleet(transport: &Transport, python: &Python) {
    let monitor = EventMonitor::start(python, transport).await;
    let queue = unique_queue("events-mixed");
    let node = unique_node();
    let python_worker = python.worker_sending_events(transport, &queue).await;
    let app = transport.app().await;
    let rust = rust_worker::start_with_task_events(&app, &queue, &node).await;
    let tasks = TasksRegistry::new(app.client());

    let mut sent = Vec::new();
    for n in 0..40 {
        sent.push(tasks.tag(n).queue(&queue).await.unwrap());
    }
    let mut ran: Vec<(String, String)> = Vec::new();
    for result in &sent {
        let tagged = result.get(WAIT).await.unwrap();
        ran.push((result.id().to_owned(), tagged.worker));
    }
    for result in &sent {
        monitor
            .until("every task-succeeded", |line| {
                about(line, "task-succeeded", result.id())
            })
            .await;
    }
    for worker in [node.as_str(), python_worker.node.as_str()] {
        monitor
            .until(&format!("a heartbeat of {worker}"), |line| {
                from(line, "worker-heartbeat", worker)
            })
            .await;
    }
    let lines = monitor.seen();
    let python_node = python_worker.node.clone();
    rust.shutdown().await;
    drop(python_worker);
    drop(monitor.stop().await);

    for (worker, kind) in [(node.as_str(), "rust"), (python_node.as_str(), "python")] {
        let beat = lines
            .iter()
            .rev()
            .find(|line| from(line, "worker-heartbeat", worker))
            .unwrap();
        assert_eq!(beat["worker"]["alive"], true, "{worker}: {beat}");
        let ran_here: Vec<&str> = ran
            .iter()
            .filter(|(_, by)| by == kind)
            .map(|(id, _)| id.as_str())
            .collect();
        assert!(
            !ran_here.is_empty(),
            "the {kind} worker ran none of 40 tasks"
        );
        for id in ran_here {
            let succeeded = line_about(&lines, "task-succeeded", id);
            assert_eq!(
                succeeded["event"]["hostname"], worker,
                "{id} ran on the {kind} worker"
            );
            assert_eq!(succeeded["task"]["state"], "SUCCESS");
            assert_eq!(succeeded["task"]["worker"], worker);
        }
    }
}
