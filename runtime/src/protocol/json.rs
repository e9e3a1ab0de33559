//! JSON as Python's `json.dumps` writes it, and Python `repr` for `argsrepr`.

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::{Map, Value};

/// Serialises like Python's `json.dumps` with its defaults: `", "` and `": "` separators
/// and `ensure_ascii` (every non-ASCII character escaped as `\uXXXX`). Celery readers do
/// not care, but byte-identical messages make wire comparisons with Celery exact.
pub fn to_python_json(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
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

/// Python's `repr` of positional args as a tuple, as Celery puts in `argsrepr`:
/// `(2, 'a', None)`, `(7,)`. Truncated at 1024 characters like Celery's `saferepr`.
pub fn args_repr(args: &[Value]) -> String {
    let mut out = String::from("(");
    items_into(args, &mut out);
    if args.len() == 1 {
        out.push(',');
    }
    out.push(')');
    truncate(out)
}

/// Python's `repr` of keyword args, as Celery puts in `kwargsrepr`: `{'z': True}`.
pub fn kwargs_repr(kwargs: &Map<String, Value>) -> String {
    let mut out = String::new();
    map_into(kwargs, &mut out);
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
}
