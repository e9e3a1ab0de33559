//! The in-process transport: a broker and a result backend in memory, for tests, the
//! quickstart and single-process applications.

mod backend;
mod broker;

pub use backend::MemoryBackend;
pub use broker::{MemoryBroker, MemoryEvents};
