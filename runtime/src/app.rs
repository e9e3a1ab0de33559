//! The application: one broker and one result backend, shared by clients and workers.

use std::sync::Arc;

use crate::backend::{MemoryBackend, RedisBackend, ResultBackend, RpcBackend};
use crate::broker::{AmqpBroker, Broker, MemoryBroker, RedisBroker};
use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::worker::WorkerBuilder;

/// The variable naming the broker URL (Celery's `broker_url`).
pub(crate) const BROKER_URL_VAR: &str = "CELERITY_BROKER_URL";
/// The variable naming the result backend URL (Celery's `result_backend`).
pub(crate) const RESULT_BACKEND_VAR: &str = "CELERITY_RESULT_BACKEND";
/// The broker and backend when none is named: the embedded one.
pub(crate) const DEFAULT_URL: &str = "memory://";

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

    /// An app configured by URL. Brokers: `memory://` (the embedded default), `redis://`,
    /// `amqp://` or `amqps://` (RabbitMQ). Result backends: `memory://`, `redis://`, and
    /// `rpc://`, which sends results back over the AMQP broker's connection and so needs
    /// an `amqp://` broker, as in Celery.
    pub async fn from_urls(broker_url: &str, backend_url: &str) -> Result<App> {
        let mut amqp = None;
        let broker: Arc<dyn Broker> = match scheme(broker_url)? {
            "memory" => Arc::new(MemoryBroker::new()),
            "redis" | "rediss" => Arc::new(RedisBroker::connect(broker_url).await?),
            "amqp" | "amqps" | "pyamqp" => {
                let broker = AmqpBroker::connect(broker_url).await?;
                amqp = Some(broker.clone());
                Arc::new(broker)
            }
            other => {
                let supported = "memory://, redis://, rediss://, amqp://, amqps:// and pyamqp://";
                return Err(unsupported("broker", other, broker_url, supported));
            }
        };
        let backend: Arc<dyn ResultBackend> = match scheme(backend_url)? {
            "memory" => Arc::new(MemoryBackend::new()),
            "redis" | "rediss" => Arc::new(RedisBackend::connect(backend_url).await?),
            "rpc" => match &amqp {
                Some(broker) => Arc::new(RpcBackend::connect(broker).await?),
                None => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "the rpc:// result backend sends results over AMQP: it needs an amqp:// broker",
                    ));
                }
            },
            other => {
                let supported = "memory://, redis://, rediss:// and rpc://";
                return Err(unsupported("result backend", other, backend_url, supported));
            }
        };
        Ok(App::from_parts(broker, backend))
    }

    /// The broker and backend URLs from `CELERITY_BROKER_URL` and
    /// `CELERITY_RESULT_BACKEND` (Celery's setting names), defaulting to `memory://`.
    pub async fn from_env() -> Result<App> {
        let broker = std::env::var(BROKER_URL_VAR).unwrap_or_else(|_| DEFAULT_URL.into());
        let backend = std::env::var(RESULT_BACKEND_VAR).unwrap_or_else(|_| DEFAULT_URL.into());
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

    /// Closes the broker's connections (and so the `rpc://` backend's, which shares them),
    /// for a clean exit once workers are shut down and no more tasks are sent.
    pub async fn close(&self) {
        self.broker().close().await;
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

/// The error for a URL of `scheme`, listing the schemes the match beside it accepts.
fn unsupported(what: &str, scheme: &str, url: &str, supported: &str) -> Error {
    let shown = url.split('@').next_back().unwrap_or(url);
    Error::new(
        ErrorKind::Config,
        format!("unsupported {what} scheme `{scheme}` in `…{shown}`; supported: {supported}"),
    )
}
