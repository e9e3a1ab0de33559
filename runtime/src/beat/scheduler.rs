//! The scheduler: holds (or waits for) the lease, and while it holds it sends each run
//! that falls due, claimed first.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lease::{Acquire, Claim, Coordinator, LocalState};
use super::schedule::Schedule;
use crate::client::{Client, SendOptions};
use crate::error::{Error, ErrorKind, Result};

/// The lease a scheduler holds when none is set: a new leader takes over within this long
/// of the last one's death.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The scheduler group when none is named.
pub const DEFAULT_GROUP: &str = "default";

/// The state file of a scheduler without Redis when none is named (Celery beat's is
/// `celerybeat-schedule`, in the working directory too).
pub const DEFAULT_STATE_FILE: &str = "celerity-beat.json";

/// The longest a scheduler sleeps before it looks at the clock again: a wall clock set
/// back or forward is noticed within this long.
const MAX_SLEEP: Duration = Duration::from_secs(5);

/// The task ids of runs are UUIDs made from the group, the schedule and the run, in this
/// namespace: the same run always has the same id.
const RUN_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c0b_5a44_1d2e_4f7b_9a53_0e0c_be47_7a11);

/// The header naming the scheduled time of the run a message is (ISO 8601, UTC).
pub const RUN_HEADER: &str = "celerity_beat_run";

/// How a scheduler is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BeatSettings {
    /// The scheduler group: the replicas of one group share one lease and one record of
    /// runs, and one of them sends. Default: `default`.
    pub group: String,
    /// How long the lease lasts unrenewed; the holder renews it every third of it.
    pub lease: Duration,
    /// Where a scheduler without Redis keeps the last run of each schedule.
    pub state_file: PathBuf,
    /// The scheduler's name in its lease token and logs (the worker's node name).
    pub hostname: String,
}

impl Default for BeatSettings {
    fn default() -> Self {
        BeatSettings {
            group: DEFAULT_GROUP.to_owned(),
            lease: DEFAULT_LEASE,
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
            hostname: crate::host::hostname().to_owned(),
        }
    }
}

impl BeatSettings {
    /// Sets the scheduler group.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Sets the lease.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets the state file of a scheduler without Redis.
    #[must_use]
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = path.into();
        self
    }

    /// Sets the scheduler's name.
    #[must_use]
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }
}

/// A scheduler of periodic tasks (Celery beat), ready to run: it sends each run of its
/// schedules as an ordinary task message, through a [`Client`].
pub struct Beat {
    client: Client,
    schedules: Vec<Schedule>,
    coordinator: Arc<Coordinator>,
    settings: BeatSettings,
}

impl std::fmt::Debug for Beat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beat")
            .field("schedules", &self.schedules.len())
            .field("coordination", &self.coordinator.describe())
            .finish_non_exhaustive()
    }
}

impl Beat {
    /// A scheduler that runs alone (no lease: run one per state file), remembering the
    /// last run of each schedule in `settings.state_file`.
    pub fn local(client: Client, schedules: &[Schedule], settings: BeatSettings) -> Result<Beat> {
        let coordinator = Coordinator::Local(LocalState::new(&settings.state_file));
        Beat::new(client, schedules, coordinator, settings)
    }

    /// A scheduler whose replicas share a lease and the record of runs in the Redis at
    /// `url` (a `redis://`, `rediss://` or `sentinel://` URL, as for the broker).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn redis(
        client: Client,
        schedules: &[Schedule],
        url: &str,
        settings: BeatSettings,
    ) -> Result<Beat> {
        Beat::on_redis(client, schedules, url, None, settings).await
    }

    #[cfg(feature = "redis")]
    async fn on_redis(
        client: Client,
        schedules: &[Schedule],
        url: &str,
        master_name: Option<&str>,
        settings: BeatSettings,
    ) -> Result<Beat> {
        let lease = crate::redis::beat_lease::RedisLease::open(
            url,
            master_name,
            &settings.group,
            settings.lease,
            &settings.hostname,
        )
        .await?;
        Beat::new(
            client,
            schedules,
            Coordinator::Redis(Box::new(lease)),
            settings,
        )
    }

    /// A scheduler whose replicas share a lease and the record of runs on the RabbitMQ at
    /// `url` (an `amqp://`, `amqps://` or `pyamqp://` URL, as for the broker): the lease is
    /// an exclusive queue, which RabbitMQ gives up when its holder's connection closes, and
    /// the record a message the holder replaces in a transaction on that connection.
    #[cfg(feature = "amqp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
    pub async fn amqp(
        client: Client,
        schedules: &[Schedule],
        url: &str,
        settings: BeatSettings,
    ) -> Result<Beat> {
        let lease =
            crate::amqp::beat_lease::AmqpLease::open(url, &settings.group, settings.lease).await?;
        Beat::new(
            client,
            schedules,
            Coordinator::Amqp(Box::new(lease)),
            settings,
        )
    }

    /// The scheduler the worker program runs: coordinated through the broker's Redis,
    /// else the result backend's, else the broker's RabbitMQ, else alone with a state
    /// file.
    #[cfg(feature = "cli")]
    pub(crate) async fn for_urls(
        client: Client,
        schedules: &[Schedule],
        broker_url: &str,
        backend_url: &str,
        urls: &crate::app::Settings,
        settings: BeatSettings,
    ) -> Result<Beat> {
        #[cfg(feature = "redis")]
        for (url, master_name) in [
            (broker_url, urls.broker_master_name.as_deref()),
            (backend_url, urls.result_backend_master_name.as_deref()),
        ] {
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            if matches!(scheme, "redis" | "rediss" | "sentinel") {
                return Beat::on_redis(client, schedules, url, master_name, settings).await;
            }
        }
        #[cfg(feature = "amqp")]
        if matches!(
            broker_url.split_once("://").map(|(scheme, _)| scheme),
            Some("amqp" | "amqps" | "pyamqp")
        ) {
            return Beat::amqp(client, schedules, broker_url, settings).await;
        }
        let _ = (broker_url, backend_url, urls);
        Beat::local(client, schedules, settings)
    }

    fn new(
        client: Client,
        schedules: &[Schedule],
        coordinator: Coordinator,
        settings: BeatSettings,
    ) -> Result<Beat> {
        for schedule in schedules {
            if let super::Recurrence::Crontab(crontab) = schedule.recurrence {
                if crontab.tz().is_none() {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!(
                            "schedule `{}`: unknown time zone `{}`",
                            schedule.name,
                            crontab.timezone()
                        ),
                    ));
                }
            }
        }
        if settings.lease < Duration::from_millis(300) {
            return Err(Error::new(
                ErrorKind::Config,
                "the beat lease must be at least 300ms: it is renewed every third of it",
            ));
        }
        Ok(Beat {
            client,
            schedules: schedules.to_vec(),
            coordinator: Arc::new(coordinator),
            settings,
        })
    }

    /// How the scheduler coordinates with its replicas, for the banner.
    pub fn coordination(&self) -> String {
        self.coordinator.describe()
    }

    /// Runs the scheduler in the background until [`BeatHandle::stop`].
    pub fn spawn(self) -> BeatHandle {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(self.run(stopped));
        BeatHandle { stop, task }
    }

    /// Runs the scheduler until `shutdown` completes, then releases the lease.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let handle = self.spawn();
        shutdown.await;
        handle.stop().await;
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let (leading, mut leader) = watch::channel(false);
        let lease = tokio::spawn(hold_lease(
            self.coordinator.clone(),
            self.settings.lease,
            leading,
            stop.clone(),
        ));
        loop {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => break,
                led = leader.wait_for(|leading| *leading) => {
                    if led.is_err() {
                        break;
                    }
                }
            }
            if self.lead(&mut leader, &mut stop).await.is_break() {
                break;
            }
            // The lease was lost, or a claim found another holder: wait for the lease
            // task to see it, rather than ask again at once.
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => break,
                _ = leader.wait_for(|leading| !*leading) => {}
                () = tokio::time::sleep(self.settings.lease / 3) => {}
            }
        }
        let _ = lease.await;
    }

    /// Sends the runs that fall due while this scheduler holds the lease. Breaks when
    /// stopped; continues when the lease is lost.
    async fn lead(
        &self,
        leader: &mut watch::Receiver<bool>,
        stop: &mut watch::Receiver<bool>,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let last = loop {
            match self.coordinator.last_runs().await {
                Ok(last) => break last,
                Err(error) => {
                    tracing::warn!(%error, "beat: could not read the last runs; retrying");
                    tokio::select! {
                        _ = stop.wait_for(|stopped| *stopped) => return Break(()),
                        _ = leader.wait_for(|leading| !*leading) => return Continue(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let now = Utc::now();
        let mut pending: Vec<Pending> = self
            .schedules
            .iter()
            .map(|schedule| Pending::after(schedule, last.get(schedule.name).copied(), now))
            .collect();
        loop {
            let now = Utc::now();
            for entry in pending
                .iter_mut()
                .filter(|e| e.due.is_some_and(|due| due <= now))
            {
                let (run, missed) = entry.run_at(now);
                if self.send(entry.schedule, run, missed).await.is_break() {
                    return Continue(());
                }
                entry.missed = false;
                entry.due = entry.schedule.recurrence.next_after(run.max(now));
            }
            let wake = pending.iter().filter_map(|e| e.due).min();
            let sleep = wake
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or_default()
                .min(MAX_SLEEP);
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return Break(()),
                _ = leader.wait_for(|leading| !*leading) => {
                    tracing::warn!("beat: this scheduler no longer holds the lease; it stops sending");
                    return Continue(());
                }
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Claims the run of `schedule` at `run` and sends it; breaks when the lease is lost.
    async fn send(
        &self,
        schedule: &Schedule,
        run: DateTime<Utc>,
        missed: bool,
    ) -> std::ops::ControlFlow<()> {
        use std::ops::ControlFlow::{Break, Continue};
        let name = schedule.name;
        match self.coordinator.claim(name, run.timestamp_millis()).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::AlreadySent) => {
                tracing::debug!(schedule = name, %run, "beat: this run was sent already");
                return Continue(());
            }
            Ok(Claim::NotLeader) => return Break(()),
            Err(error) => {
                tracing::error!(%error, schedule = name, %run, "beat: could not claim the run, so it is not sent");
                return Continue(());
            }
        }
        match self.publish(schedule, run).await {
            Ok(id) => {
                let task = schedule.task.name;
                let queue = schedule.queue_name();
                if missed {
                    tracing::warn!(
                        schedule = name,
                        "beat: runs of `{name}` were missed while no scheduler sent; the latest is sent once"
                    );
                }
                tracing::info!(
                    schedule = name, task, %id, queue, run = %run.to_rfc3339(),
                    "Scheduler: Sending due task {name} ({task}) [{id}] for {}",
                    run.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
            }
            Err(error) => {
                tracing::error!(%error, schedule = name, %run, "beat: the run was claimed but could not be sent");
            }
        }
        Continue(())
    }

    /// Publishes the run of `schedule` at `run`: the message the client sends for the
    /// task, with Celery beat's headers and an id made from the run.
    async fn publish(&self, schedule: &Schedule, run: DateTime<Utc>) -> Result<String> {
        let args = (schedule.args)()?;
        let id = run_id(&self.settings.group, schedule.name, run);
        let options = SendOptions {
            task_id: Some(id.clone()),
            expires: schedule.expires,
            priority: schedule.priority,
            queue: schedule.queue.map(str::to_owned),
            ..SendOptions::default()
        };
        let mut message = self
            .client
            .message(schedule.task, args, Map::new(), &options);
        // Celery beat marks what it sends (`celery/beat.py::Scheduler.apply_async`), and
        // django-celery-beat names the schedule; a task reads both from its request.
        message
            .headers
            .extra
            .insert("celery_beat_task".into(), Value::Bool(true));
        message.headers.extra.insert(
            "periodic_task_name".into(),
            Value::String(schedule.name.to_owned()),
        );
        // Which run this is (the same for every replica), for tasks and tools that
        // want to tell runs apart.
        message.headers.extra.insert(
            RUN_HEADER.into(),
            Value::String(run.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        self.client.publish(schedule.queue_name(), &message).await?;
        Ok(id)
    }
}

/// The task id of the run of `schedule` due at `run`, as the schedulers of `group` send
/// it: the same for the same run whichever replica sends it, so its result can be looked
/// up (`Client::result`) knowing only when it was due.
pub fn run_id(group: &str, schedule: &str, run: DateTime<Utc>) -> String {
    let name = format!("{group}\n{schedule}\n{}", run.timestamp_millis());
    uuid::Uuid::new_v5(&RUN_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// A schedule and its next run.
struct Pending<'a> {
    schedule: &'a Schedule,
    /// When its next run is due; `None` when it has no run any more.
    due: Option<DateTime<Utc>>,
    /// Whether runs before `due` were missed while no scheduler sent.
    missed: bool,
}

impl<'a> Pending<'a> {
    /// A schedule whose last run claimed was `last` (ms since the epoch), as a new leader
    /// finds it at `now`: a run missed since is due at once (once, however many were
    /// missed); a schedule never run starts with its next run, as Celery beat does.
    fn after(schedule: &'a Schedule, last: Option<i64>, now: DateTime<Utc>) -> Self {
        let recurrence = &schedule.recurrence;
        let Some(last) = last.and_then(DateTime::from_timestamp_millis) else {
            return Pending {
                schedule,
                due: recurrence.next_after(now),
                missed: false,
            };
        };
        match recurrence.latest_in(last, now) {
            Some(latest) => Pending {
                schedule,
                due: Some(latest),
                missed: recurrence
                    .next_after(last)
                    .is_some_and(|first| first < latest),
            },
            None => Pending {
                schedule,
                due: recurrence.next_after(last.max(now)),
                missed: false,
            },
        }
    }

    /// The run to send now that `due` has come: the latest run due by `now`, and whether
    /// it stands for others missed before it.
    fn run_at(&self, now: DateTime<Utc>) -> (DateTime<Utc>, bool) {
        let due = self.due.unwrap_or(now);
        let recurrence = &self.schedule.recurrence;
        match recurrence.latest_in(due - chrono::Duration::milliseconds(1), now) {
            Some(latest) if latest > due => (latest, true),
            _ => (due, self.missed),
        }
    }
}

/// A running scheduler.
#[derive(Debug)]
pub struct BeatHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl BeatHandle {
    /// Stops sending, releases the lease (so that a replica takes over at once), and
    /// returns when the scheduler has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Takes the lease when it is free and renews it every third of it while held, telling
/// `leading` whether this scheduler holds it. A renewal that fails (Redis unreachable)
/// keeps the lease until it would have expired; a renewal refused (another holds it) ends
/// it at once. Releases it when stopped.
async fn hold_lease(
    coordinator: Arc<Coordinator>,
    lease: Duration,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let renew_every = lease / 3;
    // Until when the lease is surely held: counted from before the request that took or
    // renewed it, so never later than Redis's own expiry.
    let mut held_until: Option<tokio::time::Instant> = None;
    loop {
        let wait = match held_until {
            None => {
                let asked = tokio::time::Instant::now();
                match tokio::time::timeout(renew_every, coordinator.acquire()).await {
                    Ok(Ok(Acquire::Held)) => {
                        held_until = Some(asked + lease);
                        tracing::info!(
                            coordination = %coordinator.describe(),
                            "beat: this scheduler holds the lease and sends the scheduled runs"
                        );
                        let _ = leading.send(true);
                        renew_every
                    }
                    Ok(Ok(Acquire::Busy(left))) => left.min(renew_every),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "beat: could not ask for the lease");
                        renew_every
                    }
                    Err(_) => renew_every,
                }
            }
            Some(until) => {
                let asked = tokio::time::Instant::now();
                match tokio::time::timeout(renew_every, coordinator.renew()).await {
                    Ok(Ok(true)) => {
                        held_until = Some(asked + lease);
                        renew_every
                    }
                    Ok(Ok(false)) => {
                        tracing::warn!("beat: the lease was lost to another scheduler");
                        held_until = None;
                        let _ = leading.send(false);
                        Duration::ZERO
                    }
                    outcome => {
                        if let Ok(Err(error)) = outcome {
                            tracing::warn!(%error, "beat: could not renew the lease");
                        }
                        if tokio::time::Instant::now() + renew_every / 2 >= until {
                            tracing::warn!(
                                "beat: the lease could not be renewed in time; this scheduler stops sending"
                            );
                            held_until = None;
                            let _ = leading.send(false);
                        }
                        (renew_every / 4).max(Duration::from_millis(50))
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    if held_until.is_some() {
        let _ = leading.send(false);
        coordinator.release().await;
        tracing::info!("beat: released the lease");
    }
}
