//! What the reference application's broker-backed and interop tests share: the Redis,
//! RabbitMQ and Python Celery to test against, or a skip that says why (the runtime's tests
//! skip through the same file).

#![allow(dead_code)] // each test binary uses part of this

#[path = "../../runtime/tests/support/skip.rs"]
mod skip;
pub mod worker;

#[allow(unused_imports)] // as above: each test binary uses part of this
pub use skip::{amqp_url, python_with_celery, redis_url, skip};
