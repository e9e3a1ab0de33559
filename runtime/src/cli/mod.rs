//! The worker program: an application's `main` is one call, configured like
//! `celery worker` by flags and `CELERITY_*` environment variables.
//!
//! ```no_run
//! use std::process::ExitCode;
//!
//! fn main() -> ExitCode {
//!     celerity::cli::run_worker(|worker| {
//!         // Register the application's tasks and singletons, as a test would:
//!         // my_app::tasks::register_mailer::<my_app::SmtpMailer>(worker);
//!         # let _ = worker;
//!     })
//! }
//! ```
//!
//! At start it prints a banner (the node name, broker, backend, queues, concurrency and
//! every task with its queue), then logs one line per task event, readable or JSON; it
//! stops gracefully on SIGINT/SIGTERM. `--health-addr` and `--ready-file` tell an
//! orchestrator that the worker is alive and consuming.
//!
//! The same program runs the scheduler of the periodic tasks registered with
//! [`WorkerBuilder::schedules`]: inside the worker with `--beat` (Celery's `worker -B`), or
//! alone as `worker beat` (Celery's `celery beat`); see [`crate::beat`].

mod banner;
mod health;
mod logging;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub use banner::{Banner, BeatBanner};
pub use logging::{LogFormat, subscriber};

use crate::app::{App, Settings, parse_duration as duration, parse_timeout as timeout};
use crate::beat::{Beat, BeatSettings};
use crate::error::{Error, ErrorKind, Result};
use crate::worker::{DEFAULT_HOSTNAME, DEFAULT_PREFETCH_MULTIPLIER, WorkerBuilder, WorkerSettings};

/// The worker's command line. Every flag can also be set by its `CELERITY_*` variable;
/// a flag wins over its variable.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "worker",
    version,
    about = "Runs a Celerity worker: consumes task messages, runs them, stores their results"
)]
#[non_exhaustive]
pub struct WorkerArgs {
    /// Broker URL: memory://, redis://[:password@]host[:port][/db], sentinel://host:26379/0;sentinel://… or amqp://…; Redis URLs may be a ;-separated failover list
    // The variable's value is not shown in --help: it may hold a password.
    #[arg(
        short = 'b',
        long,
        global = true,
        env = crate::app::BROKER_URL_VAR,
        hide_env_values = true,
        default_value = crate::app::DEFAULT_URL,
        value_name = "URL"
    )]
    pub broker_url: String,

    /// Result backend URL: memory://, redis://[:password@]host[:port][/db], rediss://…, sentinel://… or rpc://
    #[arg(
        long,
        global = true,
        env = crate::app::RESULT_BACKEND_VAR,
        hide_env_values = true,
        default_value = crate::app::DEFAULT_URL,
        value_name = "URL"
    )]
    pub result_backend: String,

    /// Queues to consume, comma-separated [default: the queues of the registered tasks]
    #[arg(
        short = 'Q',
        long,
        env = "CELERITY_QUEUES",
        value_delimiter = ',',
        value_name = "QUEUE,…"
    )]
    pub queues: Vec<String>,

    /// How many tasks run at once [default: 4 per core]
    #[arg(short = 'c', long, env = "CELERITY_CONCURRENCY", value_parser = positive, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Messages held from the broker per concurrency slot (Celery's worker_prefetch_multiplier)
    #[arg(long, env = "CELERITY_PREFETCH_MULTIPLIER", default_value_t = DEFAULT_PREFETCH_MULTIPLIER, value_parser = positive, value_name = "N")]
    pub prefetch_multiplier: usize,

    /// Node name; %h is the host name, %n its first label, %d the rest
    #[arg(short = 'n', long, global = true, env = "CELERITY_HOSTNAME", default_value = DEFAULT_HOSTNAME, value_name = "NAME")]
    pub hostname: String,

    /// Log level or filter: error, warn, info, debug, trace, or directives such as `info,my_app=debug`
    #[arg(
        short = 'l',
        long,
        visible_alias = "loglevel",
        global = true,
        env = "CELERITY_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: String,

    /// Log lines for people (human) or for log pipelines (json)
    #[arg(long, global = true, env = "CELERITY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// How long a shutdown waits for running tasks: seconds, or a number with ms, s, m, h or d
    #[arg(long, env = "CELERITY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub shutdown_timeout: Duration,

    /// How long a fetched task may stay unacknowledged before another worker takes it back (Redis brokers: kombu's visibility_timeout) [default: the broker URL's ?visibility_timeout= in seconds, else 1h]
    #[arg(long, env = crate::app::VISIBILITY_TIMEOUT_VAR, value_parser = timeout, value_name = "DURATION")]
    pub visibility_timeout: Option<Duration>,

    /// How long storing a task's result is retried while a Redis result backend is unreachable; then the result is given up (a late-acked task is requeued) [default: 10m]
    #[arg(long, env = crate::app::RESULT_RETRY_WINDOW_VAR, value_parser = timeout, value_name = "DURATION")]
    pub result_retry_window: Option<Duration>,

    /// The master a sentinel:// broker's sentinels watch (kombu's master_name transport option) [default: the URL's ?master_name=]
    #[arg(long, global = true, env = crate::app::BROKER_MASTER_NAME_VAR, value_name = "NAME")]
    pub broker_master_name: Option<String>,

    /// The master a sentinel:// result backend's sentinels watch [default: the URL's ?master_name=]
    #[arg(long, global = true, env = crate::app::RESULT_BACKEND_MASTER_NAME_VAR, value_name = "NAME")]
    pub result_backend_master_name: Option<String>,

    /// Refuse messages larger than this (body and headers): bytes, or a number with KiB, MiB, GiB, KB, MB or GB; refused messages are logged, rejected, and fail their task id
    #[arg(long, env = "CELERITY_WORKER_MAX_MESSAGE_SIZE", default_value = "16MiB", value_parser = size, value_name = "SIZE")]
    pub max_message_size: usize,

    /// Hold at most this many tasks waiting for their ETA or countdown outside the prefetch window; beyond it each held task keeps a window place, so fetching pauses until the earliest is due
    #[arg(long, env = "CELERITY_WORKER_MAX_HELD_ETA", default_value_t = crate::DEFAULT_MAX_HELD_ETA, value_name = "COUNT")]
    pub max_held_eta: usize,

    /// Record each task's name, args, kwargs, worker, retries and queue with its result, as Celery's result_extended does
    // The variable reads true/false, 1/0, yes/no and on/off.
    #[arg(long, env = "CELERITY_RESULT_EXTENDED", value_parser = clap::builder::BoolishValueParser::new())]
    pub result_extended: bool,

    /// Send task events (task-received, task-started, task-succeeded, …) for monitors such as Flower and `celery events`, as Celery's -E does; worker events and heartbeats are sent either way
    // The variable reads true/false, 1/0, yes/no and on/off.
    #[arg(short = 'E', long, env = "CELERITY_WORKER_SEND_TASK_EVENTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub task_events: bool,

    /// Serve GET /healthz on this address: 200 while consuming, 503 otherwise
    #[arg(long, env = "CELERITY_HEALTH_ADDR", value_name = "HOST:PORT")]
    pub health_addr: Option<SocketAddr>,

    /// Also serve Prometheus metrics at GET /metrics on the --health-addr address
    #[arg(long, env = "CELERITY_WORKER_METRICS", value_parser = clap::builder::BoolishValueParser::new(), requires = "health_addr")]
    pub metrics: bool,

    /// Keep this file while consuming: written at start, touched every 5 s, removed at shutdown
    #[arg(long, env = "CELERITY_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Also run the scheduler of periodic tasks in this worker (Celery's worker -B); replicas share a lease, one sends
    // The variable reads true/false, 1/0, yes/no and on/off.
    #[arg(short = 'B', long, env = "CELERITY_BEAT", value_parser = clap::builder::BoolishValueParser::new())]
    pub beat: bool,

    /// The scheduler group: the schedulers of one group share one lease and one record of runs, and one of them sends
    #[arg(long, global = true, env = "CELERITY_BEAT_GROUP", default_value = crate::beat::DEFAULT_GROUP, value_name = "NAME")]
    pub beat_group: String,

    /// How long the scheduler's lease lasts unrenewed (renewed every third of it): the longest a replica waits to take over from a dead one
    #[arg(long, global = true, env = "CELERITY_BEAT_LEASE", default_value = "10s", value_parser = timeout, value_name = "DURATION")]
    pub beat_lease: Duration,

    /// Where a scheduler without Redis (memory:// or AMQP broker, no Redis result backend) keeps the last run of each schedule
    #[arg(long, global = true, env = "CELERITY_BEAT_STATE_FILE", default_value = crate::beat::DEFAULT_STATE_FILE, value_name = "PATH")]
    pub beat_state_file: PathBuf,

    /// `beat`: run only the scheduler of periodic tasks, no worker
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the worker program runs instead of a worker.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Runs the scheduler of periodic tasks alone (Celery's `celery beat`): it sends each run of the registered schedules and consumes nothing
    Beat,
}

/// Parses the command line and the environment, sets up logging, runs the worker with the
/// tasks `register` adds until SIGINT or SIGTERM, and returns the process's exit status.
pub fn run_worker<F>(register: F) -> ExitCode
where
    F: FnOnce(&mut WorkerBuilder),
{
    WorkerArgs::parse().run_to_exit(register)
}

impl WorkerArgs {
    /// Sets up logging, then runs the worker on a new multi-threaded tokio runtime and
    /// reports how it ended: success after a graceful shutdown, failure (logged) when it
    /// could not start.
    pub fn run_to_exit<F>(self, register: F) -> ExitCode
    where
        F: FnOnce(&mut WorkerBuilder),
    {
        let logging =
            subscriber(self.log_format, &self.log_level, std::io::stderr).and_then(|subscriber| {
                tracing::subscriber::set_global_default(subscriber).map_err(|e| {
                    Error::new(ErrorKind::Config, "a global logger is already set").with_source(e)
                })
            });
        if let Err(error) = logging {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "could not start the tokio runtime");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(self.run(register)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::FAILURE
            }
        }
    }

    /// Connects, registers, prints the banner to stdout, starts consuming, keeps the
    /// health checks up to date, and returns after a graceful shutdown on SIGINT or
    /// SIGTERM. Logging is the caller's.
    pub async fn run<F>(self, register: F) -> Result<()>
    where
        F: FnOnce(&mut WorkerBuilder),
    {
        if self.command == Some(Command::Beat) {
            return self.run_beat(register).await;
        }
        // Bound first: a port already in use stops the worker before it takes a message.
        let health = match self.health_addr {
            Some(addr) => Some(health::HealthServer::bind(addr).await?),
            None => None,
        };
        let (app, builder, settings) = self.connect(register).await?;
        let worker_settings = builder.settings();
        let beat = if self.beat {
            Some(self.beat(&app, &worker_settings, &settings).await?)
        } else {
            None
        };
        let mut banner = Banner::new(
            &worker_settings,
            &app.broker().describe(),
            &app.backend().describe(),
        );
        if let Some(beat) = &beat {
            banner = banner.beat(beat.coordination());
        }
        if let Some(timeout) = app.visibility_timeout() {
            banner = banner.visibility_timeout(timeout);
        }
        if let Some(health) = &health {
            banner = banner.health_url(format!("http://{}/healthz", health.local_addr()));
            if self.metrics {
                banner = banner.metrics_url(format!("http://{}/metrics", health.local_addr()));
            }
        }
        if let Some(path) = &self.ready_file {
            banner = banner.ready_file(path.display().to_string());
        }
        println!("{banner}");
        let worker = builder.start().await?;
        if let Some(health) = health {
            tokio::spawn(health.serve(
                worker.status(),
                worker.hostname().to_owned(),
                worker.metrics(),
            ));
        }
        let ready_file = self
            .ready_file
            .map(|path| tokio::spawn(health::keep_ready_file(path, worker.status())));
        let beat = beat.map(Beat::spawn);
        let outcome = worker
            .run_until_signal_and(async {
                if let Some(beat) = beat {
                    beat.stop().await;
                }
            })
            .await;
        if let Some(ready_file) = ready_file {
            // It removes the file as soon as consuming stops; wait for that.
            let _ = ready_file.await;
        }
        // Close broker connections cleanly (AMQP sends connection.close) before exiting.
        app.close().await;
        outcome
    }

    /// Runs the scheduler alone (the `beat` command): connects, prints its banner, sends
    /// the runs of the registered schedules until SIGINT or SIGTERM, then releases its
    /// lease.
    async fn run_beat<F>(self, register: F) -> Result<()>
    where
        F: FnOnce(&mut WorkerBuilder),
    {
        let (app, builder, settings) = self.connect(register).await?;
        let worker_settings = builder.settings();
        if worker_settings.schedules.is_empty() {
            tracing::warn!(
                "no schedule is registered: add the generated SCHEDULES with WorkerBuilder::schedules"
            );
        }
        let beat = self.beat(&app, &worker_settings, &settings).await?;
        let banner = BeatBanner::new(
            &worker_settings,
            &app.broker().describe(),
            &beat.coordination(),
        );
        println!("{banner}");
        let beat = beat.spawn();
        let outcome = crate::worker::wait_for_signal().await;
        tracing::warn!("shutdown requested: the scheduler stops");
        beat.stop().await;
        tracing::info!("scheduler stopped");
        app.close().await;
        outcome
    }

    /// The scheduler of the registered schedules, coordinated as the URLs allow.
    async fn beat(&self, app: &App, worker: &WorkerSettings, settings: &Settings) -> Result<Beat> {
        let beat_settings = BeatSettings::default()
            .group(&self.beat_group)
            .lease(self.beat_lease)
            .state_file(&self.beat_state_file)
            .hostname(&worker.hostname);
        Beat::for_urls(
            app.client(),
            &worker.schedules,
            &self.broker_url,
            &self.result_backend,
            settings,
            beat_settings,
        )
        .await
    }

    /// The app of the URLs and a worker builder with what `register` adds and these
    /// settings applied.
    async fn connect<F>(&self, register: F) -> Result<(App, WorkerBuilder, Settings)>
    where
        F: FnOnce(&mut WorkerBuilder),
    {
        let settings = Settings {
            visibility_timeout: self.visibility_timeout,
            result_retry_window: self.result_retry_window,
            broker_master_name: self.broker_master_name.clone(),
            result_backend_master_name: self.result_backend_master_name.clone(),
        };
        let app = App::from_urls_with(&self.broker_url, &self.result_backend, &settings).await?;
        let mut builder = app.worker();
        register(&mut builder);
        self.configure(&mut builder);
        Ok((app, builder, settings))
    }

    /// Applies these settings to `builder` (after the application registered its tasks).
    pub fn configure(&self, builder: &mut WorkerBuilder) {
        let queues: Vec<&str> = self
            .queues
            .iter()
            .map(|q| q.trim())
            .filter(|q| !q.is_empty())
            .collect();
        if !queues.is_empty() {
            builder.queues(queues);
        }
        if let Some(concurrency) = self.concurrency {
            builder.concurrency(concurrency);
        }
        builder
            .prefetch_multiplier(self.prefetch_multiplier)
            .hostname(&self.hostname)
            .shutdown_timeout(self.shutdown_timeout)
            .max_message_size(self.max_message_size)
            .max_held_eta(self.max_held_eta)
            .result_extended(self.result_extended)
            .metrics(self.metrics)
            .task_events(self.task_events);
    }
}

/// `1048576`, `512KiB`, `16MiB`, `1GiB`, `10MB`: a size in bytes.
fn size(text: &str) -> std::result::Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` (use KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    match number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(0) => Err("must be at least 1 byte".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("`{text}` is not a size (e.g. 16MiB, 1048576)")),
    }
}

fn positive(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_schema_language() {
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("1d"), Ok(Duration::from_secs(86400)));
        assert!(
            duration("5 days")
                .unwrap_err()
                .contains("unknown unit `days`")
        );
        assert!(duration("s").unwrap_err().contains("is not a duration"));
    }

    #[test]
    fn sizes_read_in_bytes_or_with_a_unit() {
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("16MiB"), Ok(16 << 20));
        assert_eq!(size("512 KiB"), Ok(512 << 10));
        assert_eq!(size("10MB"), Ok(10_000_000));
        assert!(size("0").is_err());
        assert!(size("16 furlongs").unwrap_err().contains("unknown unit"));
        assert!(size("MiB").unwrap_err().contains("is not a size"));
    }

    #[test]
    fn counts_are_positive() {
        assert_eq!(positive("8"), Ok(8));
        assert_eq!(positive("0"), Err("must be at least 1".into()));
        assert!(positive("-1").is_err());
    }
}
