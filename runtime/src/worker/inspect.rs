//! The answers to Celery's inspect commands about tasks and queues
//! (`celery/worker/control.py`): `active`, `reserved`, `scheduled`, `query_task`,
//! `revoked`, `registered`, `active_queues` and `clock`, each in the shape a Celery worker
//! gives, so `celery inspect` and Flower read a Celerity worker as one of their own.

use serde_json::{Map, Value, json};

use super::limits::python_float;
use super::shared::Shared;
use super::state::Phase;
use crate::broker::QueueInfo;
use crate::pidbox::{clock_value, task_ids as ids};
use crate::spec::TaskSpec;

/// `active` (`safe`: arguments as Python's repr), `reserved`: each task's
/// `Request.info()`.
pub(super) fn tasks_in(shared: &Shared, phase: Phase, safe: bool) -> Value {
    let held = shared.state.in_phase(phase);
    Value::Array(
        held.iter()
            .map(|task| task.info(&shared.hostname, safe))
            .collect(),
    )
}

/// `scheduled`: `{eta, priority, request}` for each task waiting for its ETA.
pub(super) fn scheduled(shared: &Shared) -> Value {
    let held = shared.state.in_phase(Phase::Scheduled);
    Value::Array(
        held.iter()
            .map(|task| {
                json!({"eta": task.eta, "priority": task.priority,
                    "request": task.info(&shared.hostname, false)})
            })
            .collect(),
    )
}

/// `query_task`: `{id: [state, info]}` for each id the worker holds.
pub(super) fn query_task(shared: &Shared, arguments: &Map<String, Value>) -> Value {
    let mut found = Map::new();
    for id in ids(arguments.get("ids")) {
        if let Some(task) = shared.state.get(&id) {
            let phase = match task.phase {
                Phase::Active => "active",
                Phase::Reserved => "reserved",
                Phase::Scheduled => "scheduled",
            };
            found.insert(id, json!([phase, task.info(&shared.hostname, false)]));
        }
    }
    Value::Object(found)
}

/// `revoked`: the revoked ids, oldest first.
pub(super) fn revoked(shared: &Shared) -> Value {
    json!(shared.revoked_ids())
}

/// `clock`: the Lamport clock's value.
pub(super) fn clock() -> Value {
    json!({ "clock": clock_value() })
}

/// Celery's default `taskinfoitems` (`control.py::DEFAULT_TASK_INFO_ITEMS`).
const DEFAULT_TASK_INFO_ITEMS: [&str; 3] = ["exchange", "routing_key", "rate_limit"];

/// `registered`: the task names, sorted, each followed by the attributes asked for that
/// it has, as `name [rate_limit=10/m time_limit=30.0]`. Celerity workers register no
/// built-in tasks, so `builtins` changes nothing.
pub(super) fn registered(shared: &Shared, arguments: &Map<String, Value>) -> Value {
    let asked: Vec<&str> = match arguments.get("taskinfoitems") {
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().filter_map(Value::as_str).collect()
        }
        Some(Value::String(item)) => vec![item.as_str()],
        _ => DEFAULT_TASK_INFO_ITEMS.to_vec(),
    };
    let mut specs: Vec<&TaskSpec> = shared.table.specs().collect();
    specs.sort_unstable_by_key(|spec| spec.name);
    let described = specs.iter().map(|spec| {
        let fields: Vec<String> = asked
            .iter()
            .filter(|item| !item.starts_with('_'))
            .filter_map(|item| Some(format!("{item}={}", attribute(shared, spec, item)?)))
            .collect();
        if fields.is_empty() {
            spec.name.to_owned()
        } else {
            format!("{} [{}]", spec.name, fields.join(" "))
        }
    });
    Value::Array(described.map(Value::from).collect())
}

/// The task attribute `name` as Celery's `str(getattr(task, name))` shows it; `None`
/// where the task has none (Celery leaves those out).
fn attribute(shared: &Shared, spec: &TaskSpec, name: &str) -> Option<String> {
    let seconds = |d: std::time::Duration| python_float(d.as_secs_f64());
    let flag = |on: bool| if on { "True" } else { "False" }.to_owned();
    match name {
        "name" => Some(spec.name.to_owned()),
        "queue" => Some(spec.queue.to_owned()),
        "routing_key" => spec.routing_key.map(str::to_owned),
        "priority" => spec.priority.map(|p| p.to_string()),
        "rate_limit" => shared.limits.rate(spec).map(|rate| rate.text),
        "time_limit" => shared.limits.times(spec).hard.map(seconds),
        "soft_time_limit" => shared.limits.times(spec).soft.map(seconds),
        "expires" => spec.expires.map(seconds),
        "acks_late" => Some(flag(spec.acks_late)),
        "ignore_result" => Some(flag(spec.ignore_result)),
        "track_started" => Some(flag(spec.track_started)),
        "max_retries" => Some(spec.retry.unwrap_or_default().max_retries.to_string()),
        _ => None,
    }
}

/// `active_queues`: each queue consumed as kombu's `Queue.as_dict(recurse=True)`.
pub(super) fn active_queues(shared: &Shared) -> Value {
    let broker = shared.client.broker();
    let queues = shared.queues.names();
    Value::Array(
        queues
            .iter()
            .map(|queue| queue_dict(&broker.queue_info(queue)))
            .collect(),
    )
}

/// kombu's `Queue.as_dict(recurse=True)` (`kombu/entity.py`), key for key.
fn queue_dict(queue: &QueueInfo) -> Value {
    let arguments = if queue.arguments.is_empty() {
        Value::Null
    } else {
        Value::Object(queue.arguments.clone())
    };
    json!({
        "name": queue.name,
        "exchange": {
            "name": queue.exchange,
            "type": queue.exchange_type,
            "arguments": null,
            "durable": queue.durable,
            "passive": false,
            "auto_delete": false,
            "delivery_mode": null,
            "no_declare": false,
        },
        "routing_key": queue.routing_key,
        "queue_arguments": arguments,
        "binding_arguments": null,
        "consumer_arguments": null,
        "durable": queue.durable,
        "exclusive": queue.exclusive,
        "auto_delete": queue.auto_delete,
        "no_ack": false,
        "alias": null,
        "bindings": [],
        "no_declare": null,
        "expires": null,
        "message_ttl": null,
        "max_length": null,
        "max_length_bytes": null,
        "max_priority": queue.max_priority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a Python Celery 5.7 worker answered to `inspect active_queues` for its default
    /// queue `probeq` (captured).
    const CELERY_QUEUE: &str = r#"{"name": "probeq", "exchange": {"name": "probeq", "type": "direct", "arguments": null, "durable": true, "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false}, "routing_key": "probeq", "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null, "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false, "alias": null, "bindings": [], "no_declare": null, "expires": null, "message_ttl": null, "max_length": null, "max_length_bytes": null, "max_priority": null}"#;

    #[test]
    fn a_queue_reads_as_kombu_writes_it() {
        let celery: Value = serde_json::from_str(CELERY_QUEUE).unwrap();
        assert_eq!(queue_dict(&QueueInfo::new("probeq")), celery);
        let mut priority = QueueInfo::new("urgent");
        priority.max_priority = Some(10);
        priority
            .arguments
            .insert("x-max-priority".into(), 10.into());
        let dict = queue_dict(&priority);
        assert_eq!(dict["max_priority"], 10);
        assert_eq!(dict["queue_arguments"], json!({"x-max-priority": 10}));
    }
}
