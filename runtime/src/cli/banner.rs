//! The start-up banner, laid out like Celery's (`celery/apps/worker.py::BANNER`), so a
//! bug report or a glance at a container's log shows how the worker was configured.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::beat::{Recurrence, Schedule};
use crate::worker::WorkerSettings;

/// What the worker prints at start: node name and version, broker, backend, limits,
/// health checks, the queues it consumes, every task with its queue, and the periodic
/// tasks registered with their next run.
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
    beat: Option<String>,
    now: DateTime<Utc>,
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
            beat: None,
            now: Utc::now(),
        }
    }

    /// Says that this worker runs the scheduler, coordinated as described.
    pub fn beat(mut self, coordination: String) -> Self {
        self.beat = Some(coordination);
        self
    }

    /// Shows the next run of each schedule as seen at `now` (default: when the banner was
    /// made).
    pub fn now(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
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
        if !s.schedules.is_empty() {
            writeln!(f)?;
            match &self.beat {
                Some(coordination) => writeln!(
                    f,
                    "[schedules] sent by this worker's scheduler: {coordination}"
                )?,
                None => writeln!(
                    f,
                    "[schedules] not sent by this worker (--beat, or the `beat` command, sends them)"
                )?,
            }
            schedules(f, &s.schedules, self.now)?;
        }
        Ok(())
    }
}

/// What the `beat` command prints at start: its name and version, the broker it sends to,
/// how it coordinates with its replicas, and each schedule with its next run.
///
/// ```
/// let app = celerity::App::memory();
/// let worker = app.worker();
/// let banner = celerity::cli::BeatBanner::new(&worker.settings(), "memory://", "alone");
/// assert!(banner.to_string().contains("[schedules]"));
/// ```
#[derive(Debug, Clone)]
pub struct BeatBanner {
    hostname: String,
    schedules: Vec<Schedule>,
    broker: String,
    coordination: String,
    now: DateTime<Utc>,
}

impl BeatBanner {
    /// The banner of a scheduler of the schedules in `settings`, sending to the described
    /// broker and coordinated as described.
    pub fn new(settings: &WorkerSettings, broker: &str, coordination: &str) -> Self {
        BeatBanner {
            hostname: settings.hostname.clone(),
            schedules: settings.schedules.clone(),
            broker: broker.to_owned(),
            coordination: coordination.to_owned(),
            now: Utc::now(),
        }
    }

    /// Shows the next run of each schedule as seen at `now`.
    pub fn now(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }
}

impl fmt::Display for BeatBanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} v{} (celerity beat)",
            self.hostname,
            env!("CARGO_PKG_VERSION")
        )?;
        writeln!(f)?;
        writeln!(f, "[config]")?;
        writeln!(f, ".> transport:   {}", self.broker)?;
        writeln!(f, ".> lease:       {}", self.coordination)?;
        writeln!(f)?;
        writeln!(f, "[schedules]")?;
        schedules(f, &self.schedules, self.now)
    }
}

/// One line per schedule: its name, task, queue, when it runs and its next run (in UTC,
/// and on the crontab's own wall clock).
fn schedules(
    f: &mut fmt::Formatter<'_>,
    schedules: &[Schedule],
    now: DateTime<Utc>,
) -> fmt::Result {
    let rows: Vec<[String; 4]> = schedules
        .iter()
        .map(|schedule| {
            let next = match schedule.recurrence.next_after(now) {
                None => "never".to_owned(),
                Some(at) => {
                    let utc = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    match (&schedule.recurrence, schedule_tz(schedule)) {
                        (Recurrence::Crontab(_), Some(tz)) if tz != chrono_tz::UTC => {
                            format!(
                                "{utc} ({})",
                                at.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
                            )
                        }
                        _ => utc,
                    }
                }
            };
            [
                schedule.name.to_owned(),
                format!("{} → {}", schedule.task.name, schedule.queue_name()),
                schedule.recurrence.to_string(),
                next,
            ]
        })
        .collect();
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (name, task, when) = (width(0), width(1), width(2));
    for [a, b, c, next] in &rows {
        writeln!(f, "  . {a:<name$}  {b:<task$}  {c:<when$}  next {next}")?;
    }
    Ok(())
}

fn schedule_tz(schedule: &Schedule) -> Option<chrono_tz::Tz> {
    match schedule.recurrence {
        Recurrence::Crontab(crontab) => crontab.tz(),
        Recurrence::Every(_) => None,
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
