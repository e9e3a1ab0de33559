//! The start-up banner, laid out like Celery's (`celery/apps/worker.py::BANNER`), so a
//! bug report or a glance at a container's log shows how the worker was configured.

use std::fmt;
use std::time::Duration;

use crate::worker::WorkerSettings;

/// What the worker prints at start: node name and version, broker, backend, limits,
/// health checks, the queues it consumes and every task with its queue.
///
/// ```
/// let app = celerity::App::memory();
/// let mut worker = app.worker();
/// worker.hostname("celery@docs").concurrency(2).queues(["celery"]);
/// let banner = celerity::cli::Banner::new(&worker.settings(), "memory://", "memory://");
/// assert!(banner.to_string().starts_with("celery@docs v"));
/// ```
#[derive(Debug, Clone)]
pub struct Banner {
    settings: WorkerSettings,
    broker: String,
    backend: String,
    visibility_timeout: Option<Duration>,
    health_url: Option<String>,
    metrics_url: Option<String>,
    ready_file: Option<String>,
}

impl Banner {
    /// The banner of a worker with `settings` on the described broker and backend (use
    /// their `describe()`, which leaves credentials out).
    pub fn new(settings: &WorkerSettings, broker: &str, backend: &str) -> Self {
        Banner {
            settings: settings.clone(),
            broker: broker.to_owned(),
            backend: backend.to_owned(),
            visibility_timeout: None,
            health_url: None,
            metrics_url: None,
            ready_file: None,
        }
    }

    /// Shows the Redis broker's visibility timeout: how long a task taken by a worker that
    /// died stays away before another worker gets it.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = Some(timeout);
        self
    }

    /// Shows the health endpoint.
    pub fn health_url(mut self, url: String) -> Self {
        self.health_url = Some(url);
        self
    }

    /// Shows the Prometheus metrics endpoint.
    pub fn metrics_url(mut self, url: String) -> Self {
        self.metrics_url = Some(url);
        self
    }

    /// Shows the ready file.
    pub fn ready_file(mut self, path: String) -> Self {
        self.ready_file = Some(path);
        self
    }
}

impl fmt::Display for Banner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "{} v{} (celerity)",
            s.hostname,
            env!("CARGO_PKG_VERSION")
        )?;
        writeln!(f)?;
        writeln!(f, "[config]")?;
        writeln!(f, ".> transport:   {}", self.broker)?;
        writeln!(f, ".> results:     {}", self.backend)?;
        writeln!(
            f,
            ".> concurrency: {} (prefetch {})",
            s.concurrency,
            s.concurrency.saturating_mul(s.prefetch_multiplier)
        )?;
        writeln!(f, ".> shutdown:    waits {}", seconds(s.shutdown_timeout))?;
        // Celery's wording.
        if s.task_events {
            writeln!(f, ".> task events: ON")?;
        } else {
            writeln!(
                f,
                ".> task events: OFF (enable -E to monitor tasks in this worker)"
            )?;
        }
        if let Some(timeout) = self.visibility_timeout {
            writeln!(
                f,
                ".> visibility:  unacked tasks return after {}",
                seconds(timeout)
            )?;
        }
        if let Some(url) = &self.health_url {
            writeln!(f, ".> health:      {url}")?;
        }
        if let Some(url) = &self.metrics_url {
            writeln!(f, ".> metrics:     {url}")?;
        }
        if let Some(path) = &self.ready_file {
            writeln!(f, ".> ready file:  {path}")?;
        }
        writeln!(f)?;
        writeln!(f, "[queues]")?;
        for queue in &s.queues {
            writeln!(f, ".> {queue}")?;
        }
        writeln!(f)?;
        writeln!(f, "[tasks]")?;
        let width = s.tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for task in &s.tasks {
            // A task whose queue is not consumed will not run here: say so, since that
            // is the usual reason a task stays PENDING.
            let consumed = s.queues.iter().any(|q| q == task.queue);
            let note = if consumed {
                ""
            } else {
                "  (queue not consumed)"
            };
            writeln!(f, "  . {:<width$}  {}{note}", task.name, task.queue)?;
        }
        Ok(())
    }
}

fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs.fract() == 0.0 {
        format!("{secs}s")
    } else {
        format!("{secs:.3}s")
    }
}
