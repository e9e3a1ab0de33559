//! kombu's Redis transport format (`kombu/transport/redis.py`, `virtual/base.py`): the
//! JSON envelope around each message, and the list keys of priority buckets.
//!
//! ```json
//! {"body": "<base64>", "content-encoding": "utf-8", "content-type": "application/json",
//!  "headers": {...}, "properties": {"correlation_id": "...", "reply_to": "...",
//!  "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"},
//!  "priority": 0, "body_encoding": "base64", "delivery_tag": "<uuid4>"}}
//! ```

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::protocol::{Properties, RawMessage, to_python_json_sized};

/// kombu's separator between a queue name and its priority step (`sep`).
pub const PRIORITY_SEPARATOR: &str = "\x06\x16";

/// kombu's priority steps (`priority_steps`): 0–2, 3–5, 6–8, 9.
pub const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// The list a message of `priority` is pushed to: `queue` for 0–2, else
/// `queue\x06\x16<step>` (`Channel._q_for_pri`).
pub fn priority_key(queue: &str, priority: u8) -> String {
    let priority = priority.min(9);
    let step = PRIORITY_STEPS
        .iter()
        .rev()
        .find(|s| **s <= priority)
        .copied()
        .unwrap_or(0);
    if step == 0 {
        queue.to_owned()
    } else {
        format!("{queue}{PRIORITY_SEPARATOR}{step}")
    }
}

/// The keys a consumer pops from, in kombu's order: priority-major, so that priority 0 of
/// every queue comes before priority 3 of any (`MultiChannelPoller`, `_brpop_start`).
pub fn consume_keys(queues: &[String]) -> Vec<String> {
    PRIORITY_STEPS
        .iter()
        .flat_map(|step| queues.iter().map(move |q| priority_key(q, *step)))
        .collect()
}

/// The queue a list key belongs to (`key.rsplit(sep, 1)[0]`).
pub fn queue_of_key(key: &str) -> &str {
    match key.rsplit_once(PRIORITY_SEPARATOR) {
        Some((queue, step)) if step.parse::<u8>().is_ok() => queue,
        _ => key,
    }
}

/// Where a message was routed, kept with it in the `unacked` hash.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeliveryInfo {
    /// The exchange (`""` for the default exchange).
    pub exchange: String,
    /// The routing key (the queue name for the default exchange).
    pub routing_key: String,
}

/// The envelope as read. The body borrows from the input where it has no escapes (base64
/// never has), and the headers map is sized for Celery's headers up front.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    body: std::borrow::Cow<'a, str>,
    #[serde(rename = "content-encoding", default)]
    content_encoding: Option<String>,
    #[serde(rename = "content-type", default)]
    content_type: Option<String>,
    #[serde(default, deserialize_with = "headers_map")]
    headers: Map<String, Value>,
    #[serde(default)]
    properties: ReadProperties,
}

/// Room for Celery's protocol v2 headers (19) and a few more, so reading them does not
/// grow and rehash the map several times.
const HEADERS_CAPACITY: usize = 24;

fn headers_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    struct Headers;
    impl<'de> serde::de::Visitor<'de> for Headers {
        type Value = Map<String, Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of headers")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut entries: A,
        ) -> Result<Self::Value, A::Error> {
            let mut map =
                Map::with_capacity(entries.size_hint().unwrap_or(0).max(HEADERS_CAPACITY));
            while let Some((key, value)) = entries.next_entry::<String, Value>()? {
                map.insert(key, value);
            }
            Ok(map)
        }
    }
    deserializer.deserialize_map(Headers)
}

/// The envelope as written: [`Envelope`]'s layout over borrowed parts, so wrapping a
/// message copies nothing but its encoded body.
#[derive(Serialize)]
struct WrittenEnvelope<'a> {
    body: String,
    #[serde(rename = "content-encoding")]
    content_encoding: &'a str,
    #[serde(rename = "content-type")]
    content_type: &'a str,
    headers: &'a Map<String, Value>,
    properties: WrittenProperties<'a>,
}

/// Properties as kombu writes them, in its order: the message's own, then
/// `delivery_info`, `priority`, `body_encoding`, `delivery_tag`
/// (`virtual/base.py::Channel._inplace_augment_message`).
#[derive(Serialize)]
struct WrittenProperties<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery_mode: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration: Option<&'a str>,
    delivery_info: &'a DeliveryInfo,
    priority: u8,
    body_encoding: &'static str,
    delivery_tag: &'a str,
}

/// kombu's properties: the message's own ([`Properties`]' fields, listed here rather than
/// flattened, which would buffer every entry first) and the transport's.
#[derive(Deserialize, Default)]
struct ReadProperties {
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    delivery_mode: Option<u8>,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    expiration: Option<String>,
    #[serde(default)]
    delivery_info: Option<Map<String, Value>>,
    #[serde(default)]
    body_encoding: Option<String>,
    #[serde(default)]
    delivery_tag: Option<String>,
}

/// A message read from a kombu envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrapped {
    /// The message.
    pub message: RawMessage,
    /// The publisher's delivery tag: the key of the `unacked` hash.
    pub delivery_tag: String,
    /// Where it was routed.
    pub delivery_info: DeliveryInfo,
    /// Set by kombu when it restored the message after a lost consumer.
    pub redelivered: bool,
}

/// Why an envelope cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a kombu message envelope: {0}")]
pub struct EnvelopeError(pub String);

/// Wraps a message as kombu's Redis transport does: base64 body, hyphenated content keys,
/// and the `delivery_info` and `delivery_tag` Python consumers require (without them a
/// Python worker crashes or loses the message: rusty-celery#253).
pub fn wrap(message: &RawMessage, info: &DeliveryInfo, delivery_tag: &str) -> Vec<u8> {
    let properties = &message.properties;
    let envelope = WrittenEnvelope {
        body: base64::engine::general_purpose::STANDARD.encode(&message.body),
        content_encoding: &message.content_encoding,
        content_type: &message.content_type,
        headers: &message.headers,
        properties: WrittenProperties {
            correlation_id: properties.correlation_id.as_deref(),
            reply_to: properties.reply_to.as_deref(),
            delivery_mode: properties.delivery_mode,
            expiration: properties.expiration.as_deref(),
            delivery_info: info,
            priority: properties.priority.unwrap_or(0),
            body_encoding: "base64",
            delivery_tag,
        },
    };
    // The body, the headers (about as large for a task message) and the properties.
    let size = envelope.body.len() + message.body.len() + 512;
    // Serialising strings, maps and numbers cannot fail.
    to_python_json_sized(&envelope, size).unwrap_or_default()
}

/// Reads a kombu envelope. The body is base64-decoded when `body_encoding` says so and
/// used as-is when it is absent, as kombu does.
pub fn unwrap(bytes: &[u8]) -> Result<Unwrapped, EnvelopeError> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError(e.to_string()))?;
    let body = match envelope.properties.body_encoding.as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(envelope.body.as_bytes())
            .map_err(|e| EnvelopeError(format!("body is not base64: {e}")))?,
        _ => envelope.body.into_owned().into_bytes(),
    };
    let delivery_tag = envelope
        .properties
        .delivery_tag
        .ok_or_else(|| EnvelopeError("no properties.delivery_tag".into()))?;
    let info = envelope.properties.delivery_info.unwrap_or_default();
    let text = |key: &str| {
        info.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let flag = |map: &Map<String, Value>| map.get("redelivered").and_then(Value::as_bool);
    let redelivered = flag(&info).or(flag(&envelope.headers)).unwrap_or(false);
    Ok(Unwrapped {
        delivery_info: DeliveryInfo {
            exchange: text("exchange"),
            routing_key: text("routing_key"),
        },
        message: RawMessage {
            headers: envelope.headers,
            properties: Properties {
                correlation_id: envelope.properties.correlation_id,
                reply_to: envelope.properties.reply_to,
                delivery_mode: envelope.properties.delivery_mode,
                priority: envelope.properties.priority,
                expiration: envelope.properties.expiration,
            },
            content_type: envelope
                .content_type
                .unwrap_or_else(|| "application/json".into()),
            content_encoding: envelope.content_encoding.unwrap_or_else(|| "utf-8".into()),
            body,
        },
        delivery_tag,
        redelivered,
    })
}

/// What can be read of an envelope [`unwrap`] refuses (a body that is not base64, a
/// property of the wrong type): its headers, the properties a result needs (correlation id,
/// reply-to) and its content type, with an empty body. The worker uses them to say which
/// task it was and to record why it failed. Nothing is read from something that is not a
/// JSON object; the body is skipped without being copied.
pub fn salvage(bytes: &[u8]) -> RawMessage {
    #[derive(Deserialize)]
    struct Parts {
        #[serde(default)]
        headers: Value,
        #[serde(default)]
        properties: Value,
        #[serde(rename = "content-type", default)]
        content_type: Value,
        #[serde(rename = "content-encoding", default)]
        content_encoding: Value,
    }
    let Ok(parts) = serde_json::from_slice::<Parts>(bytes) else {
        return RawMessage {
            headers: Map::new(),
            properties: Properties::default(),
            content_type: String::new(),
            content_encoding: String::new(),
            body: Vec::new(),
        };
    };
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let properties = &parts.properties;
    RawMessage {
        headers: match parts.headers {
            Value::Object(headers) => headers,
            _ => Map::new(),
        },
        properties: Properties {
            correlation_id: text(properties.get("correlation_id")),
            reply_to: text(properties.get("reply_to")),
            ..Properties::default()
        },
        content_type: text(Some(&parts.content_type)).unwrap_or_default(),
        content_encoding: text(Some(&parts.content_encoding)).unwrap_or_default(),
        body: Vec::new(),
    }
}

/// Only the delivery tag of an envelope, for one [`unwrap`] refuses (a body that is not
/// base64, a property of the wrong type) but that the fetch script recorded by its tag.
pub fn delivery_tag(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Tagged {
        properties: Tag,
    }
    #[derive(Deserialize)]
    struct Tag {
        delivery_tag: String,
    }
    serde_json::from_slice::<Tagged>(bytes)
        .ok()
        .map(|tagged| tagged.properties.delivery_tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskMessage;

    /// `app.send_task('tasks.add', args=(1, 1), countdown=30, expires=120, priority=5,
    /// queue='other')` as Celery 5.7 wrote it to Redis (captured, from the protocol notes).
    const CAPTURED: &str = r#"{"body": "W1sxLCAxXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "22222222-2222-2222-2222-222222222222", "shadow": null, "eta": "2026-11-21T11:25:14.149451+00:00", "expires": "2026-11-21T11:26:44.149451+00:00", "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "22222222-2222-2222-2222-222222222222", "parent_id": null, "argsrepr": "(1, 1)", "kwargsrepr": "{}", "origin": "gen5559@vm", "ignore_result": null, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "22222222-2222-2222-2222-222222222222", "reply_to": "9b79ad34-4c18-3b44-bb36-d522e7c20eea", "delivery_mode": 2, "expiration": "120000", "delivery_info": {"exchange": "", "routing_key": "other"}, "priority": 5, "body_encoding": "base64", "delivery_tag": "ed6ae3a4-37e9-4270-b151-c4c3e5e58dba"}}"#;

    #[test]
    fn reads_the_envelope_python_celery_writes() {
        let unwrapped = unwrap(CAPTURED.as_bytes()).unwrap();
        assert_eq!(
            unwrapped.delivery_tag,
            "ed6ae3a4-37e9-4270-b151-c4c3e5e58dba"
        );
        assert_eq!(
            unwrapped.delivery_info,
            DeliveryInfo {
                exchange: String::new(),
                routing_key: "other".into()
            }
        );
        assert!(!unwrapped.redelivered);
        assert_eq!(unwrapped.message.properties.priority, Some(5));
        let task = TaskMessage::from_raw(&unwrapped.message).unwrap();
        assert_eq!(
            (task.task(), task.args.clone()),
            ("tasks.add", vec![Value::from(1), Value::from(1)])
        );
    }

    #[test]
    fn writes_the_envelope_byte_for_byte_as_kombu_does() {
        let unwrapped = unwrap(CAPTURED.as_bytes()).unwrap();
        let rewrapped = wrap(
            &unwrapped.message,
            &unwrapped.delivery_info,
            &unwrapped.delivery_tag,
        );
        assert_eq!(String::from_utf8(rewrapped).unwrap(), CAPTURED);
    }

    #[test]
    fn rejects_envelopes_a_consumer_cannot_acknowledge() {
        assert!(unwrap(b"{nope").is_err());
        let no_tag = r#"{"body": "W10=", "properties": {"body_encoding": "base64"}}"#;
        assert_eq!(
            unwrap(no_tag.as_bytes()).unwrap_err().0,
            "no properties.delivery_tag"
        );
        let plain = r#"{"body": "[[], {}, {}]", "properties": {"delivery_tag": "t"}}"#;
        assert_eq!(
            unwrap(plain.as_bytes()).unwrap().message.body,
            b"[[], {}, {}]",
            "no body_encoding: the body is used as-is"
        );
    }

    #[test]
    fn priorities_map_to_kombus_bucket_keys_in_consume_order() {
        assert_eq!(priority_key("celery", 0), "celery");
        assert_eq!(priority_key("celery", 2), "celery");
        assert_eq!(priority_key("other", 5), "other\x06\x163");
        assert_eq!(priority_key("celery", 9), "celery\x06\x169");
        assert_eq!(priority_key("celery", 200), "celery\x06\x169");
        assert_eq!(
            consume_keys(&["alpha".into(), "beta".into()]),
            [
                "alpha",
                "beta",
                "alpha\x06\x163",
                "beta\x06\x163",
                "alpha\x06\x166",
                "beta\x06\x166",
                "alpha\x06\x169",
                "beta\x06\x169"
            ]
        );
        assert_eq!(queue_of_key("beta\x06\x166"), "beta");
        assert_eq!(queue_of_key("celery"), "celery");
    }
}
