//! The schedulers' lease and record of runs in Redis.
//!
//! Keys, for a scheduler group `<name>` (default `default`):
//!
//! - `celerity.beat.<name>.lease`: the holder's token, `SET NX PX <lease>`; renewed and
//!   released by scripts that first check the token is still the holder's.
//! - `celerity.beat.<name>.runs`: a hash of schedule name → last run claimed (ms since the
//!   Unix epoch), and `celerity.beat.<name>.claimed_by` the token that claimed it.
//!
//! A claim is one script: it checks the lease token **and** records the run, so a
//! scheduler whose lease expired (paused, partitioned from Redis, its renewal lost) cannot
//! claim a run any more, and a run claimed before the lease changed hands is seen by the
//! next holder. With Sentinel, a claim counts once a replica has it (`WAIT`), so the record
//! outlives a failover of the master.

use std::collections::HashMap;
use std::time::Duration;

use super::RedisConnection;
use crate::beat::lease::{Acquire, Claim};
use crate::error::{ErrorKind, Result};

/// KEYS: lease. ARGV: token, lease in ms. 1 when renewed, 0 when another holds it.
const RENEW_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// KEYS: lease. ARGV: token. Deletes the lease if this token holds it.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS: lease, runs, claimed_by. ARGV: token, schedule, run. Returns 1 when the run is
/// claimed (or was claimed by this same token: a retry whose first reply was lost), 0 when
/// it or a later run was claimed already, -1 when the token does not hold the lease.
const CLAIM_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
local run = tonumber(ARGV[3])
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '')
if last and last > run then
  return 0
end
if last and last == run then
  if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
    return 1
  end
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
return 1
"#;

/// The lease and the runs of one scheduler group in Redis.
pub(crate) struct RedisLease {
    connection: RedisConnection,
    lease_key: String,
    runs_key: String,
    claimed_by_key: String,
    token: String,
    lease: Duration,
    renew: redis::Script,
    release: redis::Script,
    claim: redis::Script,
}

impl RedisLease {
    /// The lease of group `name` at `url` (a broker or result backend URL), held for
    /// `lease` at a time by the scheduler `holder`.
    pub(crate) async fn open(
        url: &str,
        master_name: Option<&str>,
        name: &str,
        lease: Duration,
        holder: &str,
    ) -> Result<Self> {
        let connection = RedisConnection::open(url, ErrorKind::Broker, master_name).await?;
        let prefix = format!("celerity.beat.{name}");
        Ok(RedisLease {
            connection,
            lease_key: format!("{prefix}.lease"),
            runs_key: format!("{prefix}.runs"),
            claimed_by_key: format!("{prefix}.claimed_by"),
            // The process and a random part: two schedulers never share a token, even on
            // one host with one name.
            token: format!("{holder}:{}:{}", std::process::id(), uuid::Uuid::new_v4()),
            lease,
            renew: redis::Script::new(RENEW_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
            claim: redis::Script::new(CLAIM_SCRIPT),
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "lease `{}` in {} ({} s)",
            self.lease_key,
            self.connection.display(),
            self.lease.as_secs_f64()
        )
    }

    /// Operations on the lease are retried for a third of it at most: past that, a renewal
    /// would come too late to matter.
    fn window(&self) -> Duration {
        self.lease / 3
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    pub(crate) async fn acquire(&self) -> Result<Acquire> {
        let taken: Option<String> = self
            .connection
            .run_within("take the beat lease", self.window(), |mut c| {
                let mut command = redis::cmd("SET");
                command
                    .arg(&self.lease_key)
                    .arg(&self.token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.lease_ms());
                async move { command.query_async(&mut c).await }
            })
            .await?;
        if taken.is_some() {
            return Ok(Acquire::Held);
        }
        let left: i64 = self
            .connection
            .run_within("read the beat lease", self.window(), |mut c| {
                let mut command = redis::cmd("PTTL");
                command.arg(&self.lease_key);
                async move { command.query_async(&mut c).await }
            })
            .await?;
        // -2: gone since the SET; -1: no expiry (set by hand): ask again soon either way.
        let left = u64::try_from(left).unwrap_or(0).max(20);
        Ok(Acquire::Busy(Duration::from_millis(left)))
    }

    pub(crate) async fn renew(&self) -> Result<bool> {
        let renewed: i64 = self
            .connection
            .run_within("renew the beat lease", self.window(), |mut c| {
                let mut invocation = self.renew.prepare_invoke();
                invocation
                    .key(&self.lease_key)
                    .arg(&self.token)
                    .arg(self.lease_ms());
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(renewed == 1)
    }

    pub(crate) async fn release(&self) {
        let released: Result<i64> = self
            .connection
            .run_within("release the beat lease", self.window(), |mut c| {
                let mut invocation = self.release.prepare_invoke();
                invocation.key(&self.lease_key).arg(&self.token);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "beat: could not release the lease; it expires on its own");
        }
    }

    pub(crate) async fn last_runs(&self) -> Result<HashMap<String, i64>> {
        let runs: HashMap<String, String> = self
            .connection
            .run("read the last runs of the schedules", |mut c| {
                let mut command = redis::cmd("HGETALL");
                command.arg(&self.runs_key);
                async move { command.query_async(&mut c).await }
            })
            .await?;
        Ok(runs
            .into_iter()
            .filter_map(|(name, run)| Some((name, run.parse().ok()?)))
            .collect())
    }

    pub(crate) async fn claim(&self, schedule: &str, run: i64) -> Result<Claim> {
        let claimed: i64 = self
            .connection
            .run_replicated_within("claim a scheduled run", self.window(), |mut c| {
                let mut invocation = self.claim.prepare_invoke();
                invocation
                    .key(&self.lease_key)
                    .key(&self.runs_key)
                    .key(&self.claimed_by_key)
                    .arg(&self.token)
                    .arg(schedule)
                    .arg(run);
                async move { invocation.invoke_async(&mut c).await }
            })
            .await?;
        Ok(match claimed {
            1 => Claim::Claimed,
            0 => Claim::AlreadySent,
            _ => Claim::NotLeader,
        })
    }
}
