//! The worker's Prometheus metrics, opt-in ([`WorkerBuilder::metrics`]): what each task
//! name did on each queue, how long tasks ran and waited, and what the worker holds now.
//!
//! Names and labels follow the Celery exporters' conventions (`celery_task_received_total`
//! with `name`, `hostname` and `queue_name`, the `celery_task_runtime` histogram), so
//! dashboards and alerts written for Celery fleets read Celerity workers unchanged.
//!
//! [`WorkerBuilder::metrics`]: super::WorkerBuilder::metrics

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::observe::Lifecycle;
use super::shared::Shared;
use super::state::Moved;

/// Histogram buckets in seconds: from half a millisecond (a Rust task's usual runtime) to
/// five minutes.
const BUCKETS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    name: String,
    hostname: String,
    queue_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    name: String,
    hostname: String,
    queue_name: String,
    exception: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    hostname: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: String,
}

/// Registers each `(name, help, metric)`.
fn register_each<'a, M>(
    registry: &mut Registry,
    metrics: impl IntoIterator<Item = (&'static str, &'static str, &'a M)>,
) where
    M: prometheus_client::registry::Metric + Clone,
{
    for (name, help, metric) in metrics {
        registry.register(name, help, metric.clone());
    }
}

/// A task name's series, by queue.
type ByQueue = HashMap<Box<str>, Arc<Series>>;

type Histograms = Family<TaskLabels, Histogram, fn() -> Histogram>;

/// The metrics of one task name on one queue, looked up once and then updated without
/// building labels again.
struct Series {
    received: Counter,
    started: Counter,
    succeeded: Counter,
    retried: Counter,
    revoked: Counter,
    runtime: Histogram,
    waited: Histogram,
}

struct Families {
    received: Family<TaskLabels, Counter>,
    started: Family<TaskLabels, Counter>,
    succeeded: Family<TaskLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    retried: Family<TaskLabels, Counter>,
    revoked: Family<TaskLabels, Counter>,
    runtime: Histograms,
    waited: Histograms,
    up: Family<WorkerLabels, Gauge>,
    active: Family<WorkerLabels, Gauge>,
    reserved: Family<WorkerLabels, Gauge>,
    scheduled: Family<WorkerLabels, Gauge>,
    concurrency: Family<WorkerLabels, Gauge>,
    reconnects: Family<TransportLabels, Counter>,
}

/// A worker's metrics registry.
pub(crate) struct Metrics {
    registry: Registry,
    hostname: String,
    families: Families,
    /// Per task name, per queue.
    series: RwLock<HashMap<Box<str>, ByQueue>>,
}

impl Metrics {
    pub(crate) fn new(hostname: &str) -> Self {
        let families = Families {
            received: Family::default(),
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            revoked: Family::default(),
            runtime: Family::new_with_constructor(histogram),
            waited: Family::new_with_constructor(histogram),
            up: Family::default(),
            active: Family::default(),
            reserved: Family::default(),
            scheduled: Family::default(),
            concurrency: Family::default(),
            reconnects: Family::default(),
        };
        let mut registry = Registry::default();
        let f = &families;
        let counters = [
            (
                "celery_task_received",
                "Tasks received by the worker",
                &f.received,
            ),
            ("celery_task_started", "Tasks started", &f.started),
            (
                "celery_task_succeeded",
                "Tasks that returned a value",
                &f.succeeded,
            ),
            (
                "celery_task_retried",
                "Task attempts that failed and were sent again",
                &f.retried,
            ),
            (
                "celery_task_revoked",
                "Tasks revoked, expired or terminated",
                &f.revoked,
            ),
        ];
        register_each(&mut registry, counters);
        registry.register(
            "celery_task_failed",
            "Tasks that failed for good, by exception type",
            f.failed.clone(),
        );
        registry.register(
            "celery_task_runtime",
            "How long tasks ran, in seconds",
            f.runtime.clone(),
        );
        registry.register(
            "celery_task_queue_latency_seconds",
            "How long tasks waited in the worker for a slot, from receipt (or their ETA) to start",
            f.waited.clone(),
        );
        let gauges = [
            (
                "celery_worker_up",
                "1 while the worker consumes, 0 once it stops",
                &f.up,
            ),
            ("celery_worker_tasks_active", "Tasks running now", &f.active),
            (
                "celery_worker_tasks_reserved",
                "Tasks prefetched and waiting for a slot",
                &f.reserved,
            ),
            (
                "celery_worker_tasks_scheduled",
                "Tasks held until their ETA or countdown",
                &f.scheduled,
            ),
            (
                "celery_worker_concurrency",
                "How many tasks may run at once",
                &f.concurrency,
            ),
        ];
        register_each(&mut registry, gauges);
        registry.register(
            "celerity_reconnects",
            "Connections to Redis or RabbitMQ re-established after a loss, by this process",
            f.reconnects.clone(),
        );
        Metrics {
            registry,
            hostname: hostname.to_owned(),
            families,
            series: RwLock::default(),
        }
    }

    fn labels(&self, name: &str, queue: &str) -> TaskLabels {
        TaskLabels {
            name: name.to_owned(),
            hostname: self.hostname.clone(),
            queue_name: queue.to_owned(),
        }
    }

    fn series(&self, name: &str, queue: &str) -> Arc<Series> {
        if let Some(found) = self
            .series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .and_then(|queues| queues.get(queue))
        {
            return found.clone();
        }
        let labels = self.labels(name, queue);
        let f = &self.families;
        let series = Arc::new(Series {
            received: f.received.get_or_create_owned(&labels),
            started: f.started.get_or_create_owned(&labels),
            succeeded: f.succeeded.get_or_create_owned(&labels),
            retried: f.retried.get_or_create_owned(&labels),
            revoked: f.revoked.get_or_create_owned(&labels),
            runtime: f.runtime.get_or_create_owned(&labels),
            waited: f.waited.get_or_create_owned(&labels),
        });
        let mut all = self.series.write().unwrap_or_else(|p| p.into_inner());
        all.entry(name.into())
            .or_default()
            .entry(queue.into())
            .or_insert(series)
            .clone()
    }

    /// Counts one step of a task's life; `moved` is what the worker's state said of it.
    pub(crate) fn record(&self, step: &Lifecycle<'_>, moved: Option<&Moved>) {
        let Some(moved) = moved else { return };
        let queue = &moved.queue;
        let finished = moved.name.as_deref().unwrap_or_default();
        match step {
            Lifecycle::Received { message, .. } => {
                self.series(&message.headers.task, queue).received.inc();
            }
            Lifecycle::Due { .. } | Lifecycle::Unregistered { .. } | Lifecycle::Rejected { .. } => {
            }
            Lifecycle::Started { name, .. } => {
                let series = self.series(name, queue);
                series.started.inc();
                series.waited.observe(moved.waited.as_secs_f64());
            }
            Lifecycle::Succeeded { runtime, .. } => {
                let series = self.series(finished, queue);
                series.succeeded.inc();
                series.runtime.observe(runtime.as_secs_f64());
            }
            Lifecycle::Failed { exception, .. } => {
                let labels = self.labels(finished, queue);
                let failed = FailedLabels {
                    name: labels.name,
                    hostname: labels.hostname,
                    queue_name: labels.queue_name,
                    exception: exception.exc_type.clone(),
                };
                self.families.failed.get_or_create(&failed).inc();
                // Since it started: its runtime.
                self.series(finished, queue)
                    .runtime
                    .observe(moved.waited.as_secs_f64());
            }
            Lifecycle::Retried { name, .. } => {
                self.series(name, queue).retried.inc();
            }
            Lifecycle::Revoked { .. } => {
                self.series(finished, queue).revoked.inc();
            }
        }
    }

    /// The registry in Prometheus's text format (OpenMetrics), with the gauges read now.
    fn render(&self, shared: &Shared, consuming: bool) -> String {
        let worker = WorkerLabels {
            hostname: self.hostname.clone(),
        };
        let f = &self.families;
        let (scheduled, reserved, active) = shared.state.phases();
        let gauges = [
            (&f.up, usize::from(consuming)),
            (&f.active, active),
            (&f.reserved, reserved),
            (&f.scheduled, scheduled),
            (&f.concurrency, shared.pool.concurrency()),
        ];
        for (family, value) in gauges {
            family
                .get_or_create(&worker)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        for (transport, count) in crate::broker::reconnects() {
            let counter = f.reconnects.get_or_create_owned(&TransportLabels {
                transport: transport.to_owned(),
            });
            // The process-wide count is the truth; the counter catches up to it.
            counter.inc_by(count.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// A running worker's metrics, for serving them: [`render`](Self::render) gives what a
/// Prometheus scrape of `/metrics` reads. The worker program serves it on its health
/// address with `--metrics`; a program that runs the worker in its own web server serves
/// it there. Cheap to clone.
#[derive(Clone)]
pub struct WorkerMetrics {
    shared: Arc<Shared>,
    consuming: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics")
            .field("hostname", &self.shared.hostname)
            .finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    /// The `Content-Type` of [`render`](Self::render)'s text.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    pub(crate) fn new(
        shared: Arc<Shared>,
        consuming: tokio::sync::watch::Receiver<bool>,
    ) -> Option<Self> {
        shared.metrics.as_ref()?;
        Some(WorkerMetrics { shared, consuming })
    }

    /// The metrics now, in the OpenMetrics text format Prometheus scrapes.
    pub fn render(&self) -> String {
        let consuming = *self.consuming.borrow() && self.consuming.has_changed().is_ok();
        self.shared
            .metrics
            .as_ref()
            .map(|metrics| metrics.render(&self.shared, consuming))
            .unwrap_or_default()
    }
}
