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

#![deny(missing_docs, unreachable_pub)]

mod build;
mod checked;
mod crontab;
mod diagnostic;
mod locate;
mod lower;
mod model;
mod names;
mod parse;
mod render;
mod report;
mod schema;
mod types;
mod validate;

pub use build::{Error, GeneratedFile, Generator, compile, compile_all, generate_str};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use locate::Position;
pub use schema::{
    BackoffKind, FieldDef, FieldSpec, RetrySpec, ScheduleDef, ScheduleOptions, SchemaFile, TaskDef,
    TaskOptions, TypeDef, json_schema,
};
