//! The worker: consumes task messages, runs them concurrently, stores their results.

mod args;
mod dispatch;
mod execute;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use args::decode_args;
pub use dispatch::Invoke;

use crate::client::Client;
use crate::container::{Component, Container};
use crate::error::{Error, ErrorKind, Result};
use crate::spec::TaskSpec;
use dispatch::TaskTable;
use execute::Shared;

/// Configures a worker: which tasks it runs, with which singletons, how many at once.
pub struct WorkerBuilder {
    client: Client,
    table: TaskTable,
    container: Container,
    concurrency: usize,
    queues: Option<Vec<String>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// A worker consuming through `client`'s broker and storing in its backend.
    pub fn new(client: Client) -> Self {
        WorkerBuilder {
            client,
            table: TaskTable::default(),
            container: Container::new(),
            concurrency: std::thread::available_parallelism().map_or(4, |n| n.get() * 4),
            queues: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// Routes the task `spec` to a fresh `C` for each execution, with arguments decoded as
    /// `A`. Generated `register_*` functions call this for each task of a component.
    pub fn register<C, A>(&mut self, spec: &'static TaskSpec) -> &mut Self
    where
        C: Component,
        A: Invoke<C> + DeserializeOwned,
    {
        self.table.insert::<C, A>(spec);
        self
    }

    /// Adds a singleton components can resolve with `Scope::singleton`.
    pub fn singleton<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.container.insert(value);
        self
    }

    /// How many tasks run at once (default: 4 per core). Also bounds how many messages
    /// the worker holds from the broker.
    pub fn concurrency(&mut self, concurrency: usize) -> &mut Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Consumes these queues instead of the queues of the registered tasks.
    pub fn queues<I, S>(&mut self, queues: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// How long shutdown waits for running tasks (default 30 s).
    pub fn shutdown_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Starts consuming on the current tokio runtime.
    pub async fn start(self) -> Result<Worker> {
        if self.table.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the worker has no registered tasks",
            ));
        }
        let queues = match self.queues {
            Some(queues) => queues,
            None => {
                let mut queues: Vec<String> =
                    self.table.specs().map(|s| s.queue.to_owned()).collect();
                queues.sort();
                queues.dedup();
                queues
            }
        };
        let consumer = self.client.broker().consume(&queues).await?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            client: self.client,
            table: self.table,
            container: Arc::new(self.container),
            permits: Arc::new(Semaphore::new(self.concurrency)),
        });
        tracing::info!(queues = ?queues, concurrency = self.concurrency, "worker started");
        let task = tokio::spawn(execute::consume(shared.clone(), consumer, stopped));
        Ok(Worker {
            stop,
            task,
            shared,
            concurrency: self.concurrency,
            queues,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// A running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    concurrency: usize,
    queues: Vec<String>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// The singleton of type `T` this worker's components share, if registered.
    pub fn singleton<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.shared.container.get::<T>()
    }

    /// The queues this worker consumes.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// Stops consuming, waits for running tasks (up to the shutdown timeout), and returns.
    /// Messages not yet started go back to the broker.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.shutdown_timeout, self.shared.permits.acquire_many(all))
            .await
        {
            Ok(_) => tracing::info!("worker stopped"),
            Err(_) => {
                tracing::warn!(timeout = ?self.shutdown_timeout, "worker stopped with tasks still running")
            }
        }
    }
}
