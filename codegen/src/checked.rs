//! The checked schema: what validation guarantees, in the schema's own terms and no
//! target language's. Lowering turns it into the Rust [`Model`](crate::model::Model); the
//! key paths stay with each item so that lowering can point at the schema too.
//!
//! A schema with mistakes still yields a checked schema, of the parts that could be
//! checked, so that lowering finds its own mistakes in the same run.

use indexmap::IndexMap;
use serde_yaml::Value;

use crate::locate::KeyPath;
use crate::types::TypeExpr;

/// One schema file, checked.
#[derive(Debug, Default)]
pub(crate) struct Schema {
    /// The file's `description`.
    pub description: Option<String>,
    /// Named types, in declaration order.
    pub types: Vec<TypeDecl>,
    /// Tasks, in declaration order.
    pub tasks: Vec<Task>,
    /// Periodic tasks, in declaration order.
    pub schedules: Vec<Schedule>,
    /// What each type name declared under `types:` is.
    pub table: TypeTable,
}

/// Every name declared under `types:`, by its key.
pub(crate) type TypeTable = IndexMap<String, Shape>;

/// What a named type is, as far as values and references need to know.
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// A struct: each field's type and whether it has a default.
    Struct(IndexMap<String, (TypeExpr, bool)>),
    /// A string enum: its values.
    Enum(Vec<String>),
}

/// A type declared under `types:`.
#[derive(Debug)]
pub(crate) struct TypeDecl {
    /// Where it is declared (`types.<key>`).
    pub path: KeyPath,
    /// Its key.
    pub key: String,
    pub description: Option<String>,
    pub kind: TypeKind,
}

#[derive(Debug)]
pub(crate) enum TypeKind {
    Struct(Vec<Field>),
    /// The enum's values, in order.
    Enum(Vec<String>),
}

/// A field of a struct, or a task argument, whose type and default are checked.
#[derive(Debug)]
pub(crate) struct Field {
    /// Where it is declared (`….fields.<wire>` or `….args.<wire>`).
    pub path: KeyPath,
    /// Its name on the wire.
    pub wire: String,
    pub ty: TypeExpr,
    /// The default, checked against `ty`.
    pub default: Option<Value>,
    pub description: Option<String>,
}

impl Field {
    /// A caller must supply it: it has no default and its type is not optional.
    pub(crate) fn required(&self) -> bool {
        self.default.is_none() && !self.ty.is_optional()
    }
}

/// A task.
#[derive(Debug)]
pub(crate) struct Task {
    /// Where it is declared (`tasks.<key>`).
    pub path: KeyPath,
    /// Its key under `tasks:`.
    pub key: String,
    /// Its name on the wire (`name:`, else the key).
    pub wire: String,
    /// Whether the wire name was given by `name:`.
    pub renamed: bool,
    pub description: Option<String>,
    /// The component that hosts it, as written, and where (`None`: the implicit default).
    pub component: (String, Option<KeyPath>),
    /// Its arguments, in positional order.
    pub args: Vec<Field>,
    /// Its result type; `None` for no result.
    pub result: Option<TypeExpr>,
    /// Its options, merged with `defaults:`.
    pub options: Options,
}

/// A task's options, merged with `defaults:` and checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Options {
    /// The queue, `None` for Celery's default queue.
    pub queue: Option<String>,
    pub routing_key: Option<String>,
    /// 0 to 9.
    pub priority: Option<u8>,
    /// In milliseconds.
    pub expires: Option<u64>,
    /// In milliseconds.
    pub soft_time_limit: Option<u64>,
    /// In milliseconds.
    pub time_limit: Option<u64>,
    pub acks_late: bool,
    pub ignore_result: bool,
    pub track_started: bool,
    /// A count per period in milliseconds.
    pub rate_limit: Option<(u32, u64)>,
    pub retry: Option<Retry>,
}

/// A retry policy.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Retry {
    pub max_retries: u32,
    /// In milliseconds.
    pub delay: Option<u64>,
    /// In milliseconds.
    pub max_delay: Option<u64>,
    pub exponential: bool,
    pub jitter: Option<bool>,
    /// The `exc_type` names to retry on; `None` for every error.
    pub on: Option<Vec<String>>,
}

/// A periodic task whose task, arguments, timing and options are checked.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Its key: the schedule's name.
    pub name: String,
    pub description: Option<String>,
    /// The task it sends, as an index into [`Schema::tasks`].
    pub task: usize,
    /// The value given for each of the task's arguments, in the task's order; `None` for
    /// an argument given neither by position nor by name (it takes its default).
    pub args: Vec<Option<Value>>,
    pub recurrence: Recurrence,
    /// Sending options over the task's own.
    pub queue: Option<String>,
    pub priority: Option<u8>,
    /// In milliseconds.
    pub expires: Option<u64>,
}

/// When a schedule's runs are due.
#[derive(Debug)]
pub(crate) enum Recurrence {
    /// An interval, in milliseconds.
    Every(u64),
    /// A crontab, read in an IANA time zone.
    Crontab {
        /// As written, for display.
        expression: String,
        fields: crate::crontab::Crontab,
        timezone: String,
    },
}
