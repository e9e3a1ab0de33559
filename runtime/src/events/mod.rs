//! Celery's monitoring events (`celery/events/`), sent by a Celerity worker so that
//! `celery events`, Flower and any `app.events.Receiver` see it as one of their own.
//!
//! - **Worker events**, always: `worker-online` once the worker consumes,
//!   `worker-heartbeat` every two seconds (with the tasks running and processed and the
//!   load average) and `worker-offline` when it stops gracefully.
//! - **Task events**, when enabled as in Celery (`-E`, `WorkerBuilder::task_events`, the
//!   `enable_events` command): `task-received`, `task-started`, `task-succeeded`,
//!   `task-failed`, `task-retried`, `task-revoked` and `task-rejected`.
//!
//! Every event carries `hostname`, `utcoffset`, `pid`, `clock` (the process's Lamport
//! clock, which mailbox commands and answers move too), `timestamp` and `type`. They
//! travel as a Celery worker sends them: each worker event routed by its type
//! (`worker.heartbeat`), task events in lists on `task.multi` as Celery's prefork worker
//! sends them; on RabbitMQ to the durable topic exchange `celeryev`; on Redis, where kombu
//! turns that exchange into pub/sub, `PUBLISH`ed on `/<db>.celeryev/<routing key>`; on the
//! memory broker to
//! [`MemoryBroker::subscribe_events`](crate::broker::MemoryBroker::subscribe_events), one
//! by one.
//!
//! Making an event costs the task a few copied strings: events go to a bounded outbox
//! that one background task publishes in batches.

mod dispatcher;
mod event;
mod heart;
#[cfg(any(feature = "redis", feature = "amqp"))]
mod message;
mod outbox;

pub use event::Event;

pub(crate) use dispatcher::{EventDispatcher, WORKER_HEARTBEAT, WORKER_OFFLINE, WORKER_ONLINE};
pub(crate) use event::TaskDetail;
pub(crate) use heart::heartbeats;
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) use message::messages;
pub(crate) use outbox::publish;

/// The exchange events are published to (Celery's `event_exchange` setting, default
/// `celeryev`).
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) const EXCHANGE: &str = "celeryev";
