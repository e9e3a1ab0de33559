//! Messages the worker refuses before any task sees them: too large, unreadable by the
//! transport, not JSON, of a disallowed content type, or with headers out of Celery's
//! shape.
//!
//! Each is logged once, rejected without requeue (a message that cannot be read now will
//! not be readable later: `celery/worker/consumer/consumer.py::on_invalid_task` rejects
//! it too), and, when a task id can still be read, recorded as a FAILURE that says why, so
//! a client waiting on the id fails instead of waiting forever. Celery records one in the
//! cases its pool refuses a message it already accepted (the pool's `loads` raises
//! `ContentDisallowed` for a pickled v2 body, `DecodeError` for a body that is not JSON,
//! and `Request.on_failure` stores it); Celerity does the same for every refusal with an id.

use serde_json::Value;

use super::log;
use super::shared::Shared;
use crate::broker::Acknowledger;
#[cfg(test)]
use crate::protocol::TaskMessage;
use crate::protocol::{ExceptionInfo, MessageError, RawMessage, ResultMeta, TaskState, short};
use crate::traceback::Traceback;

/// The default largest message the worker reads: 16 MiB, RabbitMQ's default
/// `max_message_size` (4.0 and later), so a message RabbitMQ accepts by default is accepted
/// here on every transport. A body this size decodes into several times as much memory.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Why a message is refused, and the exception its FAILURE records.
#[derive(Debug)]
pub(super) struct Refusal {
    /// One line, bounded (`REPR_MAXSIZE` characters for each quoted part).
    pub reason: String,
    /// What the FAILURE records; `None` for a message that is no task message at all.
    pub exception: Option<Box<ExceptionInfo>>,
}

impl Refusal {
    /// Celery's `InvalidTaskError`: the message does not follow the task protocol.
    pub(crate) fn invalid(reason: String) -> Refusal {
        let exception = ExceptionInfo::new("InvalidTaskError", "celery.exceptions", reason.clone());
        Refusal {
            reason,
            exception: Some(Box::new(exception)),
        }
    }

    /// kombu's `DecodeError`: the body cannot be decoded.
    fn undecodable(reason: String) -> Refusal {
        let exception = ExceptionInfo::new("DecodeError", "kombu.exceptions", reason.clone());
        Refusal {
            reason,
            exception: Some(Box::new(exception)),
        }
    }

    /// The refusal of a message [`TaskMessage::from_raw`] cannot decode.
    pub(crate) fn of(error: MessageError) -> Refusal {
        let reason = error.to_string();
        match error {
            MessageError::ContentDisallowed(content_type) => {
                // kombu's wording (`kombu/serialization.py::_for_untrusted_content`), so a
                // Python client reads the error it knows.
                let text = format!(
                    "Refusing to deserialize untrusted content of type {}",
                    with_alias(&content_type)
                );
                let exception = ExceptionInfo::new("ContentDisallowed", "kombu.exceptions", text);
                Refusal {
                    reason,
                    exception: Some(Box::new(exception)),
                }
            }
            MessageError::Compressed(_) => Refusal::undecodable(reason),
            MessageError::Invalid(text) if text.starts_with("body is not JSON") => {
                Refusal::undecodable(reason)
            }
            // Neither a `task` header nor a v1 body: Celery's `on_unknown_message` logs and
            // rejects it, and records nothing, whatever id it carries.
            MessageError::Unknown => Refusal {
                reason,
                exception: None,
            },
            _ => Refusal::invalid(reason),
        }
    }
}

/// kombu's `parenthesize_alias`: `pickle (application/x-python-serialize)`.
fn with_alias(content_type: &str) -> String {
    let alias = match content_type {
        "application/x-python-serialize" => "pickle",
        "application/x-yaml" => "yaml",
        "application/x-msgpack" => "msgpack",
        "application/data" => "raw",
        other => return other.to_owned(),
    };
    format!("{alias} ({content_type})")
}

/// Refuses `raw` before decoding it when the transport could not read it (`malformed`
/// is its reason) or when its body and headers together pass `max_size` bytes: decoding
/// a message takes several times its size in memory.
pub(super) fn screen(
    raw: &RawMessage,
    malformed: Option<String>,
    max_size: usize,
) -> Result<(), Refusal> {
    if let Some(reason) = malformed {
        return Err(Refusal::undecodable(short(&reason).into_owned()));
    }
    let size = message_size(raw, max_size);
    if size > max_size {
        return Err(Refusal::invalid(format!(
            "message of {size} bytes or more is larger than the worker's limit of {max_size} bytes (max message size)"
        )));
    }
    Ok(())
}

/// Screens `raw`, then decodes it.
#[cfg(test)]
fn decode(
    raw: &RawMessage,
    malformed: Option<String>,
    max_size: usize,
) -> Result<TaskMessage, Refusal> {
    screen(raw, malformed, max_size)?;
    TaskMessage::from_raw(raw).map_err(Refusal::of)
}

/// The body's size plus the text of the headers, counted until it passes `limit` (the
/// headers of a Redis envelope can be as large as its body).
fn message_size(raw: &RawMessage, limit: usize) -> usize {
    fn walk(value: &Value, total: &mut usize, limit: usize) {
        if *total > limit {
            return;
        }
        match value {
            Value::String(text) => *total += text.len(),
            Value::Array(items) => items.iter().for_each(|item| walk(item, total, limit)),
            Value::Object(map) => map.iter().for_each(|(key, item)| {
                *total += key.len();
                walk(item, total, limit);
            }),
            // Numbers, booleans, null: a few bytes each.
            _ => *total += 8,
        }
    }
    let mut total = raw.body.len();
    for (key, value) in &raw.headers {
        total += key.len();
        walk(value, &mut total, limit);
    }
    total
}

/// Logs `refusal` once, records it as the task's FAILURE when the message has an id, and
/// rejects the message without requeue.
pub(super) async fn refuse(
    shared: &Shared,
    raw: &RawMessage,
    queue: &str,
    refusal: Refusal,
    acker: Box<dyn Acknowledger>,
) {
    let text = |key: &str| raw.headers.get(key).and_then(Value::as_str);
    let id = text("id");
    log::refused(text("task"), id, queue, raw.body.len(), &refusal.reason);
    if let (Some(id), Some(exception)) = (id, refusal.exception.as_deref()) {
        let task = text("task").unwrap_or("<unknown task>");
        let traceback = Traceback::here().render(task, exception);
        let meta = ResultMeta::exception(id, TaskState::Failure, exception, Some(traceback))
            .with_request(&shared.unknown_request());
        if let Err(error) = shared
            .client
            .backend()
            .store_for(&meta, &raw.properties)
            .await
        {
            tracing::error!(%error, id = %short(id), "could not store the FAILURE of a refused message");
        }
    }
    if let Err(error) = acker.reject(false).await {
        tracing::error!(%error, "could not reject a message with the broker");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Properties;
    use serde_json::json;

    fn raw(headers: Value, content_type: &str, body: &[u8]) -> RawMessage {
        RawMessage {
            headers: headers.as_object().cloned().unwrap_or_default(),
            properties: Properties::default(),
            content_type: content_type.into(),
            content_encoding: "utf-8".into(),
            body: body.to_vec(),
        }
    }

    #[test]
    fn refusals_carry_the_exception_celery_or_kombu_raise() {
        let headers = json!({"task": "t", "id": "1"});
        let pickle = decode(
            &raw(headers.clone(), "application/x-python-serialize", b"x"),
            None,
            100,
        )
        .unwrap_err();
        assert_eq!(
            pickle.exception.as_ref().unwrap().exc_type,
            "ContentDisallowed"
        );
        assert_eq!(
            pickle.exception.as_ref().unwrap().message(),
            "Refusing to deserialize untrusted content of type pickle (application/x-python-serialize)"
        );
        let not_json =
            decode(&raw(headers.clone(), "application/json", b"{"), None, 100).unwrap_err();
        assert_eq!(not_json.exception.as_ref().unwrap().exc_type, "DecodeError");
        let retries = json!({"task": "t", "id": "1", "retries": -1});
        let invalid = decode(
            &raw(retries, "application/json", b"[[], {}, {}]"),
            None,
            100,
        )
        .unwrap_err();
        assert_eq!(
            invalid.exception.as_ref().unwrap().exc_type,
            "InvalidTaskError"
        );
        assert!(invalid.reason.contains("retries"), "{}", invalid.reason);
        let unreadable = decode(
            &raw(headers.clone(), "", b""),
            Some("body is not base64".into()),
            100,
        )
        .unwrap_err();
        assert_eq!(
            (
                unreadable.exception.as_ref().unwrap().exc_type.as_str(),
                unreadable.reason.as_str()
            ),
            ("DecodeError", "body is not base64")
        );
        let large = decode(&raw(headers, "application/json", &[b' '; 101]), None, 100).unwrap_err();
        assert!(
            large.reason.contains("limit of 100 bytes"),
            "{}",
            large.reason
        );
    }

    #[test]
    fn large_headers_count_against_the_limit() {
        let big = json!({"task": "x".repeat(200), "id": "1"});
        assert!(message_size(&raw(big, "application/json", b"[]"), 100) > 100);
    }
}
