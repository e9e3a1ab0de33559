//! The Redis transport, in kombu's and Celery's layout: the connection (with Sentinel and
//! failover lists), kombu's envelope, the broker, the pidbox mailbox, the result backend
//! and its pub/sub listener, chords and saved groups.

mod backend;
pub(crate) mod beat_lease;
mod broker;
mod chord;
mod connection;
mod consumer;
mod endpoints;
mod events;
pub mod kombu;
mod listener;
mod mailbox;
mod scripts;

pub use backend::{RedisBackend, TASK_META_PREFIX};
pub use broker::RedisBroker;
use connection::RedisConnection;
