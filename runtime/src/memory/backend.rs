//! The embedded in-process result backend.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::backend::{ResultBackend, ResultTable};
use crate::error::Result;
use crate::protocol::ResultMeta;

/// An in-memory result backend; clones share the same results, which it keeps until they
/// are forgotten.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    results: Arc<ResultTable<{ usize::MAX }>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBackend")
    }
}

impl ResultBackend for MemoryBackend {
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, Result<()>> {
        self.results.record(meta.task_id.clone(), meta.clone());
        Box::pin(async { Ok(()) })
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>>> {
        let found = self.results.get(task_id);
        Box::pin(async move { Ok(found) })
    }

    fn wait_ready<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultMeta>> {
        Box::pin(async move { Ok(self.results.wait_ready(task_id).await) })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.results.remove(task_id);
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "memory://".into()
    }
}
