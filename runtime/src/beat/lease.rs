//! Where schedulers agree which of them sends, and remember what was sent: the lease and
//! the record of each schedule's last run.
//!
//! Every coordinator keeps one rule: a run is **claimed before it is sent**, and a claim
//! succeeds only for the lease holder and only for a run later than the last one claimed.
//! So a run is sent at most once, whoever holds the lease and whenever it changes hands; a
//! scheduler that dies between its claim and its send loses that run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// What asking for the lease gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Only a shared lease (Redis, RabbitMQ) is ever busy.
#[cfg_attr(not(any(feature = "redis", feature = "amqp")), allow(dead_code))]
pub(crate) enum Acquire {
    /// This scheduler holds it now.
    Held,
    /// Another holds it; ask again after this long (its time left, at most).
    Busy(Duration),
}

/// What claiming a run gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Only a shared lease (Redis, RabbitMQ) can be lost.
#[cfg_attr(not(any(feature = "redis", feature = "amqp")), allow(dead_code))]
pub(crate) enum Claim {
    /// This scheduler is to send it.
    Claimed,
    /// It, or a later run, was claimed already: not to be sent.
    AlreadySent,
    /// This scheduler does not hold the lease (any more).
    NotLeader,
}

/// How schedulers coordinate: through Redis beside the broker or the result backend, through
/// RabbitMQ when there is no Redis, or alone with a local state file.
pub(crate) enum Coordinator {
    /// One scheduler, its runs remembered in a file.
    Local(LocalState),
    /// A lease and the runs in Redis.
    #[cfg(feature = "redis")]
    Redis(Box<crate::redis::beat_lease::RedisLease>),
    /// An exclusive queue as the lease, the runs in a message, on RabbitMQ.
    #[cfg(feature = "amqp")]
    Amqp(Box<crate::amqp::beat_lease::AmqpLease>),
}

impl Coordinator {
    /// For the banner and the logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Coordinator::Local(state) => format!("alone, state in {}", state.path.display()),
            #[cfg(feature = "redis")]
            Coordinator::Redis(lease) => lease.describe(),
            #[cfg(feature = "amqp")]
            Coordinator::Amqp(lease) => lease.describe(),
        }
    }

    /// Takes the lease if it is free.
    pub(crate) async fn acquire(&self) -> Result<Acquire> {
        match self {
            Coordinator::Local(_) => Ok(Acquire::Held),
            #[cfg(feature = "redis")]
            Coordinator::Redis(lease) => lease.acquire().await,
            #[cfg(feature = "amqp")]
            Coordinator::Amqp(lease) => lease.acquire().await,
        }
    }

    /// Extends the lease this scheduler holds; false when it holds it no more.
    pub(crate) async fn renew(&self) -> Result<bool> {
        match self {
            Coordinator::Local(_) => Ok(true),
            #[cfg(feature = "redis")]
            Coordinator::Redis(lease) => lease.renew().await,
            #[cfg(feature = "amqp")]
            Coordinator::Amqp(lease) => lease.renew().await,
        }
    }

    /// Gives the lease up, so that another scheduler takes over at once.
    pub(crate) async fn release(&self) {
        match self {
            Coordinator::Local(_) => {}
            #[cfg(feature = "redis")]
            Coordinator::Redis(lease) => lease.release().await,
            #[cfg(feature = "amqp")]
            Coordinator::Amqp(lease) => lease.release().await,
        }
    }

    /// The last run claimed of each schedule, in milliseconds since the Unix epoch.
    pub(crate) async fn last_runs(&self) -> Result<HashMap<String, i64>> {
        match self {
            Coordinator::Local(state) => state.read(),
            #[cfg(feature = "redis")]
            Coordinator::Redis(lease) => lease.last_runs().await,
            #[cfg(feature = "amqp")]
            Coordinator::Amqp(lease) => lease.last_runs().await,
        }
    }

    /// Claims the run of `schedule` due at `run` (milliseconds since the Unix epoch).
    pub(crate) async fn claim(&self, schedule: &str, run: i64) -> Result<Claim> {
        match self {
            Coordinator::Local(state) => state.claim(schedule, run),
            #[cfg(feature = "redis")]
            Coordinator::Redis(lease) => lease.claim(schedule, run).await,
            #[cfg(feature = "amqp")]
            Coordinator::Amqp(lease) => lease.claim(schedule, run).await,
        }
    }
}

/// The runs of a scheduler that runs alone, in a JSON file (Celery beat's
/// `celerybeat-schedule` file): `{"schedule name": <last run, ms since the epoch>}`.
/// Written whole to a temporary file and renamed over the old one, so a crash leaves the
/// old state or the new, never half of one.
pub(crate) struct LocalState {
    path: PathBuf,
    runs: std::sync::Mutex<Option<HashMap<String, i64>>>,
}

impl LocalState {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        LocalState {
            path: path.into(),
            runs: std::sync::Mutex::new(None),
        }
    }

    fn read(&self) -> Result<HashMap<String, i64>> {
        let mut cached = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(runs) = &*cached {
            return Ok(runs.clone());
        }
        let runs = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                state_error(&self.path, "read (it is not a beat state file)").with_source(e)
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(state_error(&self.path, "read").with_source(e)),
        };
        *cached = Some(runs.clone());
        Ok(runs)
    }

    fn claim(&self, schedule: &str, run: i64) -> Result<Claim> {
        let mut runs = self.read()?;
        if runs.get(schedule).is_some_and(|last| *last >= run) {
            return Ok(Claim::AlreadySent);
        }
        runs.insert(schedule.to_owned(), run);
        write_atomically(&self.path, &runs)?;
        *self.runs.lock().unwrap_or_else(|p| p.into_inner()) = Some(runs);
        Ok(Claim::Claimed)
    }
}

fn write_atomically(path: &Path, runs: &HashMap<String, i64>) -> Result<()> {
    let mut sorted: Vec<(&String, &i64)> = runs.iter().collect();
    sorted.sort();
    let map: serde_json::Map<String, serde_json::Value> = sorted
        .into_iter()
        .map(|(name, run)| (name.clone(), (*run).into()))
        .collect();
    let text =
        serde_json::to_vec_pretty(&map).map_err(|e| state_error(path, "write").with_source(e))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| state_error(path, "write").with_source(e))
}

fn state_error(path: &Path, action: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "beat: could not {action} the state file `{}`",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_state_claims_each_run_once_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("celerity-beat-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("beat-state.json");
        let state = LocalState::new(&path);
        assert!(
            state.read().unwrap().is_empty(),
            "no file yet: nothing sent"
        );
        assert_eq!(state.claim("purge", 1_000).unwrap(), Claim::Claimed);
        assert_eq!(state.claim("purge", 1_000).unwrap(), Claim::AlreadySent);
        assert_eq!(state.claim("purge", 500).unwrap(), Claim::AlreadySent);
        assert_eq!(state.claim("report", 700).unwrap(), Claim::Claimed);

        let restarted = LocalState::new(&path);
        assert_eq!(
            restarted.read().unwrap(),
            HashMap::from([("purge".to_owned(), 1_000), ("report".to_owned(), 700)])
        );
        assert_eq!(restarted.claim("purge", 1_000).unwrap(), Claim::AlreadySent);
        assert_eq!(restarted.claim("purge", 2_000).unwrap(), Claim::Claimed);
        std::fs::write(&path, "not json").unwrap();
        let error = LocalState::new(&path).read().unwrap_err();
        assert!(
            error.to_string().contains("is not a beat state file"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
