//! Celerity: Celery-compatible background tasks for Rust, typed end to end.
//!
//! Tasks are declared in a YAML schema; `celerity-codegen` turns it into a typed client
//! (`TasksRegistry`), worker traits and dispatch glue at build time. This crate is the
//! runtime they call: the Celery message protocol, brokers, result backends, the
//! dependency-injection container and the worker.
//!
//! ```
//! use std::time::Duration;
//! use celerity::{App, ArgSpec, TaskSpec};
//!
//! static ADD: TaskSpec = TaskSpec::new("tasks.add", &[ArgSpec::new("x", true), ArgSpec::new("y", true)]);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> celerity::Result<()> {
//! let app = App::memory();
//! let sent = app
//!     .client()
//!     .send_task::<i64>(&ADD, vec![2.into(), 3.into()])
//!     .await?;
//! assert_eq!(sent.state().await?, celerity::TaskState::Pending); // no worker is running
//! # Ok(()) }
//! ```
//!
//! The memory broker and backend are always compiled; the Redis and RabbitMQ transports
//! and the worker's command line are cargo features: `redis` and `cli` (the defaults),
//! `amqp`, and `full` for all three.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs, unreachable_pub)]

#[cfg(feature = "amqp")]
mod amqp;
mod app;
pub mod backend;
mod backoff;
pub mod beat;
mod bounded;
pub mod broker;
mod call_type;
pub mod canvas;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
mod client;
mod container;
mod error;
pub mod events;
mod host;
mod memory;
mod pidbox;
pub mod protocol;
#[cfg(feature = "redis")]
mod redis;
mod spec;
mod task;
mod traceback;
mod values;
mod worker;

pub use app::App;
pub use client::{
    AsyncResult, Client, FromClient, IntoTaskCall, ResultError, SendOptions, TaskCall, TaskFailure,
    TaskProgress,
};
pub use container::{
    BuildError, Component, Container, ContainerBuilder, Dependencies, Requirement, Singleton,
    WiringError,
};
pub use error::{Error, ErrorKind, Result};
pub use protocol::TaskState;
pub use spec::{ArgSpec, Backoff, RateLimit, RetryPolicy, TaskSpec};
pub use task::{TASK_ERROR_MODULE, TaskContext, TaskError, TaskResult};
pub use values::{Bytes, Decimal};
pub use worker::{
    DEFAULT_MAX_HELD_ETA, Invoke, Worker, WorkerBuilder, WorkerMetrics, WorkerSettings,
    WorkerStatus, decode_args,
};

/// Date and time types: a schema's `datetime` is `chrono::DateTime<chrono::Utc>` and its
/// `date` is `chrono::NaiveDate`. Re-exported so that code names the version the runtime
/// uses without a `chrono` dependency of its own.
pub use chrono;
/// Exact decimals: a schema's `decimal` is [`Decimal`], a newtype of
/// `rust_decimal::Decimal` with kombu's wire form.
pub use rust_decimal;
/// JSON values: a schema's `json` is `serde_json::Value`.
pub use serde_json;
/// UUIDs: a schema's `uuid` is `uuid::Uuid`.
pub use uuid;

/// Brings the code generated from `schemas/<name>.yaml` into the current module.
///
/// ```ignore
/// pub mod tasks {
///     celerity::include_tasks!("tasks");
/// }
/// ```
///
/// The file is written by `celerity_codegen::compile("schemas/<name>.yaml")` in the
/// crate's `build.rs`, under `$OUT_DIR/celerity/<name>.rs`. Two mistakes show here:
///
/// - **no `build.rs`** (or one that is not the package's `build` script): `OUT_DIR` is not
///   set, and the build fails with "`OUT_DIR` is not set: this crate has no build script
///   that runs celerity_codegen::compile". Add the three-line `build.rs` of the README;
///   ignore any rustc hint to use `std::env::var` instead, which does not apply.
/// - **a name that no schema has**: "couldn't read `…/out/celerity/<name>.rs`". The
///   name is the schema file's stem: `schemas/billing.yaml` is `include_tasks!("billing")`.
#[macro_export]
macro_rules! include_tasks {
    ($name:literal) => {
        include!(concat!(
            env!(
                "OUT_DIR",
                "`OUT_DIR` is not set: this crate has no build script that runs \
                 celerity_codegen::compile (add a build.rs; see celerity::include_tasks!)"
            ),
            "/celerity/",
            $name,
            ".rs"
        ));
    };
}

/// Decoders of network input that the public API does not reach, for the fuzz harness
/// (`tests/fuzz`). Not part of the API: names and signatures may change in any release.
#[doc(hidden)]
pub mod __fuzz {
    /// An AMQP message from its content header's property bytes and its body.
    #[cfg(feature = "amqp")]
    pub use crate::amqp::wire::{message_from_wire, message_to_wire};
    /// Task ids of a pidbox command's `task_id` argument.
    pub use crate::pidbox::task_ids;
    /// kombu's Redis envelope.
    #[cfg(feature = "redis")]
    pub use crate::redis::kombu;
}

/// What generated code uses, and nothing else. Versioned so that code generated for
/// another runtime version fails with one clear error (no `v1` here) instead of many.
#[doc(hidden)]
pub mod __codegen {
    /// Version 1 of the generated-code interface.
    pub mod v1 {
        pub use crate::__task_call as task_call;
        pub use crate::beat::{Crontab, Recurrence, Schedule};
        pub use crate::canvas::{Sig, Takes, arg};
        pub use crate::client::encode_args;
        pub use crate::values::default_value;
        pub use crate::{
            ArgSpec, AsyncResult, BuildError, Client, Component, Container, Dependencies,
            FromClient, Invoke, Requirement, Result, RetryPolicy, SendOptions, TaskCall,
            TaskContext, TaskResult, TaskSpec, WorkerBuilder,
        };
        pub use schemars;
        pub use serde;
        pub use serde_json;
    }
}
