//! The application: one broker and one result backend, shared by clients and workers.

use std::sync::Arc;

use crate::backend::{MemoryBackend, RedisBackend, ResultBackend};
use crate::broker::{Broker, MemoryBroker, RedisBroker};
use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::worker::WorkerBuilder;

/// A broker and a result backend: the entry point for sending and running tasks.
///
/// ```
/// # async fn demo() -> celerity::Result<()> {
/// let app = celerity::App::memory();
/// let client = app.client();
/// let worker = app.worker();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct App {
    client: Client,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("broker", &self.broker().describe())
            .field("backend", &self.backend().describe())
            .finish()
    }
}

impl App {
    /// An app on the embedded in-memory broker and backend: producer and worker in one
    /// process, nothing to install.
    pub fn memory() -> App {
        App::new(MemoryBroker::new(), MemoryBackend::new())
    }

    /// An app on the given broker and backend.
    pub fn new(broker: impl Broker, backend: impl ResultBackend) -> App {
        App::from_parts(Arc::new(broker), Arc::new(backend))
    }

    /// An app on shared broker and backend handles.
    pub fn from_parts(broker: Arc<dyn Broker>, backend: Arc<dyn ResultBackend>) -> App {
        App {
            client: Client::new(broker, backend),
        }
    }

    /// An app configured by URL: `memory://` (the embedded default) or `redis://`, for
    /// the broker and the result backend alike.
    pub async fn from_urls(broker_url: &str, backend_url: &str) -> Result<App> {
        let broker: Arc<dyn Broker> = match scheme(broker_url)? {
            "memory" => Arc::new(MemoryBroker::new()),
            "redis" => Arc::new(RedisBroker::connect(broker_url).await?),
            other => return Err(unsupported("broker", other, broker_url)),
        };
        let backend: Arc<dyn ResultBackend> = match scheme(backend_url)? {
            "memory" => Arc::new(MemoryBackend::new()),
            "redis" => Arc::new(RedisBackend::connect(backend_url).await?),
            other => return Err(unsupported("result backend", other, backend_url)),
        };
        Ok(App::from_parts(broker, backend))
    }

    /// The broker and backend URLs from `CELERITY_BROKER_URL` and
    /// `CELERITY_RESULT_BACKEND` (Celery's setting names), defaulting to `memory://`.
    pub async fn from_env() -> Result<App> {
        let broker = std::env::var("CELERITY_BROKER_URL").unwrap_or_else(|_| "memory://".into());
        let backend =
            std::env::var("CELERITY_RESULT_BACKEND").unwrap_or_else(|_| "memory://".into());
        App::from_urls(&broker, &backend).await
    }

    /// A client sending through this app.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A worker builder consuming through this app.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.client.clone())
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.client.broker()
    }

    /// The result backend.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        self.client.backend()
    }
}

fn scheme(url: &str) -> Result<&str> {
    url.split_once("://")
        .map(|(scheme, _)| scheme)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("`{url}` is not a URL (expected scheme://…)"),
            )
        })
}

fn unsupported(what: &str, scheme: &str, url: &str) -> Error {
    let shown = url.split('@').next_back().unwrap_or(url);
    Error::new(
        ErrorKind::Config,
        format!(
            "unsupported {what} scheme `{scheme}` in `…{shown}`; this build supports memory://"
        ),
    )
}
