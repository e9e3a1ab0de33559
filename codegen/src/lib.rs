//! Generates typed Celerity code from YAML task schemas.
//!
//! A schema declares a service's background tasks: names, typed arguments and results,
//! queues, retry policy and limits. From it this crate generates, at build time:
//!
//! - the schema's named types, with serde and schemars derives;
//! - `TasksRegistry`, a typed client with one method per task;
//! - one worker trait per component, one `async` method per task;
//! - the dispatch glue that decodes a Celery message into a trait method call.
//!
//! Call it from `build.rs`:
//!
//! ```no_run
//! // build.rs: `fn main() {` … `}` around this line
//! celerity_codegen::compile("schemas/tasks.yaml");
//! ```
//!
//! and bring the result into the crate with `celerity::include_tasks!("tasks")`.
//!
//! A mistake in the schema fails the build with every problem listed rustc-style: file
//! (relative to the workspace root), line, column, key path and, where it can, the fix.
//! With several schema files, [`compile_all`] reports the mistakes of all of them at once.
//!
//! The schema is also a contract beyond the Rust build. [`generate_python_str`] writes a
//! typed Python module for services written with Celery; [`breaking_changes`] compares two
//! versions of a schema for changes that break senders or workers still on the old one;
//! [`tasks_json_schema_str`] and [`json_schema`] describe the tasks and the language in
//! JSON Schema. The `celerity-codegen` command line (`cargo install --path codegen`) runs
//! each of them, and [`check_str`] as the build checks:
//!
//! ```text
//! celerity-codegen check schemas/tasks.yaml
//! celerity-codegen python schemas/tasks.yaml -o shop_tasks.py
//! celerity-codegen breaking --against origin/main schemas/tasks.yaml
//! celerity-codegen json-schema --tasks schemas/tasks.yaml -o tasks.schema.json
//! ```

#![deny(missing_docs, unreachable_pub)]

mod breaking;
mod build;
mod checked;
mod crontab;
mod diagnostic;
mod locate;
mod lower;
mod model;
mod names;
mod parse;
mod python;
mod render;
mod report;
mod schema;
mod types;
mod validate;
mod wire_schema;

pub use breaking::{Change, Changes, Severity, breaking_changes};
pub use build::{
    Error, GeneratedFile, Generator, check_str, compile, compile_all, generate_python_str,
    generate_str, tasks_json_schema_str,
};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use locate::Position;
pub use schema::{
    BackoffKind, FieldDef, FieldSpec, RetrySpec, ScheduleDef, ScheduleOptions, SchemaFile, TaskDef,
    TaskOptions, TypeDef, json_schema,
};
