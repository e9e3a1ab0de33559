//! The schema language, version 1: the Rust types a task file deserialises into.
//!
//! These types are the single source of truth for the language: `schemars` derives the
//! JSON Schema that editors use (`schemas/celerity-tasks.schema.json`), and the validator
//! reads the allowed keys of each mapping from that same schema, so a key added here is
//! known everywhere at once.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Celerity task file.
///
/// ```yaml
/// version: 1
/// tasks:
///   ping:
///     result: string
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Celerity task schema")]
pub struct SchemaFile {
    /// Version of the schema language. Only `1` exists.
    pub version: u32,
    /// Text placed at the top of the generated module's documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Options applied to every task; a task's own options override them key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<TaskOptions>,
    /// Named types: structs (with `fields`) and string enums (with `enum`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub types: IndexMap<String, TypeDef>,
    /// The tasks, keyed by name. The key is the wire name unless `name` overrides it.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub tasks: IndexMap<String, TaskDef>,
    /// Periodic tasks (Celery beat's schedule), keyed by a name of your choosing: which
    /// task the scheduler sends, with which arguments, and when.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub schedules: IndexMap<String, ScheduleDef>,
}

/// A named type: a struct when it has `fields`, a string enum when it has `enum`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeDef {
    /// Documentation carried into the generated type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The struct's fields, in order. Each is a type expression or a full field definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<IndexMap<String, FieldDef>>,
    /// The enum's values, as they appear on the wire (strings).
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<String>>,
}

/// A struct field or a task argument: either a bare type expression such as
/// `list<string>`, or a mapping with `type`, `description` and `default`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum FieldDef {
    /// A bare type expression: `string`, `i64?`, `list<Address>`, `map<string, f64>`.
    Short(String),
    /// A full definition.
    Full(FieldSpec),
}

/// The long form of a field or argument.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The type expression.
    #[serde(rename = "type")]
    pub ty: String,
    /// Documentation carried into the generated code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The value used when the field or argument is absent. Must match the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "serde_json::Value")]
    pub default: Option<serde_yaml::Value>,
}

impl FieldDef {
    /// The type expression of this field.
    pub fn ty(&self) -> &str {
        match self {
            FieldDef::Short(ty) => ty,
            FieldDef::Full(spec) => &spec.ty,
        }
    }

    /// The field's documentation, if any.
    pub fn description(&self) -> Option<&str> {
        match self {
            FieldDef::Short(_) => None,
            FieldDef::Full(spec) => spec.description.as_deref(),
        }
    }

    /// The field's default value, if any.
    pub fn default(&self) -> Option<&serde_yaml::Value> {
        match self {
            FieldDef::Short(_) => None,
            FieldDef::Full(spec) => spec.default.as_ref(),
        }
    }
}

/// A task.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    /// The wire name Celery uses (`headers.task`). Defaults to the task's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Documentation carried into the client method and the worker trait method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The worker trait that hosts this task's method (PascalCase). Defaults to
    /// `defaults.component`, else `Tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The arguments, in positional order. Celery callers may pass them by position or by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub args: IndexMap<String, FieldDef>,
    /// The result's type expression. Absent means the task returns nothing (`null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Routing, retry and execution options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<TaskOptions>,
}

/// Routing, retry and execution options of a task (also the `defaults:` block).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskOptions {
    /// Worker component for tasks that do not name one (only meaningful in `defaults`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Queue the task is sent to. Celery's default is `celery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Routing key; defaults to the queue name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Message priority, 0 to 9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Automatic retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// A task not started within this long after it was sent is revoked (e.g. `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSchema")]
    pub expires: Option<serde_yaml::Value>,
    /// Soft time limit: the task is told to stop (e.g. `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSchema")]
    pub soft_time_limit: Option<serde_yaml::Value>,
    /// Hard time limit: the task is aborted and fails (e.g. `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSchema")]
    pub time_limit: Option<serde_yaml::Value>,
    /// Acknowledge the message only after the result is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks_late: Option<bool>,
    /// Store no result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_result: Option<bool>,
    /// Record the STARTED state before the task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_started: Option<bool>,
    /// Celery-style rate limit: `10/s`, `100/m`, `1000/h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

/// Retry policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Retries after the first attempt. Celery's default is 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// How the delay grows between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffKind>,
    /// Delay before the first retry (e.g. `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSchema")]
    pub delay: Option<serde_yaml::Value>,
    /// Upper bound of the delay (e.g. `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSchema")]
    pub max_delay: Option<serde_yaml::Value>,
    /// Randomise each delay between 0 and its computed value (Celery's full jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// Error types (the `exc_type` a task fails with) that are retried automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
}

/// How a retry delay grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    /// The same delay every time.
    Fixed,
    /// `delay * 2^retries`, capped by `max_delay`.
    Exponential,
}

/// A periodic task: a task of this schema, its arguments, and when the scheduler sends it,
/// either `every` (an interval) or on a `crontab`.
///
/// ```yaml
/// schedules:
///   nightly-report:
///     task: tasks.generate_report
///     args: [nightly, "2026-01-01"]
///     kwargs: {format: pdf}
///     crontab: "30 2 * * *"
///     timezone: Europe/London
///     options: {expires: 1h}
/// ```
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleDef {
    /// The task to send: its key under `tasks:`, or its wire name.
    pub task: String,
    /// Documentation, shown beside the entry in the generated `SCHEDULES` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Arguments by position, checked against the task's argument types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub args: Option<serde_yaml::Value>,
    /// Arguments by name, checked against the task's argument types. Arguments given
    /// neither way take their default; a required one must be given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<IndexMap<String, serde_json::Value>>")]
    pub kwargs: Option<serde_yaml::Value>,
    /// Send at this interval (e.g. `30s`, `5m`, `1h`), on multiples of it since the Unix
    /// epoch. Give either `every` or `crontab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<DurationSchema>")]
    pub every: Option<serde_yaml::Value>,
    /// Send when the wall clock of `timezone` matches: Celery's five fields (`minute hour
    /// day-of-month month day-of-week`, e.g. `*/15 9-17 * * mon-fri`) or a shortcut:
    /// `@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crontab: Option<String>,
    /// The IANA time zone a crontab is read in (e.g. `Europe/Berlin`). Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// How each run is sent, over the task's own options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ScheduleOptions>,
}

/// How each run of a schedule is sent (Celery beat's entry `options`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleOptions {
    /// Queue each run is sent to. Default: the task's queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Message priority, 0 to 9. Default: the task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// A run not started within this long after it was sent is revoked (e.g. `5m`); at
    /// most the interval, so that runs a busy worker could not start do not pile up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DurationSchema")]
    pub expires: Option<serde_yaml::Value>,
}

/// A duration: a number of seconds, or a string such as `500ms`, `30s`, `5m`, `2h`, `1d`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // exists only to describe the accepted forms to schemars
enum DurationSchema {
    /// Seconds.
    Seconds(f64),
    /// A number followed by a unit: ms, s, m, h or d.
    Text(#[schemars(pattern(r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*$"))] String),
}

/// The JSON Schema of the schema language, pretty-printed, as written to
/// `schemas/celerity-tasks.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(SchemaFile);
    let mut text = serde_json::to_string_pretty(&schema).expect("a JSON Schema always serialises");
    text.push('\n');
    text
}
