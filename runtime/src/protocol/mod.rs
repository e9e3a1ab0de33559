//! Celery's task message protocol (v2, with v1 read) and result format.
//!
//! Wire facts follow Celery 5.x: `celery/app/amqp.py::AMQP.as_task_v2` for messages and
//! `celery/backends/base.py` for results.

mod json;
mod message;
mod repr;
mod result;

pub(crate) use json::decode_kombu;
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) use json::to_python_json_sized;
pub(crate) use json::value_repr;
pub use json::{args_repr, from_kombu_json, kwargs_repr, to_python_json};
pub use message::{Embed, Headers, MessageError, Properties, RawMessage, TaskMessage};
pub(crate) use repr::{REPR_MAXSIZE, bounded, short};
pub use result::{ExceptionInfo, ResultMeta, TaskState, celery_time, parse_celery_time};
pub(crate) use result::{ExtendedMeta, RequestMeta};
