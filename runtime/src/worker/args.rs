//! Decoding Celery arguments (positional and keyword) into a generated argument struct,
//! with Python's `TypeError` messages for calls that do not fit.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::protocol::decode_kombu;
use crate::protocol::short;
use crate::spec::TaskSpec;
use crate::task::TaskError;

fn type_error(message: String) -> TaskError {
    TaskError::python("TypeError", "builtins", message)
}

/// Python's way of listing names: `'a'`, `'a' and 'b'`, `'a', 'b' and 'c'`.
fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Binds `args` and `kwargs` to the task's parameters, then decodes them as `A`.
/// Missing, extra, duplicated and ill-typed arguments fail like a Python call would.
pub fn decode_args<A: DeserializeOwned>(
    spec: &TaskSpec,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
) -> Result<A, TaskError> {
    let name = spec.name;
    if args.len() > spec.args.len() {
        let expected = spec.args.len();
        let plural = if expected == 1 { "" } else { "s" };
        let verb = if args.len() == 1 { "was" } else { "were" };
        return Err(type_error(format!(
            "{name}() takes {expected} positional argument{plural} but {} {verb} given",
            args.len()
        )));
    }
    let mut bound = Map::new();
    for (value, param) in args.into_iter().zip(spec.args) {
        bound.insert(param.name.to_owned(), value);
    }
    for (key, value) in kwargs {
        if !spec.args.iter().any(|p| p.name == key) {
            let key = short(&key);
            return Err(type_error(format!(
                "{name}() got an unexpected keyword argument '{key}'"
            )));
        }
        if bound.contains_key(&key) {
            return Err(type_error(format!(
                "{name}() got multiple values for argument '{key}'"
            )));
        }
        bound.insert(key, value);
    }
    let missing: Vec<&str> = spec
        .args
        .iter()
        .filter(|p| p.required && !bound.contains_key(p.name))
        .map(|p| p.name)
        .collect();
    if !missing.is_empty() {
        let plural = if missing.len() == 1 { "" } else { "s" };
        return Err(type_error(format!(
            "{name}() missing {} required argument{plural}: {}",
            missing.len(),
            quoted_list(&missing)
        )));
    }
    // Python clients send dates, times and UUIDs in kombu's envelopes; the message
    // itself keeps them, so a retry republishes exactly what the client sent.
    decode_kombu(Value::Object(bound), serde_path_to_error::deserialize).map_err(|error| {
        let path = error.path().to_string();
        let argument = path.split(['.', '[']).next().unwrap_or(&path).to_owned();
        let inner = error.into_inner();
        let location = if path == argument {
            String::new()
        } else {
            format!(" (at {path})")
        };
        // serde quotes the refused value whole (`invalid type: string "…"`): cut it as
        // Celery's `saferepr` cuts reprs (1024 characters), so a 10 MB argument does not
        // make a 10 MB error, log line and stored FAILURE.
        let inner = inner.to_string();
        let inner = short(&inner);
        let argument = short(&argument);
        let location = short(&location);
        type_error(format!("{name}() argument '{argument}'{location}: {inner}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ArgSpec;
    use serde::Deserialize;
    use serde_json::json;

    static SPEC: TaskSpec = TaskSpec::new(
        "tasks.add",
        &[
            ArgSpec::new("x", true),
            ArgSpec::new("y", true),
            ArgSpec::new("scale", false),
        ],
    );

    #[derive(Debug, Deserialize, PartialEq)]
    struct AddArgs {
        x: i64,
        y: i64,
        #[serde(default = "one")]
        scale: i64,
    }

    fn one() -> i64 {
        1
    }

    fn decode(args: Value, kwargs: Value) -> Result<AddArgs, String> {
        let Value::Array(args) = args else { panic!() };
        let Value::Object(kwargs) = kwargs else {
            panic!()
        };
        decode_args(&SPEC, args, kwargs).map_err(|e| e.to_string())
    }

    #[test]
    fn binds_positional_keyword_and_defaulted_arguments() {
        assert_eq!(
            decode(json!([1, 2]), json!({})),
            Ok(AddArgs {
                x: 1,
                y: 2,
                scale: 1
            })
        );
        assert_eq!(
            decode(json!([]), json!({"y": 2, "x": 1, "scale": 3})),
            Ok(AddArgs {
                x: 1,
                y: 2,
                scale: 3
            })
        );
        assert_eq!(
            decode(json!([1]), json!({"y": 2})),
            Ok(AddArgs {
                x: 1,
                y: 2,
                scale: 1
            })
        );
    }

    #[test]
    fn rejects_calls_python_would_reject() {
        assert_eq!(
            decode(json!([1, 2, 3, 4]), json!({})).unwrap_err(),
            "TypeError: tasks.add() takes 3 positional arguments but 4 were given"
        );
        assert_eq!(
            decode(json!([1]), json!({"x": 2})).unwrap_err(),
            "TypeError: tasks.add() got multiple values for argument 'x'"
        );
        assert_eq!(
            decode(json!([1, 2]), json!({"z": 2})).unwrap_err(),
            "TypeError: tasks.add() got an unexpected keyword argument 'z'"
        );
        assert_eq!(
            decode(json!([]), json!({})).unwrap_err(),
            "TypeError: tasks.add() missing 2 required arguments: 'x' and 'y'"
        );
        assert_eq!(
            decode(json!(["one", 2]), json!({})).unwrap_err(),
            "TypeError: tasks.add() argument 'x': invalid type: string \"one\", expected i64"
        );
    }

    #[test]
    fn reads_dates_and_uuids_in_the_envelopes_python_clients_send() {
        #[derive(Debug, Deserialize)]
        struct VisitArgs {
            at: chrono::DateTime<chrono::Utc>,
            on: chrono::NaiveDate,
            by: uuid::Uuid,
        }
        static VISIT: TaskSpec = TaskSpec::new(
            "tasks.visit",
            &[
                ArgSpec::new("at", true),
                ArgSpec::new("on", true),
                ArgSpec::new("by", true),
            ],
        );
        let Value::Object(kwargs) = json!({
            "on": {"__type__": "date", "__value__": "2024-01-02"},
            "by": {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}},
        }) else {
            unreachable!()
        };
        let at = json!({"__type__": "datetime", "__value__": "2024-01-02T03:04:05.5"});
        let visit: VisitArgs = decode_args(&VISIT, vec![at], kwargs).unwrap();
        assert_eq!(visit.at.to_rfc3339(), "2024-01-02T03:04:05.500+00:00");
        assert_eq!(visit.on.to_string(), "2024-01-02");
        assert_eq!(visit.by.to_string(), "12345678-1234-5678-1234-567812345678");
    }

    #[test]
    fn python_decimals_reach_a_decimal_exactly_and_an_f64_as_the_nearest_float() {
        static PRICED: TaskSpec = TaskSpec::new(
            "tasks.priced",
            &[ArgSpec::new("price", true), ArgSpec::new("weight", true)],
        );
        #[derive(Debug, Deserialize)]
        struct Exact {
            price: crate::Decimal,
        }
        #[derive(Debug, Deserialize)]
        struct Mixed {
            price: crate::Decimal,
            weight: f64,
        }
        static EXACT: TaskSpec = TaskSpec::new("tasks.exact", &[ArgSpec::new("price", true)]);
        let envelope = |text: &str| json!({"__type__": "decimal", "__value__": text});
        let exact: Exact = decode_args(
            &EXACT,
            vec![envelope("12345678901234567890.12")],
            Map::new(),
        )
        .unwrap();
        assert_eq!(exact.price.to_string(), "12345678901234567890.12");
        let mixed: Mixed = decode_args(
            &PRICED,
            vec![envelope("19.99"), envelope("0.25")],
            Map::new(),
        )
        .unwrap();
        assert_eq!(
            (mixed.price.to_string(), mixed.weight),
            ("19.99".into(), 0.25)
        );
    }
}
