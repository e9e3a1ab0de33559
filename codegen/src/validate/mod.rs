//! Checking a schema document against the schema language, in the language's own terms:
//! the [`checked::Schema`] it yields says nothing of Rust, which is lowering's business.
//!
//! Each stage reports every mistake it finds and goes on with what is left, so that one
//! mistake never hides another:
//! - [`structure`]: unknown keys at every level, each task and type deserialised alone;
//! - [`types`]: type expressions, references, recursion;
//! - [`values`]: defaults against their types, durations, rate limits;
//! - [`options`]: each task's options merged over `defaults:` and checked;
//! - [`schedules`]: each periodic task against the task it sends;
//! - here: what holds across tasks (wire names, argument order, components).

mod options;
mod schedules;
mod structure;
mod types;
mod values;

use std::collections::HashMap;

use serde_yaml::Value;

use crate::checked::{Field, Schema, Task};
use crate::locate::{KeyPath, Position, Segment};
use crate::report::{Reporter, child};
use crate::schema::{ScheduleDef, ScheduleOptions, SchemaFile, TaskDef, TaskOptions, TypeDef};

/// The only version of the schema language.
pub(crate) const SCHEMA_VERSION: u64 = 1;

/// Component used by tasks that name none, when `defaults.component` is not set either.
pub(crate) const DEFAULT_COMPONENT: &str = "Tasks";

/// Celery's default queue (`task_default_queue`).
pub(crate) const DEFAULT_QUEUE: &str = "celery";

/// Checks the parsed document `root`, reporting every mistake, and returns what could be
/// checked (everything, when nothing was reported).
pub(crate) fn validate(reporter: &mut Reporter<'_>, root: &Value) -> Schema {
    let root_path: KeyPath = Vec::new();
    let mut root = root.clone();
    if !structure::check_keys::<SchemaFile>(reporter, &root_path, &mut root, "the schema file") {
        return Schema::default();
    }
    let root = &root;
    check_version(reporter, root);
    let description: Option<String> = root.get("description").and_then(|value| {
        structure::deserialize(reporter, &child(&root_path, "description"), value)
    });

    let defaults_path = child(&root_path, "defaults");
    let defaults = root
        .get("defaults")
        .and_then(|value| {
            let mut value = value.clone();
            structure::check_options_keys(reporter, &defaults_path, &mut value)
                .then(|| structure::deserialize::<TaskOptions>(reporter, &defaults_path, &value))
                .flatten()
        })
        .unwrap_or_default();

    let types = structure::collect::<TypeDef>(reporter, root, "types", |reporter, path, value| {
        let ok = structure::check_keys::<TypeDef>(reporter, path, value, "a type definition");
        if let Some(fields) = value.get_mut("fields") {
            structure::check_fields_keys(reporter, &child(path, "fields"), fields, "`fields`");
        }
        ok
    });
    let tasks = structure::collect::<TaskDef>(reporter, root, "tasks", |reporter, path, value| {
        let ok = structure::check_keys::<TaskDef>(reporter, path, value, "a task");
        if let Some(args) = value.get_mut("args") {
            structure::check_fields_keys(reporter, &child(path, "args"), args, "`args`");
        }
        if let Some(options) = value.get_mut("options") {
            structure::check_options_keys(reporter, &child(path, "options"), options);
        }
        ok
    });

    let schedules =
        structure::collect::<ScheduleDef>(reporter, root, "schedules", |reporter, path, value| {
            let ok = structure::check_keys::<ScheduleDef>(reporter, path, value, "a schedule");
            if let Some(options) = value.get_mut("options") {
                if !structure::check_keys::<ScheduleOptions>(
                    reporter,
                    &child(path, "options"),
                    options,
                    "schedule options",
                ) {
                    *options = Value::Null;
                }
            }
            ok
        });

    let table = types::table(reporter, &types);
    let types = types
        .iter()
        .filter_map(|(path, key, def)| {
            let kind = match (&def.fields, &def.variants) {
                (Some(fields), None) => crate::checked::TypeKind::Struct(values::fields(
                    reporter,
                    &child(path, "fields"),
                    fields,
                    &table,
                )),
                (None, Some(values)) => crate::checked::TypeKind::Enum(values.clone()),
                // Reported with the type table.
                _ => return None,
            };
            Some(crate::checked::TypeDecl {
                path: path.clone(),
                key: key.clone(),
                description: def.description.clone(),
                kind,
            })
        })
        .collect();
    let tasks = self::tasks(reporter, &tasks, &defaults, &table);
    let schedules = schedules::schedules(reporter, &schedules, &tasks, &table);
    Schema {
        description,
        types,
        tasks,
        schedules,
        table,
    }
}

fn check_version(reporter: &mut Reporter<'_>, root: &Value) {
    match root.get("version") {
        None => reporter.error_at_key(
            &[],
            "the schema has no `version`",
            Some("add `version: 1` at the top of the file".into()),
        ),
        Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => {}
        Some(other) => {
            let shown = serde_yaml::to_string(other).unwrap_or_default();
            reporter.error_at_value(
                &child(&[], "version"),
                format!("unsupported schema version `{}`", shown.trim()),
                Some(format!(
                    "this celerity-codegen reads version {SCHEMA_VERSION}"
                )),
            );
        }
    }
}

/// The tasks, each checked on its own, then against each other.
fn tasks(
    reporter: &mut Reporter<'_>,
    tasks: &[(KeyPath, String, TaskDef)],
    defaults: &TaskOptions,
    table: &crate::checked::TypeTable,
) -> Vec<Task> {
    let mut out = Vec::new();
    let mut wire_names: HashMap<String, (String, Position)> = HashMap::new();
    let defaults_component = vec![
        Segment::Key("defaults".into()),
        Segment::Key("component".into()),
    ];
    for (path, key, def) in tasks {
        let wire = def.name.clone().unwrap_or_else(|| key.clone());
        let wire_path = if def.name.is_some() {
            child(path, "name")
        } else {
            path.clone()
        };
        if wire.trim().is_empty() {
            reporter.error_at_value(&wire_path, "a task's wire name cannot be empty", None);
        }
        let position = reporter.locations().key(path);
        if let Some((first, at)) = wire_names.get(&wire) {
            reporter.error_at_value(
                &wire_path,
                format!(
                    "duplicate wire name `{wire}`: task `{first}` (line {}) already uses it",
                    at.line
                ),
                Some("give each task a distinct `name:`".into()),
            );
        } else {
            wire_names.insert(wire.clone(), (key.clone(), position));
        }
        let component = match (&def.component, &defaults.component) {
            (Some(own), _) => (own.clone(), Some(child(path, "component"))),
            (None, Some(default)) => (default.clone(), Some(defaults_component.clone())),
            (None, None) => (DEFAULT_COMPONENT.to_owned(), None),
        };
        let args = values::fields(reporter, &child(path, "args"), &def.args, table);
        check_argument_order(reporter, &args);
        let result = match &def.result {
            Some(text) => types::type_expr(reporter, &child(path, "result"), text, table),
            None => None,
        };
        let options = options::options(reporter, path, defaults, def.options.as_ref());
        out.push(Task {
            path: path.clone(),
            key: key.clone(),
            wire,
            renamed: def.name.is_some(),
            description: def.description.clone(),
            component,
            args,
            result,
            options,
        });
    }
    out
}

/// Arguments a caller may leave out (a default, or `T?`) come after the required ones,
/// as in a Python signature: arguments travel by position, so a required argument after
/// an optional one would take the optional one's place in a message that leaves it out,
/// and Celery's Python side could not declare the task.
fn check_argument_order(reporter: &mut Reporter<'_>, args: &[Field]) {
    let Some(first_optional) = args.iter().position(|a| !a.required()) else {
        return;
    };
    let optional = &args[first_optional].wire;
    for arg in args[first_optional..].iter().filter(|a| a.required()) {
        reporter.error_at_key(
            &arg.path,
            format!(
                "required argument `{}` comes after `{optional}`, which callers may leave out",
                arg.wire
            ),
            Some(format!(
                "move `{}` before `{optional}` (arguments travel by position, so required ones come first, as in Python), or give it a default",
                arg.wire
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(source: &str) -> (Schema, Vec<String>) {
        let root: Value = serde_yaml::from_str(source).unwrap();
        let mut reporter = Reporter::new(source);
        let schema = validate(&mut reporter, &root);
        let messages = reporter
            .finish()
            .into_iter()
            .map(|d| format!("{}:{} {}", d.position.line, d.position.column, d.message))
            .collect();
        (schema, messages)
    }

    #[test]
    fn a_sound_schema_is_checked_in_the_schemas_own_terms() {
        let (schema, messages) = checked(
            "version: 1\ndefaults: {component: Mailer}\ntypes:\n  Level: {enum: [low, high]}\n\
             tasks:\n  mail.send:\n    name: send\n    args: {to: string, level: {type: Level, default: low}}\n    result: bool\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        let task = &schema.tasks[0];
        assert_eq!(
            (task.key.as_str(), task.wire.as_str(), task.renamed),
            ("mail.send", "send", true)
        );
        assert_eq!(task.component.0, "Mailer");
        let args: Vec<(&str, bool)> = task
            .args
            .iter()
            .map(|a| (a.wire.as_str(), a.required()))
            .collect();
        assert_eq!(args, [("to", true), ("level", false)]);
        assert_eq!(
            task.result.as_ref().map(ToString::to_string).as_deref(),
            Some("bool")
        );
        assert_eq!(schema.types.len(), 1);
    }

    #[test]
    fn mistakes_across_tasks_are_all_reported() {
        let (schema, messages) = checked(
            "version: 2\ntasks:\n  a: {args: {x: {type: i64, default: 1}, y: string}}\n  b: {name: a}\n",
        );
        assert_eq!(
            messages,
            [
                "1:10 unsupported schema version `2`",
                "3:42 required argument `y` comes after `x`, which callers may leave out",
                "4:13 duplicate wire name `a`: task `a` (line 3) already uses it",
            ]
        );
        assert_eq!(schema.tasks.len(), 2, "checking goes on past each mistake");
    }

    #[test]
    fn a_document_that_is_no_mapping_yields_nothing_more() {
        let (schema, messages) = checked("[1, 2]\n");
        assert_eq!(
            messages,
            ["1:1 expected the schema file (a mapping), found a list"]
        );
        assert!(schema.tasks.is_empty());
    }
}
