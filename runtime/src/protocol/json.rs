//! JSON as Python's `json.dumps` writes it, and Python `repr` for `argsrepr`.

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::{Map, Value};

use super::result::parse_celery_time;

/// Serialises like Python's `json.dumps` with its defaults: `", "` and `": "` separators
/// and `ensure_ascii` (every non-ASCII character escaped as `\uXXXX`). Celery readers do
/// not care, but byte-identical messages make wire comparisons with Celery exact.
pub fn to_python_json(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    to_python_json_sized(value, 128)
}

/// [`to_python_json`] into a buffer made for about `capacity` bytes, so that a large
/// value is not copied again each time the buffer grows.
pub(crate) fn to_python_json_sized(
    value: &impl Serialize,
    capacity: usize,
) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        if fragment.is_ascii() {
            return writer.write_all(fragment.as_bytes());
        }
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Replaces kombu's JSON envelopes, `{"__type__": T, "__value__": V}` (kombu ≥ 5.3,
/// `kombu/utils/json.py`), with the plain forms Celerity's types read, so that arguments
/// and results written by Python Celery decode like Celerity's own:
///
/// | `__type__` | becomes |
/// |---|---|
/// | `datetime` | the ISO 8601 text; a naive time gets `+00:00`, as Celery reads naive times as UTC |
/// | `date`, `time` | the ISO 8601 text |
/// | `uuid` (`{"hex": …}`) | the hyphenated text |
/// | `bytes` (UTF-8 text), `base64` | base64 text, the wire form of `bytes` in a schema |
/// | `decimal` | a number (the nearest `f64`) |
///
/// Other objects, and envelopes of other types, are left as they are.
pub fn from_kombu_json(mut value: Value) -> Value {
    unwrap_kombu(&mut value, Decimals::Number);
    value
}

/// How kombu's `decimal` envelopes are read: as their exact text, which
/// [`Decimal`](crate::Decimal) reads, or as the nearest number, which `f64` reads.
#[derive(Debug, Clone, Copy)]
enum Decimals {
    Text,
    Number,
}

/// Decodes `value`, written with kombu's JSON envelopes, with `decode`: first with
/// `decimal` envelopes as exact text, then, when that fails and the value held any, with
/// them as numbers. So a Python `Decimal` reaches a `decimal` exactly and an `f64` as the
/// nearest float. When both fail, the first error is returned.
pub(crate) fn decode_kombu<T, E>(
    value: Value,
    decode: impl Fn(Value) -> Result<T, E>,
) -> Result<T, E> {
    let as_numbers = holds_decimal(&value).then(|| value.clone());
    let mut exact = value;
    unwrap_kombu(&mut exact, Decimals::Text);
    decode(exact).or_else(|error| match as_numbers {
        Some(mut value) => {
            unwrap_kombu(&mut value, Decimals::Number);
            decode(value).map_err(|_| error)
        }
        None => Err(error),
    })
}

fn holds_decimal(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(holds_decimal),
        Value::Object(map) if is_envelope(map) => {
            map.get("__type__").and_then(Value::as_str) == Some("decimal")
                || map.get("__value__").is_some_and(holds_decimal)
        }
        Value::Object(map) => map.values().any(holds_decimal),
        _ => false,
    }
}

/// [`from_kombu_json`] in place: only envelopes are replaced, so a value without any
/// (the common case) is walked but not rebuilt.
fn unwrap_kombu(value: &mut Value, decimals: Decimals) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| unwrap_kombu(v, decimals)),
        Value::Object(map) if is_envelope(map) => {
            *value = unwrap_envelope(std::mem::take(map), decimals);
        }
        Value::Object(map) => map.values_mut().for_each(|v| unwrap_kombu(v, decimals)),
        _ => {}
    }
}

fn is_envelope(map: &Map<String, Value>) -> bool {
    map.len() == 2 && map.contains_key("__type__") && map.contains_key("__value__")
}

fn unwrap_envelope(mut map: Map<String, Value>, decimals: Decimals) -> Value {
    use base64::Engine;
    let kind = map
        .get("__type__")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plain = match (kind, map.get("__value__")) {
        ("datetime", Some(Value::String(text))) => Some(Value::String(utc_if_naive(text))),
        ("date" | "time" | "base64", Some(Value::String(text))) => {
            Some(Value::String(text.clone()))
        }
        ("bytes", Some(Value::String(text))) => Some(Value::String(
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
        )),
        ("uuid", Some(Value::Object(fields))) => fields
            .get("hex")
            .and_then(Value::as_str)
            .and_then(|hex| uuid::Uuid::parse_str(hex).ok())
            .map(|id| Value::String(id.hyphenated().to_string())),
        ("decimal", Some(Value::String(text))) => match decimals {
            Decimals::Text => Some(Value::String(text.clone())),
            Decimals::Number => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
        },
        _ => None,
    };
    plain.unwrap_or_else(|| {
        let value = map.remove("__value__").map(|mut value| {
            unwrap_kombu(&mut value, decimals);
            value
        });
        map.insert("__value__".into(), value.unwrap_or(Value::Null));
        Value::Object(map)
    })
}

/// Python's `isoformat()` of a naive datetime has no offset; Celery treats such times as
/// UTC (`celery/utils/time.py::maybe_make_aware`).
fn utc_if_naive(text: &str) -> String {
    if chrono::DateTime::parse_from_rfc3339(text).is_err() && parse_celery_time(text).is_some() {
        format!("{text}+00:00")
    } else {
        text.to_owned()
    }
}

/// Python's `repr` of positional args as a tuple, as Celery puts in `argsrepr`:
/// `(2, 'a', None)`, `(7,)`. Truncated at 1024 characters like Celery's `saferepr`.
pub fn args_repr(args: &[Value]) -> String {
    truncate(tuple_repr(args))
}

/// Python's `repr` of `items` as a tuple, whole: `('a', 5)`, `(7,)`, `()`.
pub(crate) fn tuple_repr(items: &[Value]) -> String {
    let mut out = String::from("(");
    items_into(items, &mut out);
    if items.len() == 1 {
        out.push(',');
    }
    out.push(')');
    out
}

/// Python's `str()` of a JSON value: a string as it is, anything else as its `repr`
/// (`None`, `True`, `5`, `[1, 'a']`, `{'k': None}`).
pub(crate) fn python_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => {
            let mut out = String::new();
            repr_into(other, &mut out);
            out
        }
    }
}

/// Python's `repr` of keyword args, as Celery puts in `kwargsrepr`: `{'z': True}`.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    map_into(kwargs, &mut out);
    truncate(out)
}

/// Python's `repr` of one JSON value, `'text'`, `True`, `None`, `[1, 'a']`, truncated at
/// 1024 characters as Celery's `saferepr` truncates a task's result in its events and logs
/// (`celery/app/task.py`: `resultrepr_maxsize`).
pub(crate) fn value_repr(value: &Value) -> String {
    let mut out = String::new();
    repr_into(value, &mut out);
    truncate(out)
}

fn truncate(out: String) -> String {
    if out.chars().count() > 1024 {
        out.chars().take(1021).collect::<String>() + "..."
    } else {
        out
    }
}

fn items_into(items: &[Value], out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        repr_into(item, out);
    }
}

fn map_into(map: &Map<String, Value>, out: &mut String) {
    out.push('{');
    for (i, (key, item)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        str_into(key, out);
        out.push_str(": ");
        repr_into(item, out);
    }
    out.push('}');
}

fn str_into(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

fn repr_into(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => str_into(s, out),
        Value::Array(items) => {
            out.push('[');
            items_into(items, out);
            out.push(']');
        }
        Value::Object(map) => map_into(map, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_json_like_python_json_dumps() {
        let body = json!([[2, 3], {"z": "ü"}, {"callbacks": null}]);
        assert_eq!(
            String::from_utf8(to_python_json(&body).unwrap()).unwrap(),
            r#"[[2, 3], {"z": "\u00fc"}, {"callbacks": null}]"#
        );
        assert_eq!(
            String::from_utf8(to_python_json(&json!("😀")).unwrap()).unwrap(),
            r#""\ud83d\ude00""#
        );
    }

    #[test]
    fn reads_kombu_envelopes_as_plain_values() {
        let python = json!({
            "at": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05.678901+00:00"},
            "naive": {"__type__": "datetime", "__value__": "2024-01-02T03:04:05"},
            "on": [{"__type__": "date", "__value__": "2024-01-02"}],
            "id": {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
            "text": {"__type__": "bytes", "__value__": "hello"},
            "raw": {"__type__": "base64", "__value__": "/wA="},
            "price": {"__type__": "decimal", "__value__": "1.10"},
            "odd": {"__type__": "frozenset", "__value__": [1]},
            "plain": {"__type__": "x", "__value__": 1, "more": 2},
        });
        assert_eq!(
            from_kombu_json(python),
            json!({
                "at": "2024-01-02T03:04:05.678901+00:00",
                "naive": "2024-01-02T03:04:05+00:00",
                "on": ["2024-01-02"],
                "id": "12345678-1234-5678-1234-567812345678",
                "text": "aGVsbG8=",
                "raw": "/wA=",
                "price": 1.1,
                "odd": {"__type__": "frozenset", "__value__": [1]},
                "plain": {"__type__": "x", "__value__": 1, "more": 2},
            })
        );
    }

    #[test]
    fn reprs_like_python() {
        assert_eq!(args_repr(&[json!(2), json!(3)]), "(2, 3)");
        assert_eq!(args_repr(&[json!(7)]), "(7,)");
        let kwargs = json!({"z": "ü", "ok": true, "n": null});
        assert_eq!(
            kwargs_repr(kwargs.as_object().unwrap()),
            "{'z': 'ü', 'ok': True, 'n': None}"
        );
        assert_eq!(args_repr(&[json!("it's")]), "(\"it's\",)");
    }

    #[test]
    fn strs_like_python() {
        assert_eq!(python_str(&json!("plain text")), "plain text");
        assert_eq!(python_str(&json!(null)), "None");
        assert_eq!(python_str(&json!(false)), "False");
        assert_eq!(python_str(&json!(5)), "5");
        assert_eq!(python_str(&json!([1, "a"])), "[1, 'a']");
        assert_eq!(python_str(&json!({"k": null})), "{'k': None}");
        let long = "x".repeat(2000);
        assert_eq!(
            tuple_repr(&[json!(long), json!(5)]).len(),
            2000 + 7,
            "not truncated"
        );
        assert_eq!(tuple_repr(&[]), "()");
    }
}
