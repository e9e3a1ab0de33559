//! A Celery protocol v2 task message as a Python client sends it, before a broker wraps
//! it: what `runtime/tests/hostile_input.rs` and the hostile-input example
//! (`examples/hostile.rs`) take apart to make broken messages.

use celerity::protocol::{Properties, RawMessage};
use serde_json::{Value, json};

/// A message for `task` with id `id` and the serialised `body` (`[args, kwargs, embed]`).
pub fn message(task: &str, id: &str, body: Vec<u8>) -> RawMessage {
    let headers = json!({"lang": "py", "task": task, "id": id, "retries": 0,
        "timelimit": [null, null], "root_id": id, "argsrepr": "()", "kwargsrepr": "{}"});
    RawMessage {
        headers: headers.as_object().cloned().unwrap_or_default(),
        properties: Properties {
            correlation_id: Some(id.to_owned()),
            ..Properties::default()
        },
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        body,
    }
}

/// A kombu envelope for the Redis list `queue` whose body is not base64, though its
/// properties say it is: a message no producer of the task protocol would write.
pub fn envelope_not_base64(task: &str, id: &str, queue: &str) -> Value {
    json!({
        "body": "not base64!",
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"lang": "py", "task": task, "id": id, "retries": 0},
        "properties": {"correlation_id": id, "body_encoding": "base64",
                       "delivery_tag": format!("{queue}-{id}"),
                       "delivery_info": {"exchange": "", "routing_key": queue}},
    })
}
