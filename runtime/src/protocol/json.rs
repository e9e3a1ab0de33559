//! JSON as Python's `json.dumps` writes it, and Python `repr` for `argsrepr`.

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::Formatter;

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

/// Python's `repr` of a JSON value, as Celery puts in `argsrepr` / `kwargsrepr`:
/// `(2, 'a', None)` for args (a tuple) and `{'z': True}` for kwargs. Truncated at 1024
/// characters like Celery's `saferepr`.
pub fn py_repr(value: &Value, as_tuple: bool) -> String {
    let mut out = String::new();
    match (value, as_tuple) {
        (Value::Array(items), true) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(item, &mut out);
            }
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        _ => repr_into(value, &mut out),
    }
    if out.chars().count() > 1024 {
        out = out.chars().take(1021).collect::<String>() + "...";
    }
    out
}

fn repr_into(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => {
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
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(&Value::String(key.clone()), out);
                out.push_str(": ");
                repr_into(item, out);
            }
            out.push('}');
        }
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
        assert_eq!(py_repr(&json!([2, 3]), true), "(2, 3)");
        assert_eq!(py_repr(&json!([7]), true), "(7,)");
        assert_eq!(
            py_repr(&json!({"z": "ü", "ok": true, "n": null}), false),
            "{'z': 'ü', 'ok': True, 'n': None}"
        );
        assert_eq!(py_repr(&json!(["it's"]), true), "(\"it's\",)");
    }
}
