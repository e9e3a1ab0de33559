//! The worker: consumes task messages, runs them concurrently, stores their results.

mod args;
mod consume;
mod control;
mod dispatch;
mod execute;
mod held;
mod inspect;
mod limits;
mod links;
mod log;
mod metrics;
mod observe;
mod panics;
mod pool;
mod queues;
mod refuse;
mod request;
mod shared;
mod state;
mod stats;
mod terminate;
mod trim;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use args::decode_args;
pub use dispatch::Invoke;
pub use metrics::WorkerMetrics;
use refuse::DEFAULT_MAX_MESSAGE_SIZE;

use crate::beat::Schedule;
use crate::client::Client;
use crate::container::{Component, ContainerBuilder, Singleton};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventDispatcher, WORKER_HEARTBEAT, WORKER_OFFLINE, WORKER_ONLINE};
use crate::spec::TaskSpec;
use dispatch::TaskTable;
use shared::Shared;

/// The module of the exceptions Celery itself raises (`NotRegistered`, `TimeLimitExceeded`,
/// `TaskRevokedError`, …).
const CELERY_EXCEPTIONS: &str = "celery.exceptions";

/// Celery's `worker_prefetch_multiplier` default.
pub(crate) const DEFAULT_PREFETCH_MULTIPLIER: usize = 4;

/// How many tasks a worker holds for their ETA outside its prefetch window by default:
/// about 150 MB of held messages on Redis (about 3 KB each, measured with
/// `examples/held_eta.rs`).
pub const DEFAULT_MAX_HELD_ETA: usize = 50_000;

/// Configures a worker: which tasks it runs, with which singletons, how many at once.
pub struct WorkerBuilder {
    client: Client,
    table: TaskTable,
    container: ContainerBuilder,
    concurrency: usize,
    prefetch_multiplier: usize,
    queues: Option<Vec<String>>,
    shutdown_timeout: Duration,
    hostname: String,
    max_message_size: usize,
    max_held_eta: usize,
    result_extended: bool,
    metrics: bool,
    task_events: bool,
    schedules: Vec<Schedule>,
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
            hostname: expand_hostname(DEFAULT_HOSTNAME),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_held_eta: DEFAULT_MAX_HELD_ETA,
            result_extended: false,
            metrics: false,
            task_events: false,
            schedules: Vec::new(),
        }
    }

    /// Adds periodic tasks (a generated `SCHEDULES` table) for the scheduler that the
    /// worker program runs inside this worker (`--beat`) or on its own (`beat`). The
    /// worker itself only lists them: registering a schedule sends nothing.
    pub fn schedules(&mut self, schedules: &[Schedule]) -> &mut Self {
        self.schedules.extend_from_slice(schedules);
        self
    }

    /// How many tasks the worker holds for their ETA or countdown (pending retries
    /// included) outside its prefetch window; default [`DEFAULT_MAX_HELD_ETA`]. Up to
    /// this many, held tasks do not count against the window and the broker's prefetch is
    /// raised for them, as Celery does. Beyond it, each held task keeps its place in the
    /// window, so once the window is full of them the worker fetches nothing more until
    /// the earliest comes due: its memory stays bounded (about 3 KB a held task) and no
    /// message is requeued or lost. Tasks behind them on the broker wait, so size it above
    /// the backlog of scheduled tasks you expect, or route long countdowns to a queue of
    /// their own. Celery holds without a limit.
    pub fn max_held_eta(&mut self, count: usize) -> &mut Self {
        self.max_held_eta = count;
        self
    }

    /// The largest message, in bytes (body and headers), the worker decodes; default
    /// 16 MiB, RabbitMQ's default `max_message_size`. A larger one is logged, rejected without
    /// requeue, and recorded as a FAILURE (`InvalidTaskError`) when it has a task id:
    /// decoding a message takes several times its size in memory, so one hostile message
    /// must not be able to exhaust it.
    pub fn max_message_size(&mut self, bytes: usize) -> &mut Self {
        self.max_message_size = bytes.max(1);
        self
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

    /// Names this worker (Celery's node name, `-n`), as it appears in the banner, the logs
    /// and the STARTED results of tracked tasks. `%h` stands for the machine's host name,
    /// `%n` for its first label and `%d` for the rest, as in Celery: the default is
    /// `celery@%h`.
    pub fn hostname(&mut self, hostname: &str) -> &mut Self {
        self.hostname = expand_hostname(hostname);
        self
    }

    /// Whether stored results also record the task's `name`, `args`, `kwargs`, the
    /// `worker` that ran it, its `retries` and its `queue`, as Celery's `result_extended`
    /// setting does; off by default, as in Celery. Python reads them as `AsyncResult.name`,
    /// `.args`, `.kwargs`, `.worker`, `.retries` and `.queue`. The arguments are stored
    /// with every state the worker records (STARTED, RETRY, SUCCESS, FAILURE, REVOKED), so
    /// large arguments make large results. `group_id` and `parent_id` are recorded either
    /// way, whenever the task has them.
    pub fn result_extended(&mut self, extended: bool) -> &mut Self {
        self.result_extended = extended;
        self
    }

    /// Whether the worker keeps Prometheus metrics ([`Worker::metrics`]): tasks received,
    /// started, succeeded, failed, retried and revoked per task name and queue, runtime
    /// and queue-latency histograms, the tasks held now, and reconnects. Off by default:
    /// when on, each step of a task's life updates a few atomic counters.
    pub fn metrics(&mut self, metrics: bool) -> &mut Self {
        self.metrics = metrics;
        self
    }

    /// Whether the worker sends task events (`task-received`, `task-started`,
    /// `task-succeeded`, …) for monitors such as Flower and `celery events`: Celery's `-E`
    /// and `worker_send_task_events`, off by default as in Celery. Worker events
    /// (`worker-online`, a `worker-heartbeat` every two seconds, `worker-offline`) are sent
    /// either way. Remote control turns task events on and off while the worker runs
    /// (Celery's `enable_events` and `disable_events`, which Flower sends), as does
    /// [`Worker::set_task_events`]. See [`events`](crate::events).
    pub fn task_events(&mut self, enabled: bool) -> &mut Self {
        self.task_events = enabled;
        self
    }

    /// What the worker will do once started: its name, limits, queues and tasks.
    pub fn settings(&self) -> WorkerSettings {
        let mut tasks: Vec<_> = self.table.specs().collect();
        tasks.sort_by_key(|spec| spec.name);
        WorkerSettings {
            hostname: self.hostname.clone(),
            concurrency: self.concurrency,
            prefetch_multiplier: self.prefetch_multiplier,
            queues: self.consumed_queues(),
            tasks,
            shutdown_timeout: self.shutdown_timeout,
            max_message_size: self.max_message_size,
            max_held_eta: self.max_held_eta,
            result_extended: self.result_extended,
            task_events: self.task_events,
            schedules: self.schedules.clone(),
        }
    }

    /// The queues set with [`queues`](Self::queues), else those of the registered tasks.
    fn consumed_queues(&self) -> Vec<String> {
        match &self.queues {
            Some(queues) => queues.clone(),
            None => {
                let mut queues: Vec<String> =
                    self.table.specs().map(|s| s.queue.to_owned()).collect();
                queues.sort();
                queues.dedup();
                queues
            }
        }
    }

    /// Checks the wiring, builds the singletons, and starts consuming on the current
    /// tokio runtime. A missing dependency or a cycle fails here, before any message is
    /// taken from the broker.
    ///
    /// The first worker of a process adds a step to the panic hook, before the hook
    /// already set: it notes where a panic happens, so that a task's panic is recorded
    /// with its file and line.
    pub async fn start(mut self) -> Result<Worker> {
        if self.table.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                "the worker has no registered tasks",
            ));
        }
        let queues = self.consumed_queues();
        // Memory freed after a large message goes back to the system.
        trim::at_worker_start();
        panics::note_panic_places();
        let container = std::mem::take(&mut self.container)
            .build(&self.client)
            .await
            .map_err(|e| Error::new(ErrorKind::Container, e.to_string()))?;
        let streams = async {
            let broker = self.client.broker();
            // Revokes arrive in the mailbox where there is one; only a transport without
            // one needs the separate control stream (else every revoke came twice).
            let mailbox = broker.mailbox(&self.hostname).await?;
            let control = match mailbox {
                Some(_) => None,
                None => Some(broker.control().await?),
            };
            let consumer = broker.consume(&queues).await?;
            Ok::<_, Error>((control, mailbox, consumer))
        };
        let (control, mailbox, consumer) = match streams.await {
            Ok(streams) => streams,
            Err(error) => {
                container.close().await;
                return Err(error);
            }
        };
        let (stop, stopped) = watch::channel(false);
        let concurrency = self.concurrency;
        let shutdown_timeout = self.shutdown_timeout;
        let (shared, queue_changes) = self.into_shared(container, queues.clone(), stopped.clone());
        let prefetch = shared.pool.window();
        let listener =
            control.map(|control| tokio::spawn(execute::listen(shared.clone(), control)));
        let mailbox = mailbox.map(|mailbox| tokio::spawn(control::answer(shared.clone(), mailbox)));
        let publisher = tokio::spawn(crate::events::publish(
            shared.events.outbox().clone(),
            shared.client.broker().clone(),
        ));
        shared.announce(WORKER_ONLINE);
        let heart = tokio::spawn({
            let shared = shared.clone();
            let mut dropped = stopped.clone();
            async move {
                let beating = crate::events::heartbeats(|| shared.announce(WORKER_HEARTBEAT));
                // A worker dropped without `shutdown` stops consuming (its stop signal is
                // gone); it stops beating too, and its last events are published.
                let worker_dropped = async { while dropped.changed().await.is_ok() {} };
                tokio::select! {
                    () = beating => {}
                    () = worker_dropped => shared.events.outbox().close(),
                }
            }
        });
        tracing::info!(queues = ?queues, concurrency, prefetch, "{} ready.", shared.hostname);
        let timer = tokio::spawn({
            let shared = shared.clone();
            async move {
                let start = |waiting| {
                    tokio::spawn(execute::admit(shared.clone(), waiting));
                };
                shared.held.run(start).await;
            }
        });
        let (consuming_tx, consuming) = watch::channel(true);
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                let consumer = consume::consume(shared, consumer, queue_changes, stopped).await;
                consuming_tx.send_replace(false);
                consumer
            }
        });
        Ok(Worker {
            stop,
            task,
            timer,
            listener,
            mailbox,
            heart,
            publisher,
            shared,
            queues,
            consuming,
            shutdown_timeout,
        })
    }

    /// The state the worker's parts share, consuming `queues` once started, and the
    /// receiving end of the requests to change them.
    fn into_shared(
        self,
        container: crate::container::Container,
        queues: Vec<String>,
        stopping: watch::Receiver<bool>,
    ) -> (
        Arc<Shared>,
        tokio::sync::mpsc::UnboundedReceiver<queues::QueueChange>,
    ) {
        let (consumed, queue_changes) = queues::ConsumedQueues::new(queues);
        let metrics = self.metrics.then(|| metrics::Metrics::new(&self.hostname));
        let events = EventDispatcher::new(&self.hostname, self.task_events);
        let shared = Shared {
            client: self.client,
            table: self.table,
            container: Arc::new(container),
            pool: pool::Pool::new(self.concurrency, self.prefetch_multiplier),
            held: held::HeldTasks::new(self.max_held_eta),
            stopping,
            revoked: Default::default(),
            limits: Default::default(),
            running: Default::default(),
            queues: consumed,
            hostname: self.hostname,
            result_extended: self.result_extended,
            max_message_size: self.max_message_size,
            metrics,
            state: Default::default(),
            started: std::time::Instant::now(),
            shutdown_requested: watch::channel(false).0,
            events,
        };
        (Arc::new(shared), queue_changes)
    }

    /// The state a worker built by this builder would share, without starting it: for
    /// tests of the worker's parts.
    #[cfg(test)]
    pub(crate) async fn shared_for_tests(
        mut self,
    ) -> (
        Arc<Shared>,
        tokio::sync::mpsc::UnboundedReceiver<queues::QueueChange>,
    ) {
        let queues = self.consumed_queues();
        let container = std::mem::take(&mut self.container)
            .build(&self.client)
            .await
            .expect("the test's container builds");
        self.into_shared(container, queues, watch::channel(false).1)
    }
}

/// A worker's configuration, as [`WorkerBuilder::settings`] reports it (the worker's
/// banner shows it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerSettings {
    /// The node name, e.g. `celery@web-1`.
    pub hostname: String,
    /// How many tasks run at once.
    pub concurrency: usize,
    /// Messages held per concurrency slot.
    pub prefetch_multiplier: usize,
    /// The queues consumed.
    pub queues: Vec<String>,
    /// The registered tasks, sorted by name.
    pub tasks: Vec<&'static TaskSpec>,
    /// How long shutdown waits for running tasks.
    pub shutdown_timeout: Duration,
    /// The largest message decoded, in bytes.
    pub max_message_size: usize,
    /// How many tasks are held for their ETA outside the prefetch window.
    pub max_held_eta: usize,
    /// Whether results record the task's name, arguments, worker, retries and queue.
    pub result_extended: bool,
    /// Whether the worker sends task events at start.
    pub task_events: bool,
    /// The periodic tasks registered, in the order they were.
    pub schedules: Vec<Schedule>,
}

/// A running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    /// The consuming loop; it hands the consumer back when it stops.
    task: JoinHandle<Box<dyn crate::broker::Consumer>>,
    /// Starts held tasks when their ETA comes.
    timer: JoinHandle<()>,
    listener: Option<JoinHandle<()>>,
    /// Answers Celery's remote-control commands, where the broker has a mailbox.
    mailbox: Option<JoinHandle<()>>,
    /// Sends the worker's heartbeats.
    heart: JoinHandle<()>,
    /// Publishes the worker's events.
    publisher: JoinHandle<()>,
    shared: Arc<Shared>,
    queues: Vec<String>,
    consuming: watch::Receiver<bool>,
    shutdown_timeout: Duration,
}

/// Whether a worker still takes messages from the broker: what a health check reports.
/// Cheap to clone; it outlives the worker.
#[derive(Debug, Clone)]
pub struct WorkerStatus {
    consuming: watch::Receiver<bool>,
}

impl WorkerStatus {
    /// True from start until shutdown begins, unless the consumer stopped on its own.
    pub fn is_consuming(&self) -> bool {
        // A closed channel means the consumer task is gone (it panicked or was dropped).
        *self.consuming.borrow() && self.consuming.has_changed().is_ok()
    }

    /// Resolves when the worker stops consuming, for whatever reason.
    pub async fn stopped(&mut self) {
        let _ = self.consuming.wait_for(|consuming| !consuming).await;
    }
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

    /// The queues this worker was started with. Celery's `add_consumer` and
    /// `cancel_consumer` commands change what it consumes while it runs; `celery inspect
    /// active_queues` reports that.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// This worker's node name, e.g. `celery@web-1`.
    pub fn hostname(&self) -> &str {
        &self.shared.hostname
    }

    /// The worker's Prometheus metrics, when [`WorkerBuilder::metrics`] turned them on.
    pub fn metrics(&self) -> Option<WorkerMetrics> {
        WorkerMetrics::new(self.shared.clone(), self.consuming.clone())
    }

    /// Turns task events on or off while the worker runs, as Celery's `enable_events` and
    /// `disable_events` commands do (see [`WorkerBuilder::task_events`]).
    pub fn set_task_events(&self, enabled: bool) {
        self.shared.events.set_task_events(enabled);
    }

    /// Whether the worker sends task events now.
    pub fn task_events(&self) -> bool {
        self.shared.events.task_events()
    }

    /// A handle telling whether this worker is consuming, for health checks.
    pub fn status(&self) -> WorkerStatus {
        WorkerStatus {
            consuming: self.consuming.clone(),
        }
    }

    /// Stops consuming, returns to the broker every message held and not started (tasks
    /// waiting for their ETA or countdown, pending retries), waits for running tasks and
    /// those already given a place to run (up to the shutdown timeout), then closes the
    /// consumer and the singletons.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let consumer = self.task.await.ok();
        // Back to the broker at once, so another worker runs them on time: kombu's Redis
        // channel does the same on close (`QoS.restore_unacked_once`), and Celery's AMQP
        // channel close makes the broker requeue them.
        self.shared.held.close().await;
        let _ = self.timer.await;
        let pool = &self.shared.pool;
        let all = u32::try_from(pool.window()).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.shutdown_timeout, pool.prefetch.acquire_many(all)).await {
            Ok(_) => tracing::info!("all tasks finished"),
            Err(_) => {
                tracing::warn!(timeout = ?self.shutdown_timeout, "shutting down with tasks still running")
            }
        }
        pool.prefetch.close();
        // Heartbeats until every task is done: the worker is alive while it drains.
        self.heart.abort();
        self.shared.announce(WORKER_OFFLINE);
        self.shared.events.outbox().close();
        let mut publisher = self.publisher;
        if tokio::time::timeout(EVENTS_FLUSH_TIMEOUT, &mut publisher)
            .await
            .is_err()
        {
            publisher.abort();
            tracing::warn!(timeout = ?EVENTS_FLUSH_TIMEOUT, "stopped without publishing every monitoring event");
        }
        // Closed only now, so running tasks could still acknowledge on its channel: an
        // AMQP channel closed earlier would have requeued them and they would run twice.
        drop(consumer);
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        if let Some(mailbox) = &self.mailbox {
            mailbox.abort();
        }
        self.shared.container.close().await;
        tracing::info!("worker stopped");
    }

    /// Resolves when remote control asks this worker to shut down: Celery's
    /// `app.control.shutdown()` or `celery control shutdown`, which stop a Celery worker as
    /// SIGTERM does. [`run_until_signal`](Self::run_until_signal) then shuts down; a
    /// program that runs the worker otherwise awaits this and calls
    /// [`shutdown`](Self::shutdown).
    pub fn shutdown_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut requested = self.shared.shutdown_requested.subscribe();
        async move {
            // The sender lives as long as the worker's shared state: a closed channel
            // means the worker is gone, and nothing is left to shut down.
            if requested.wait_for(|asked| *asked).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs until SIGINT or SIGTERM, or until remote control asks it to shut down
    /// ([`shutdown_requested`](Self::shutdown_requested)), then shuts down gracefully. A
    /// signal during the graceful shutdown exits the process at once (status 130), as
    /// Celery's cold shutdown does.
    pub async fn run_until_signal(self) -> Result<()> {
        self.run_until_signal_and(async {}).await
    }

    /// As [`Self::run_until_signal`], running `before_shutdown` (stopping a scheduler
    /// that runs beside the worker) once shutdown is requested, before the worker drains.
    pub(crate) async fn run_until_signal_and(
        self,
        before_shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::select! {
            signalled = wait_for_signal() => {
                signalled?;
                tracing::warn!("shutdown requested: finishing running tasks (signal again to exit now)");
            }
            () = self.shutdown_requested() => {
                tracing::warn!("shutdown requested by remote control: finishing running tasks (signal to exit now)");
            }
        }
        before_shutdown.await;
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

/// How long a stopping worker waits for its last events (`worker-offline` among them) to
/// reach the broker.
const EVENTS_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Celery's default node name.
pub(crate) const DEFAULT_HOSTNAME: &str = "celery@%h";

/// Expands Celery's node name variables (`celery/utils/nodenames.py`): `%h` the host
/// name, `%n` its first label, `%d` the rest, `%%` a percent sign.
fn expand_hostname(template: &str) -> String {
    let host = crate::host::hostname();
    let (name, domain) = host.split_once('.').unwrap_or((host, ""));
    let mut out = String::with_capacity(template.len() + host.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('n') => out.push_str(name),
            Some('d') => out.push_str(domain),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere).
pub(crate) async fn wait_for_signal() -> Result<()> {
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
