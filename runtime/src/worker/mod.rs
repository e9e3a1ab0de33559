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
use crate::container::{Component, ContainerBuilder, Singleton};
use crate::error::{Error, ErrorKind, Result};
use crate::spec::TaskSpec;
use dispatch::TaskTable;
use execute::Shared;

/// Celery's `worker_prefetch_multiplier` default.
const DEFAULT_PREFETCH_MULTIPLIER: usize = 4;

/// Configures a worker: which tasks it runs, with which singletons, how many at once.
pub struct WorkerBuilder {
    client: Client,
    table: TaskTable,
    container: ContainerBuilder,
    concurrency: usize,
    prefetch_multiplier: usize,
    queues: Option<Vec<String>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("prefetch_multiplier", &self.prefetch_multiplier)
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
            container: ContainerBuilder::default(),
            concurrency: std::thread::available_parallelism().map_or(4, |n| n.get() * 4),
            prefetch_multiplier: DEFAULT_PREFETCH_MULTIPLIER,
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
        self.container.component::<C>();
        self.table.insert::<C, A>(spec);
        self
    }

    /// Adds a singleton value, shared by every execution (`Arc<T>` in a `Deps`).
    pub fn singleton<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.container.instance(value);
        self
    }

    /// Adds a singleton built once at start by [`Singleton::create`], after the singletons
    /// it depends on, and closed at shutdown in reverse order.
    pub fn singleton_factory<T: Singleton>(&mut self) -> &mut Self {
        self.container.factory::<T>();
        self
    }

    /// How many tasks run at once (default: 4 per core).
    pub fn concurrency(&mut self, concurrency: usize) -> &mut Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How many messages per concurrency slot the worker may hold from the broker,
    /// running or waiting (Celery's `worker_prefetch_multiplier`, default 4).
    pub fn prefetch_multiplier(&mut self, multiplier: usize) -> &mut Self {
        self.prefetch_multiplier = multiplier.max(1);
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

    /// Checks the wiring, builds the singletons, and starts consuming on the current
    /// tokio runtime. A missing dependency or a cycle fails here, before any message is
    /// taken from the broker.
    pub async fn start(self) -> Result<Worker> {
        if self.table.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the worker has no registered tasks",
            ));
        }
        let container = self
            .container
            .build(&self.client)
            .await
            .map_err(|e| Error::new(ErrorKind::Container, e.to_string()))?;
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
        let streams = async {
            let control = self.client.broker().control().await?;
            let consumer = self.client.broker().consume(&queues).await?;
            Ok::<_, Error>((control, consumer))
        };
        let (control, consumer) = match streams.await {
            Ok(streams) => streams,
            Err(error) => {
                container.close().await;
                return Err(error);
            }
        };
        let (stop, stopped) = watch::channel(false);
        let prefetch = self.concurrency.saturating_mul(self.prefetch_multiplier);
        let shared = Arc::new(Shared {
            client: self.client,
            table: self.table,
            container: Arc::new(container),
            slots: Arc::new(Semaphore::new(self.concurrency)),
            prefetch: Arc::new(Semaphore::new(prefetch)),
            revoked: Default::default(),
            rate_limits: Default::default(),
        });
        let listener = tokio::spawn(execute::listen(shared.clone(), control));
        tracing::info!(queues = ?queues, concurrency = self.concurrency, prefetch, "worker started");
        let task = tokio::spawn(execute::consume(shared.clone(), consumer, stopped));
        Ok(Worker {
            stop,
            task,
            listener,
            shared,
            prefetch,
            queues,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// A running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    listener: JoinHandle<()>,
    shared: Arc<Shared>,
    prefetch: usize,
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

    /// Stops consuming, waits for held and running tasks (up to the shutdown timeout),
    /// then closes the singletons. Messages not yet started go back to the broker.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let all = u32::try_from(self.prefetch).unwrap_or(u32::MAX);
        match tokio::time::timeout(
            self.shutdown_timeout,
            self.shared.prefetch.acquire_many(all),
        )
        .await
        {
            Ok(_) => tracing::info!("all tasks finished"),
            Err(_) => {
                tracing::warn!(timeout = ?self.shutdown_timeout, "shutting down with tasks still running")
            }
        }
        self.listener.abort();
        self.shared.container.close().await;
        tracing::info!("worker stopped");
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully. A second signal during
    /// the graceful shutdown exits the process at once (status 130), as Celery's cold
    /// shutdown does.
    pub async fn run_until_signal(self) -> Result<()> {
        wait_for_signal().await?;
        tracing::warn!("shutdown requested: finishing running tasks (signal again to exit now)");
        tokio::select! {
            () = self.shutdown() => Ok(()),
            result = wait_for_signal() => {
                result?;
                tracing::error!("second signal: exiting without waiting for running tasks");
                std::process::exit(130);
            }
        }
    }
}

async fn wait_for_signal() -> Result<()> {
    let signal_error = |e: std::io::Error| {
        Error::new(ErrorKind::Config, "could not listen for signals").with_source(e)
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.map_err(signal_error),
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(signal_error)
    }
}
