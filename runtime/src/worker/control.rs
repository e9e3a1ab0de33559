//! Answers Celery's remote-control commands (`celery/worker/control.py`) from the
//! worker's mailbox, so that `celery inspect`, `celery control`, `app.control` and Flower
//! see a Celerity worker as one of their own, and the start-up sync of Python workers
//! (mingle's `hello`) includes it. The inspect commands' answers are built in
//! [`inspect`](super::inspect) and [`stats`](super::stats); the commands that change the
//! worker are here.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::inspect;
use super::limits::{Rate, RateError, TimeLimits};
use super::pool::KeepsOneSlot;
use super::queues::QueueChange;
use super::shared::Shared;
use super::state::Phase;
use super::stats;
use crate::broker::{Mailbox, MailboxCommand};
use crate::events::WORKER_HEARTBEAT;
use crate::pidbox::{clock_forward, task_ids as ids};

/// Runs the commands addressed to this worker until the mailbox closes.
pub(crate) async fn answer(shared: Arc<Shared>, mut mailbox: Box<dyn Mailbox>) {
    while let Some(command) = mailbox.next().await {
        if !command.is_for(&shared.hostname) {
            continue;
        }
        tracing::debug!(method = %command.method, "control command");
        let Some(answer) = handle(&shared, &command) else {
            continue;
        };
        // `Node.dispatch` answers only requests that carry `reply_to` (and a ticket).
        if let (Some(to), Some(ticket)) = (&command.reply_to, &command.ticket) {
            let mut body = serde_json::Map::new();
            body.insert(shared.hostname.clone(), answer);
            if let Err(error) = mailbox.reply(to, ticket, Value::Object(body)).await {
                tracing::warn!(%error, method = %command.method, "could not answer a control command");
            }
        }
    }
}

/// Commands of Celery's `Panel` a Celerity worker does not carry out.
const NOT_IMPLEMENTED: &[&str] = &[
    "autoscale",
    "election",
    "memdump",
    "memsample",
    "objgraph",
    "pool_restart",
    "revoke_by_stamped_headers",
];

/// The answer to `command`; `None` for none at all (`shutdown`, which Celery answers by
/// exiting).
fn handle(shared: &Shared, command: &MailboxCommand) -> Option<Value> {
    let arguments = &command.arguments;
    let answer = match command.method.as_str() {
        "ping" => ok("pong"),
        "active" | "dump_active" => {
            let safe = arguments.get("safe").and_then(Value::as_bool) == Some(true);
            inspect::tasks_in(shared, Phase::Active, safe)
        }
        "reserved" | "dump_reserved" => inspect::tasks_in(shared, Phase::Reserved, false),
        "scheduled" | "dump_schedule" => inspect::scheduled(shared),
        "query_task" => inspect::query_task(shared, arguments),
        "revoked" | "dump_revoked" => inspect::revoked(shared),
        "registered" | "dump_tasks" => inspect::registered(shared, arguments),
        "active_queues" => inspect::active_queues(shared),
        "clock" => inspect::clock(),
        "stats" => stats::stats(shared),
        "conf" | "dump_conf" => stats::conf(shared),
        "report" => stats::report(shared),
        "hello" => hello(shared, arguments),
        "revoke" => {
            let terminate = arguments.get("terminate") == Some(&Value::Bool(true));
            revoke(shared, arguments, terminate)
        }
        "terminate" => revoke(shared, arguments, true),
        "rate_limit" => rate_limit(shared, arguments),
        "time_limit" => time_limit(shared, arguments),
        "add_consumer" => match text(arguments, "queue") {
            Some(queue) => {
                shared.queues.request(QueueChange::Add(queue.to_owned()));
                ok(format!("add consumer {queue}"))
            }
            None => missing("add_consumer", "queue"),
        },
        "cancel_consumer" => match text(arguments, "queue") {
            Some(queue) => {
                shared.queues.request(QueueChange::Cancel(queue.to_owned()));
                ok(format!("no longer consuming from {queue}"))
            }
            None => missing("cancel_consumer", "queue"),
        },
        "pool_grow" => {
            let n = count(arguments);
            let concurrency = shared.pool.grow(n);
            tracing::info!(n, concurrency, "pool grown by remote control");
            ok("pool will grow")
        }
        "pool_shrink" => match shared.pool.shrink(count(arguments)) {
            Ok(concurrency) => {
                tracing::info!(concurrency, "pool shrunk by remote control");
                ok("pool will shrink")
            }
            Err(KeepsOneSlot { concurrency }) => nok(format!(
                "Can't shrink pool: it runs {concurrency} tasks at once and keeps at least one"
            )),
        },
        "enable_events" => {
            if shared.events.set_task_events(true) {
                ok("task events already enabled")
            } else {
                tracing::info!("Events of group {{task}} enabled by remote.");
                ok("task events enabled")
            }
        }
        "disable_events" => {
            if shared.events.set_task_events(false) {
                tracing::info!("Events of group {{task}} disabled by remote.");
                ok("task events disabled")
            } else {
                ok("task events already disabled")
            }
        }
        // Monitors ask for one at once when they start (`EventReceiver.wakeup_workers`);
        // Celery's handler returns nothing, so the answer is `null`.
        "heartbeat" => {
            tracing::debug!("Heartbeat requested by remote.");
            shared.announce(WORKER_HEARTBEAT);
            Value::Null
        }
        "shutdown" => {
            let message = text(arguments, "msg").unwrap_or("Got shutdown from remote");
            tracing::warn!("{message}");
            shared.shutdown_requested.send_replace(true);
            return None;
        }
        other if NOT_IMPLEMENTED.contains(&other) => nok(format!(
            "Celerity workers do not implement the control command '{other}'"
        )),
        // What Celery's `Node.dispatch` answers for a command it does not know.
        other => nok(format!("KeyError('{other}')")),
    };
    Some(answer)
}

/// `{"ok": …}` and `{"error": …}`, as `control.py::ok` / `nok` build answers.
fn ok(value: impl Into<Value>) -> Value {
    json!({ "ok": value.into() })
}

fn nok(value: impl Into<Value>) -> Value {
    json!({ "error": value.into() })
}

/// The error Celery's dispatch answers when a command lacks a required argument.
fn missing(method: &str, argument: &str) -> Value {
    nok(format!(
        "TypeError(\"{method}() missing 1 required positional argument: '{argument}'\")"
    ))
}

fn text<'a>(arguments: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    arguments.get(name).and_then(Value::as_str)
}

/// The `n` of `pool_grow` and `pool_shrink`: a number (or its text), default 1.
fn count(arguments: &Map<String, Value>) -> usize {
    match arguments.get("n") {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1),
        Some(Value::String(n)) => n.trim().parse().unwrap_or(1),
        _ => 1,
    }
}

/// Seconds given as a number (or its text); `None` for none, zero or less.
fn seconds(arguments: &Map<String, Value>, name: &str) -> Option<Duration> {
    let seconds = match arguments.get(name)? {
        Value::Number(n) => n.as_f64()?,
        Value::String(n) => n.trim().parse().ok()?,
        _ => return None,
    };
    (seconds > 0.0)
        .then(|| Duration::try_from_secs_f64(seconds).ok())
        .flatten()
}

/// Python's `repr` of a set of strings, as Celery's revoke answer prints it.
fn set_repr(ids: &[String]) -> String {
    let items: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    format!("{{{}}}", items.join(", "))
}

/// Mingle's `hello` from another node: merges its revoked ids, answers with ours.
fn hello(shared: &Shared, arguments: &Map<String, Value>) -> Value {
    if text(arguments, "from_node") == Some(shared.hostname.as_str()) {
        return Value::Null;
    }
    shared.revoke(ids(arguments.get("revoked")));
    json!({"revoked": shared.revoked_ids(), "clock": clock_forward()})
}

/// `revoke`: the ids are discarded when received or when their ETA comes; with
/// `terminate`, those running are stopped too (the signal named is not used: a stop
/// drops the task's future whatever it is). Answers as `control.py::revoke` does.
fn revoke(shared: &Shared, arguments: &Map<String, Value>, terminate: bool) -> Value {
    let task_ids = ids(arguments.get("task_id"));
    shared.revoke(task_ids.iter().cloned());
    if !terminate {
        tracing::info!("Tasks flagged as revoked: {}", task_ids.join(", "));
        return ok(format!("tasks {} flagged as revoked", set_repr(&task_ids)));
    }
    let signal = text(arguments, "signal").unwrap_or("SIGTERM");
    let mut terminated: Vec<&str> = Vec::new();
    for id in &task_ids {
        // A task held but not running yet is discarded as revoked when its turn comes.
        if shared.state.get(id).is_some() && !terminated.contains(&id.as_str()) {
            tracing::info!("Terminating {id} ({signal})");
            shared.running.terminate(id);
            terminated.push(id);
        }
    }
    if terminated.is_empty() {
        ok("terminate: tasks unknown")
    } else {
        ok(format!("terminate: {}", terminated.join(", ")))
    }
}

/// `rate_limit`: a task's rate limit from now on, in Celery's syntax (`10/m`); empty or
/// zero for none. Answers as `control.py::rate_limit` does, errors included.
fn rate_limit(shared: &Shared, arguments: &Map<String, Value>) -> Value {
    let given = arguments.get("rate_limit").unwrap_or(&Value::Null);
    let text = match given {
        Value::String(text) => text.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let rate = match Rate::parse(&text) {
        Ok(rate) => rate,
        Err(RateError::NotANumber(count)) => {
            return nok(format!(
                "Invalid rate limit string: ValueError(\"could not convert string to float: '{count}'\")"
            ));
        }
        // Celery lets the `KeyError` of its unit lookup reach the dispatcher.
        Err(RateError::UnknownUnit(unit)) => return nok(format!("KeyError('{unit}')")),
    };
    let Some(name) = known_task(shared, arguments) else {
        tracing::error!("Rate limit attempt for unknown task {given}");
        return nok("unknown task");
    };
    shared.limits.set_rate(name, rate);
    // Celery tests the value given, so `"0"` sets a limit that limits nothing.
    let disabled = match given {
        Value::String(text) => text.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => true,
    };
    if disabled {
        tracing::info!("Rate limits disabled for tasks of type {name}");
        ok("rate limit disabled successfully")
    } else {
        tracing::info!("New rate limit for tasks of type {name}: {text}.");
        ok("new rate limit set successfully")
    }
}

/// `time_limit`: a task's soft and hard time limits from now on, both replaced (a
/// limit not given is removed), as `control.py::time_limit` sets them.
fn time_limit(shared: &Shared, arguments: &Map<String, Value>) -> Value {
    let Some(name) = known_task(shared, arguments) else {
        tracing::error!("Change time limit attempt for unknown task");
        return nok("unknown task");
    };
    let limits = TimeLimits {
        soft: seconds(arguments, "soft"),
        hard: seconds(arguments, "hard"),
    };
    shared.limits.set_times(name, limits);
    tracing::info!(
        "New time limits for tasks of type {name}: soft={:?} hard={:?}",
        limits.soft,
        limits.hard
    );
    ok("time limits set successfully")
}

/// The registered task named by the `task_name` argument.
fn known_task(shared: &Shared, arguments: &Map<String, Value>) -> Option<&'static str> {
    let name = text(arguments, "task_name")?;
    shared
        .table
        .get(name)
        .map(|registered| registered.spec.name)
}

#[cfg(test)]
mod tests;
