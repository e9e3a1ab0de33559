//! Messages on the AMQP wire: Celery's headers as an AMQP field table and its properties as
//! AMQP basic properties, both ways.
//!
//! Value types follow py-amqp (`amqp/serialization.py::_write_item`): `None` is void (`V`),
//! strings are long strings (`S`, never `s`, which RabbitMQ reads as a 16-bit int), ints in
//! the int32 range are `I` and larger ones 64-bit, floats `d`, lists `A`, dicts `F`. The
//! types matter beyond decoding: RabbitMQ compares queue arguments with their types, so an
//! `x-max-priority` of 10 sent as a 64-bit int is "inequivalent" to Python's `I` 10.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

use crate::protocol::{Properties, RawMessage};

/// A JSON object as an AMQP field table.
pub(crate) fn table(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in map {
        table.insert(ShortString::from(key.as_str()), amqp_value(value));
    }
    table
}

/// A JSON value as py-amqp would write the equivalent Python value.
pub(crate) fn amqp_value(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => match i32::try_from(i) {
                Ok(small) => AMQPValue::LongInt(small),
                Err(_) => AMQPValue::LongLongInt(i),
            },
            // Above i64::MAX: AMQP has no wider signed type; py-amqp would fail outright.
            (None, Some(u)) => AMQPValue::Double(u as f64),
            (None, None) => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(amqp_value).collect::<Vec<_>>(),
        )),
        Value::Object(map) => AMQPValue::FieldTable(table(map)),
    }
}

/// An AMQP field table as a JSON object.
pub(crate) fn json_object(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(key, value)| (key.as_str().to_owned(), json_value(value)))
        .collect()
}

/// An AMQP value as JSON, reading every type py-amqp and RabbitMQ produce.
pub(crate) fn json_value(value: &AMQPValue) -> Value {
    let text = |bytes: &[u8]| Value::String(String::from_utf8_lossy(bytes).into_owned());
    match value {
        AMQPValue::Void => Value::Null,
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        // Python writes datetimes as a timestamp in seconds.
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::Float(f) => float(f64::from(*f)),
        AMQPValue::Double(f) => float(*f),
        AMQPValue::DecimalValue(d) => float(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => text(s.as_bytes()),
        AMQPValue::ByteArray(b) => text(b.as_slice()),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(json_value).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(json_object(table)),
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The basic properties Celery publishes a message with (`kombu/messaging.py::Producer._publish`
/// through py-amqp): content type and encoding, the headers table, and the message's own
/// properties. Nothing else: Celery sends no `message_id`, `timestamp` or `type`.
pub(crate) fn basic_properties(message: &RawMessage) -> BasicProperties {
    let own = &message.properties;
    let mut properties = BasicProperties::default()
        .with_content_type(ShortString::from(message.content_type.as_str()))
        .with_content_encoding(ShortString::from(message.content_encoding.as_str()))
        .with_headers(table(&message.headers));
    if let Some(mode) = own.delivery_mode {
        properties = properties.with_delivery_mode(mode);
    }
    if let Some(priority) = own.priority {
        properties = properties.with_priority(priority);
    }
    if let Some(id) = &own.correlation_id {
        properties = properties.with_correlation_id(ShortString::from(id.as_str()));
    }
    if let Some(reply_to) = &own.reply_to {
        properties = properties.with_reply_to(ShortString::from(reply_to.as_str()));
    }
    if let Some(expiration) = &own.expiration {
        properties = properties.with_expiration(ShortString::from(expiration.as_str()));
    }
    properties
}

/// A received message in the transport-neutral form the worker decodes.
pub(crate) fn raw_message(properties: &BasicProperties, body: Vec<u8>) -> RawMessage {
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    RawMessage {
        headers: properties
            .headers()
            .as_ref()
            .map(json_object)
            .unwrap_or_default(),
        properties: Properties {
            correlation_id: text(properties.correlation_id()),
            reply_to: text(properties.reply_to()),
            delivery_mode: *properties.delivery_mode(),
            priority: *properties.priority(),
            expiration: text(properties.expiration()),
        },
        content_type: text(properties.content_type()).unwrap_or_default(),
        content_encoding: text(properties.content_encoding()).unwrap_or_default(),
        body,
    }
}

/// Reads a message as it arrives from RabbitMQ: `properties` is the property list of an
/// AMQP content header frame, parsed by lapin's own parser (`parse_properties`), and
/// `body` the content. `None` when lapin refuses the bytes (it would close the channel).
/// For the fuzz harness, which reaches the decoding a live consumer does without a broker.
#[doc(hidden)]
pub fn message_from_wire(properties: &[u8], body: Vec<u8>) -> Option<RawMessage> {
    let (_, properties) = lapin::protocol::basic::parse_properties(properties).ok()?;
    Some(raw_message(&properties, body))
}

/// The property list of the content header `message` is published with: the bytes
/// [`message_from_wire`] reads. For the fuzz harness's seeds.
#[doc(hidden)]
pub fn message_to_wire(message: &RawMessage) -> Vec<u8> {
    let properties = basic_properties(message);
    let write = lapin::protocol::basic::gen_properties::<Vec<u8>>(&properties);
    write(Vec::new().into()).map_or_else(|_| Vec::new(), |written| written.write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_take_the_types_py_amqp_writes() {
        let headers = json!({"retries": 0, "big": 5_000_000_000i64, "eta": null, "ok": true,
                             "timelimit": [null, 2.5], "stamps": {}, "task": "t.x"});
        let table = table(headers.as_object().unwrap());
        let get = |key: &str| table.inner().get(key).unwrap().clone();
        assert_eq!(get("retries"), AMQPValue::LongInt(0));
        assert_eq!(get("big"), AMQPValue::LongLongInt(5_000_000_000));
        assert_eq!(get("eta"), AMQPValue::Void);
        assert_eq!(get("ok"), AMQPValue::Boolean(true));
        assert_eq!(
            get("timelimit"),
            AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::Double(2.5)].into())
        );
        assert_eq!(get("stamps"), AMQPValue::FieldTable(FieldTable::default()));
        assert_eq!(get("task"), AMQPValue::LongString("t.x".into()));
        assert_eq!(Value::Object(json_object(&table)), headers);
    }

    #[test]
    fn every_type_python_or_rabbitmq_sends_is_read() {
        let read = json_value;
        assert_eq!(read(&AMQPValue::ShortInt(-3)), json!(-3));
        assert_eq!(read(&AMQPValue::ShortString("s".into())), json!("s"));
        assert_eq!(
            read(&AMQPValue::ByteArray(b"raw".as_slice().into())),
            json!("raw")
        );
        assert_eq!(
            read(&AMQPValue::Timestamp(1_700_000_000)),
            json!(1_700_000_000u64)
        );
        let decimal = lapin::types::DecimalValue {
            scale: 2,
            value: 1234,
        };
        assert_eq!(read(&AMQPValue::DecimalValue(decimal)), json!(12.34));
        assert_eq!(read(&AMQPValue::Float(0.5)), json!(0.5));
    }

    #[test]
    fn properties_round_trip_as_celery_sets_them() {
        let message = RawMessage {
            headers: Map::new(),
            properties: Properties {
                correlation_id: Some("id-1".into()),
                reply_to: Some("oid".into()),
                delivery_mode: Some(2),
                priority: Some(0),
                expiration: Some("60000".into()),
            },
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            body: b"[[], {}, {}]".to_vec(),
        };
        let properties = basic_properties(&message);
        assert!(properties.message_id().is_none() && properties.timestamp().is_none());
        assert_eq!(raw_message(&properties, message.body.clone()), message);
        let wire = message_to_wire(&message);
        assert_eq!(
            message_from_wire(&wire, message.body.clone()),
            Some(message)
        );
    }
}
