//! The embedded in-process result backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::Notify;

use crate::backend::ResultBackend;
use crate::error::Result;
use crate::protocol::{ResultMeta, TaskState};

/// An in-memory result backend; clones share the same results.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    results: Mutex<HashMap<String, ResultMeta>>,
    stored: Notify,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResultMeta>> {
        // Every operation is a single insert, read or remove: a poisoned map is consistent.
        self.shared
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBackend")
    }
}

impl ResultBackend for MemoryBackend {
    fn store<'a>(&'a self, meta: &'a ResultMeta) -> BoxFuture<'a, Result<()>> {
        {
            let mut results = self.lock();
            let done = results
                .get(&meta.task_id)
                .is_some_and(|m| m.status == TaskState::Success);
            if !done {
                results.insert(meta.task_id.clone(), meta.clone());
            }
        }
        self.shared.stored.notify_waiters();
        Box::pin(async { Ok(()) })
    }

    fn get<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<Option<ResultMeta>>> {
        let found = self.lock().get(task_id).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn wait_ready<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<ResultMeta>> {
        Box::pin(async move {
            let read = || self.lock().get(task_id).cloned();
            Ok(crate::backend::wait_for_ready(&self.shared.stored, read).await)
        })
    }

    fn forget<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<()>> {
        self.lock().remove(task_id);
        Box::pin(async { Ok(()) })
    }

    fn describe(&self) -> String {
        "memory://".into()
    }
}
