//! The shape of the document: unknown keys at every level (with suggestions), then each
//! task and type deserialised on its own, so that a bad task does not hide the next one.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::diagnostic::did_you_mean;
use crate::locate::{KeyPath, Segment};
use crate::report::{Reporter, child, describe};
use crate::schema::{FieldSpec, RetrySpec, TaskOptions};

/// The property names of a schema-language type, read from its JSON Schema so that the
/// list can never drift from the Rust definition. Computed once per type and process:
/// building a JSON Schema is far slower than checking a mapping's keys.
fn known_keys<T: JsonSchema + 'static>() -> Arc<Vec<String>> {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Arc<Vec<String>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let schema = schemars::schema_for!(T);
            let keys = schema
                .as_object()
                .and_then(|o| o.get("properties"))
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            Arc::new(keys)
        })
        .clone()
}

/// Reports every key of `value` that `T` does not have, then removes those keys so the
/// rest can still be deserialised and checked. False when `value` is no mapping.
pub(super) fn check_keys<T: JsonSchema + 'static>(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    value: &mut Value,
    what: &str,
) -> bool {
    let Value::Mapping(mapping) = value else {
        reporter.error_at_value(
            path,
            format!("expected {what} (a mapping), found {}", describe(value)),
            None,
        );
        return false;
    };
    let known = known_keys::<T>();
    let mut unknown = Vec::new();
    for key in mapping.keys() {
        let Some(text) = key.as_str() else {
            reporter.error_at_value(path, format!("keys of {what} must be strings"), None);
            unknown.push(key.clone());
            continue;
        };
        if !known.iter().any(|k| k == text) {
            // `{type: map<string, T>}` in flow style splits at the comma.
            let split_type = text.contains(['<', '>']).then(|| {
                "a comma inside `{…}` splits the mapping: quote the type, e.g. `type: \"map<string, T>\"`".to_owned()
            });
            let help = did_you_mean(text, known.iter().map(String::as_str))
                .or(split_type)
                .or_else(|| Some(format!("the keys of {what} are: {}", known.join(", "))));
            reporter.error_at_key(
                &child(path, text),
                format!("unknown key `{text}` in {what}"),
                help,
            );
            unknown.push(key.clone());
        }
    }
    for key in unknown {
        mapping.remove(&key);
    }
    true
}

/// Deserialises one piece of the document, reporting a type mismatch at the exact key.
pub(super) fn deserialize<T: DeserializeOwned>(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    value: &Value,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            let mut full = path.to_vec();
            for segment in error.path().iter() {
                match segment {
                    serde_path_to_error::Segment::Map { key } => {
                        full.push(Segment::Key(key.clone()))
                    }
                    serde_path_to_error::Segment::Seq { index } => {
                        full.push(Segment::Index(*index))
                    }
                    _ => {}
                }
            }
            let message = error.into_inner().to_string();
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            reporter.error_at_value(&full, message, None);
            None
        }
    }
}

/// Checks the keys of task options and of their retry policy.
pub(super) fn check_options_keys(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    value: &mut Value,
) -> bool {
    let ok = check_keys::<TaskOptions>(reporter, path, value, "task options");
    if let Some(retry) = value.get_mut("retry") {
        if !check_keys::<RetrySpec>(reporter, &child(path, "retry"), retry, "a retry policy") {
            *retry = Value::Null;
        }
    }
    ok
}

/// Checks fields or arguments; an unusable one is reported and removed.
pub(super) fn check_fields_keys(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    value: &mut Value,
    what: &str,
) -> bool {
    let Value::Mapping(fields) = value else {
        reporter.error_at_value(
            path,
            format!(
                "expected {what} (a mapping of name to type), found {}",
                describe(value)
            ),
            None,
        );
        return false;
    };
    let mut unusable = Vec::new();
    for (key, field) in fields.iter_mut() {
        let Some(name) = key.as_str() else { continue };
        let path = child(path, name);
        match field {
            Value::String(_) => {}
            Value::Mapping(_) => {
                check_keys::<FieldSpec>(reporter, &path, field, "a field definition");
                if field.get("default").is_some_and(Value::is_null) {
                    reporter.null_defaults.insert(child(&path, "default"));
                }
                if field.get("type").is_none() {
                    reporter.error_at_key(
                        &path,
                        format!("`{name}` has no `type`"),
                        Some("add `type: <type expression>`".into()),
                    );
                    unusable.push(key.clone());
                }
            }
            other => {
                reporter.error_at_value(
                    &path,
                    format!(
                        "expected a type expression or a field definition, found {}",
                        describe(other)
                    ),
                    Some("write `name: string` or `name: {type: string, default: \"…\"}`".into()),
                );
                unusable.push(key.clone());
            }
        }
    }
    for key in unusable {
        fields.remove(&key);
    }
    true
}

/// Checks and deserialises each entry of the top-level mapping `section` on its own.
pub(super) fn collect<T: DeserializeOwned>(
    reporter: &mut Reporter<'_>,
    root: &Value,
    section: &str,
    check: impl Fn(&mut Reporter<'_>, &[Segment], &mut Value) -> bool,
) -> Vec<(KeyPath, String, T)> {
    let section_path = vec![Segment::Key(section.to_owned())];
    let mut out = Vec::new();
    match root.get(section) {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(entries)) => {
            for (key, value) in entries {
                let Some(key) = key.as_str() else {
                    reporter.error_at_value(
                        &section_path,
                        format!("the keys of `{section}` must be strings"),
                        None,
                    );
                    continue;
                };
                let path = child(&section_path, key);
                let mut value = value.clone();
                if check(reporter, &path, &mut value) {
                    if let Some(parsed) = deserialize::<T>(reporter, &path, &value) {
                        out.push((path, key.to_owned(), parsed));
                    }
                }
            }
        }
        Some(other) => reporter.error_at_value(
            &section_path,
            format!(
                "expected `{section}` to be a mapping, found {}",
                describe(other)
            ),
            None,
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TaskDef;

    fn messages(source: &str, check: impl FnOnce(&mut Reporter<'_>, &Value)) -> Vec<String> {
        let root: Value = serde_yaml::from_str(source).unwrap();
        let mut reporter = Reporter::new(source);
        check(&mut reporter, &root);
        reporter
            .finish()
            .into_iter()
            .map(|d| {
                format!(
                    "{}:{} {} | {}",
                    d.position.line,
                    d.position.column,
                    d.message,
                    d.help.unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn unknown_keys_are_reported_with_a_suggestion_and_removed() {
        let source = "tasks:\n  a:\n    resutl: string\n    args: {}\n";
        let mut kept = None;
        let found = messages(source, |reporter, root| {
            let tasks = collect::<TaskDef>(reporter, root, "tasks", |reporter, path, value| {
                check_keys::<TaskDef>(reporter, path, value, "a task")
            });
            kept = Some(tasks.len());
        });
        assert_eq!(
            found,
            ["3:5 unknown key `resutl` in a task | did you mean `result`?"]
        );
        assert_eq!(
            kept,
            Some(1),
            "the task is still checked without the unknown key"
        );
    }

    #[test]
    fn a_wrongly_typed_value_is_reported_at_its_own_key() {
        let source = "tasks:\n  a:\n    args: {}\n    result: [1]\n";
        let found = messages(source, |reporter, root| {
            collect::<TaskDef>(reporter, root, "tasks", |_, _, _| true);
        });
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("4:13 invalid type: sequence"),
            "{found:?}"
        );
    }

    #[test]
    fn a_field_without_a_type_is_dropped_and_a_null_default_remembered() {
        let source = "args:\n  a: {default: 1}\n  b: {type: string, default: null}\n  c: 3\n";
        let root: Value = serde_yaml::from_str(source).unwrap();
        let mut reporter = Reporter::new(source);
        let mut args = root.get("args").unwrap().clone();
        assert!(check_fields_keys(
            &mut reporter,
            &child(&[], "args"),
            &mut args,
            "`args`"
        ));
        let left: Vec<&str> = args
            .as_mapping()
            .unwrap()
            .keys()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(left, ["b"]);
        assert!(
            reporter
                .null_defaults
                .contains(&child(&child(&child(&[], "args"), "b"), "default"))
        );
        let found: Vec<String> = reporter.finish().into_iter().map(|d| d.message).collect();
        assert_eq!(
            found,
            [
                "`a` has no `type`",
                "expected a type expression or a field definition, found a number"
            ]
        );
    }
}
