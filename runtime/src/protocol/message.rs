//! Task messages: the transport-neutral raw form and the decoded protocol v2 form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::json::to_python_json;
use super::repr::short;

/// A message as a transport carries it: headers, properties and an undecoded body.
/// AMQP maps this one to one; the Redis transport wraps it in kombu's JSON envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage {
    /// Application headers (Celery's protocol v2 headers).
    pub headers: Map<String, Value>,
    /// Message properties.
    pub properties: Properties,
    /// MIME type of the body, e.g. `application/json`.
    pub content_type: String,
    /// Character set of the body, e.g. `utf-8`.
    pub content_encoding: String,
    /// The serialised body.
    pub body: Vec<u8>,
}

/// Writes whole seconds as integers and others as floats, as Python's JSON does for the
/// `time_limit=30` / `soft_time_limit=0.5` a Celery client was given.
fn seconds_as_python_writes<S: serde::Serializer>(
    limits: &(Option<f64>, Option<f64>),
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    let mut pair = serializer.serialize_tuple(2)?;
    for limit in [limits.0, limits.1] {
        match limit {
            Some(seconds) if seconds.fract() == 0.0 && seconds.abs() < 1e15 => {
                pair.serialize_element(&(seconds as i64))?
            }
            other => pair.serialize_element(&other)?,
        }
    }
    pair.end()
}

/// Message properties Celery sets (`celery/app/amqp.py`, `kombu/messaging.py`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    /// The task id: the rpc backend replies with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Where the rpc backend sends the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// 2 = persistent, 1 = transient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_mode: Option<u8>,
    /// Message priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Per-message TTL in milliseconds, as a string (set only when `expires` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
}

/// Protocol v2 headers, in the order Celery writes them. Unknown keys are kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Headers {
    /// Language of the sender: `"py"` from Python, `"rs"` from Celerity; ignored by workers.
    #[serde(default)]
    pub lang: Option<String>,
    /// Registered task name: its presence marks protocol v2.
    pub task: String,
    /// Task id.
    pub id: String,
    /// Alias name for logs.
    #[serde(default)]
    pub shadow: Option<String>,
    /// Not before this ISO 8601 time.
    #[serde(default)]
    pub eta: Option<String>,
    /// Revoke if not started by this ISO 8601 time.
    #[serde(default)]
    pub expires: Option<String>,
    /// Group id.
    #[serde(default)]
    pub group: Option<String>,
    /// Position in the group.
    #[serde(default)]
    pub group_index: Option<u64>,
    /// Retries so far (`null` is read as 0).
    #[serde(default, deserialize_with = "null_as_zero")]
    pub retries: u32,
    /// `[hard, soft]` time limits in seconds.
    #[serde(default, serialize_with = "seconds_as_python_writes")]
    pub timelimit: (Option<f64>, Option<f64>),
    /// Id of the first task of the workflow.
    #[serde(default)]
    pub root_id: Option<String>,
    /// Id of the task that sent this one.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// `repr(args)` for logs.
    #[serde(default)]
    pub argsrepr: Option<String>,
    /// `repr(kwargs)` for logs.
    #[serde(default)]
    pub kwargsrepr: Option<String>,
    /// `gen<pid>@<host>` of the sender.
    #[serde(default)]
    pub origin: Option<String>,
    /// `null` means the worker's task default.
    #[serde(default)]
    pub ignore_result: Option<bool>,
    /// Nesting of `replace()`.
    #[serde(default)]
    pub replaced_task_nesting: Option<u32>,
    /// Canvas stamping.
    #[serde(default)]
    pub stamped_headers: Option<Value>,
    /// Canvas stamps.
    #[serde(default)]
    pub stamps: Option<Value>,
    /// Any other header (custom `apply_async(headers=…)` entries land here).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(deserializer)?.unwrap_or(0))
}

/// The third element of a v2 body: workflow links.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Embed {
    /// Signatures applied to the result on success.
    #[serde(default)]
    pub callbacks: Option<Vec<Value>>,
    /// Signatures applied on failure.
    #[serde(default)]
    pub errbacks: Option<Vec<Value>>,
    /// Remaining chain, reversed (the next task is last).
    #[serde(default)]
    pub chain: Option<Vec<Value>>,
    /// Chord body.
    #[serde(default)]
    pub chord: Option<Value>,
}

/// A decoded task message.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// Protocol headers.
    pub headers: Headers,
    /// Message properties.
    pub properties: Properties,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Workflow links.
    pub embed: Embed,
}

/// Why a raw message is not a task message Celerity can run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Neither a v2 `task` header nor a v1 body with `task`.
    #[error("not a Celery task message: no `task` header and no v1 body")]
    Unknown,
    /// A serializer other than JSON (Celery's default `accept_content` is JSON only).
    #[error("content type `{0}` is not accepted (only application/json)")]
    ContentDisallowed(String),
    /// Compressed bodies are not supported.
    #[error("compressed messages (`{0}`) are not supported")]
    Compressed(String),
    /// The headers or body do not have Celery's shape.
    #[error("invalid task message: {0}")]
    Invalid(String),
}

impl TaskMessage {
    /// The message's task id.
    pub fn id(&self) -> &str {
        &self.headers.id
    }

    /// The task name.
    pub fn task(&self) -> &str {
        &self.headers.task
    }

    /// Encodes the message for a transport. The body is `[args, kwargs, embed]` with every
    /// embed key present, because a 2-element body kills Python workers
    /// (`request.py::Request.__init__` unpacks three).
    pub fn to_raw(&self) -> Result<RawMessage, serde_json::Error> {
        let headers = match serde_json::to_value(&self.headers)? {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let body = to_python_json(&(&self.args, &self.kwargs, &self.embed))?;
        Ok(RawMessage {
            headers,
            properties: self.properties.clone(),
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            body,
        })
    }

    /// Decodes a raw message: protocol v2 when the `task` header is present, else v1
    /// (everything in the body), as `celery/worker/consumer/consumer.py` decides.
    ///
    /// Error texts are bounded (`REPR_MAXSIZE` characters for each quoted part): a decoding
    /// error quotes the value it refused, which may be the whole of a large message.
    pub fn from_raw(raw: &RawMessage) -> Result<TaskMessage, MessageError> {
        if let Some(compression) = raw.headers.get("compression").and_then(Value::as_str) {
            return Err(MessageError::Compressed(short(compression).into_owned()));
        }
        let content_type = raw.content_type.as_str();
        if !(content_type.is_empty() || content_type == "application/json") {
            return Err(MessageError::ContentDisallowed(
                short(content_type).into_owned(),
            ));
        }
        let body: Value = serde_json::from_slice(&raw.body)
            .map_err(|e| invalid(format!("body is not JSON: {e}")))?;
        if raw.headers.contains_key("task") {
            // Read in place: cloning the header map first costs a copy of every header.
            let fields = raw.headers.iter().map(|(k, v)| (k.as_str(), v));
            // The path names the header at fault (`retries: invalid value: integer -1`).
            let headers = serde_path_to_error::deserialize::<_, Headers>(
                serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields),
            )
            .map_err(|e| invalid(format!("header {e}")))?;
            let (args, kwargs, embed) = match body {
                Value::Array(mut parts) if parts.len() == 3 => {
                    let embed = parts.pop().unwrap_or(Value::Null);
                    let kwargs = parts.pop().unwrap_or(Value::Null);
                    let args = parts.pop().unwrap_or(Value::Null);
                    (args, kwargs, embed)
                }
                Value::Array(parts) => {
                    return Err(MessageError::Invalid(format!(
                        "body has {} elements, expected [args, kwargs, embed]",
                        parts.len()
                    )));
                }
                other => {
                    return Err(MessageError::Invalid(format!(
                        "body is {}, expected [args, kwargs, embed]",
                        kind_of(&other)
                    )));
                }
            };
            let embed = match embed {
                Value::Null => Embed::default(),
                other => {
                    serde_json::from_value(other).map_err(|e| invalid(format!("embed: {e}")))?
                }
            };
            return Ok(TaskMessage {
                headers,
                properties: raw.properties.clone(),
                args: as_args(args)?,
                kwargs: as_kwargs(kwargs)?,
                embed,
            });
        }
        match body {
            Value::Object(mut v1) if v1.contains_key("task") => {
                let take_str = |v1: &mut Map<String, Value>, key: &str| {
                    v1.remove(key).and_then(|v| v.as_str().map(str::to_owned))
                };
                let task = take_str(&mut v1, "task").unwrap_or_default();
                let id = take_str(&mut v1, "id")
                    .ok_or_else(|| MessageError::Invalid("v1 body has no `id`".into()))?;
                let timelimit = v1
                    .remove("timelimit")
                    .and_then(|t| serde_json::from_value(t).ok())
                    .unwrap_or((None, None));
                let headers = Headers {
                    task,
                    id,
                    eta: take_str(&mut v1, "eta"),
                    expires: take_str(&mut v1, "expires"),
                    group: take_str(&mut v1, "taskset"),
                    retries: v1.remove("retries").and_then(|r| r.as_u64()).unwrap_or(0) as u32,
                    timelimit,
                    ..Headers::default()
                };
                let embed = Embed {
                    callbacks: v1
                        .remove("callbacks")
                        .and_then(|v| serde_json::from_value(v).ok()),
                    errbacks: v1
                        .remove("errbacks")
                        .and_then(|v| serde_json::from_value(v).ok()),
                    chain: None,
                    chord: v1.remove("chord").filter(|v| !v.is_null()),
                };
                Ok(TaskMessage {
                    headers,
                    properties: raw.properties.clone(),
                    args: as_args(v1.remove("args").unwrap_or(Value::Array(vec![])))?,
                    kwargs: as_kwargs(v1.remove("kwargs").unwrap_or(Value::Object(Map::new())))?,
                    embed,
                })
            }
            _ => Err(MessageError::Unknown),
        }
    }
}

/// An invalid message, its description bounded: serde's errors quote the value refused.
fn invalid(text: String) -> MessageError {
    MessageError::Invalid(match short(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(cut) => cut,
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn as_args(value: Value) -> Result<Vec<Value>, MessageError> {
    match value {
        Value::Array(args) => Ok(args),
        Value::Null => Ok(Vec::new()),
        other => Err(MessageError::Invalid(format!(
            "args is {}, expected an array",
            kind_of(&other)
        ))),
    }
}

fn as_kwargs(value: Value) -> Result<Map<String, Value>, MessageError> {
    match value {
        Value::Object(kwargs) => Ok(kwargs),
        Value::Null => Ok(Map::new()),
        other => Err(MessageError::Invalid(format!(
            "kwargs is {}, expected an object",
            kind_of(&other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_limits_are_written_as_python_writes_them() {
        let limits = |hard, soft| {
            let mut headers: Headers =
                serde_json::from_value(json!({"task": "t", "id": "1"})).unwrap();
            headers.timelimit = (hard, soft);
            serde_json::to_value(&headers).unwrap()["timelimit"].to_string()
        };
        assert_eq!(limits(Some(30.0), Some(20.0)), "[30,20]");
        assert_eq!(limits(Some(30.0), Some(0.5)), "[30,0.5]");
        assert_eq!(limits(None, None), "[null,null]");
    }

    fn raw(headers: Value, body: &str) -> RawMessage {
        RawMessage {
            headers: headers.as_object().cloned().unwrap_or_default(),
            properties: Properties::default(),
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn decodes_a_v2_message_as_python_sends_it() {
        let message = TaskMessage::from_raw(&raw(
            json!({"lang": "py", "task": "tasks.add", "id": "22222222-2222-2222-2222-222222222222",
                   "retries": 0, "timelimit": [3, 1], "stamps": {}, "custom": 1}),
            r#"[[1, 1], {"z": "\u00fc"}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
        ))
        .unwrap();
        assert_eq!(message.task(), "tasks.add");
        assert_eq!(message.args, vec![json!(1), json!(1)]);
        assert_eq!(message.kwargs["z"], json!("ü"));
        assert_eq!(message.headers.timelimit, (Some(3.0), Some(1.0)));
        assert_eq!(message.headers.extra["custom"], json!(1));
    }

    #[test]
    fn decodes_a_v1_message() {
        let message = TaskMessage::from_raw(&raw(
            json!({}),
            r#"{"task": "tasks.add", "id": "abc", "args": [1], "kwargs": {"y": 2}, "retries": 1, "eta": null}"#,
        ))
        .unwrap();
        assert_eq!(
            (message.task(), message.id(), message.headers.retries),
            ("tasks.add", "abc", 1)
        );
        assert_eq!(message.kwargs["y"], json!(2));
    }

    #[test]
    fn rejects_what_is_not_a_task_message() {
        let headers = json!({"task": "t", "id": "1"});
        assert_eq!(
            TaskMessage::from_raw(&raw(json!({}), "[1]")),
            Err(MessageError::Unknown)
        );
        assert!(
            matches!(TaskMessage::from_raw(&raw(headers.clone(), "[[], {}]")), Err(MessageError::Invalid(m)) if m.contains("2 elements"))
        );
        assert!(matches!(
            TaskMessage::from_raw(&raw(headers.clone(), "{not json")),
            Err(MessageError::Invalid(_))
        ));
        assert!(
            matches!(TaskMessage::from_raw(&raw(headers, r#"[{}, {}, {}]"#)), Err(MessageError::Invalid(m)) if m.contains("args"))
        );
        let mut pickle = raw(json!({"task": "t", "id": "1"}), "x");
        pickle.content_type = "application/x-python-serialize".into();
        assert!(matches!(
            TaskMessage::from_raw(&pickle),
            Err(MessageError::ContentDisallowed(_))
        ));
    }
}
