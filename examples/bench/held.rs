//! What a Redis worker's memory costs per task it holds for its countdown: `tasks.ping`
//! sent with a one-hour countdown to a queue the worker consumes alone, and the worker's
//! `VmRSS` before and once it has taken all it will. The benchmark's held-ETA row and the
//! `held_eta` example measure through this.

use std::time::{Duration, Instant};

use celerity::App;
use celerity_shop::tasks::TasksRegistry;

use crate::redis_admin::RedisAdmin;
use crate::support::proc_status_kb;

pub type HeldResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The countdown of the held tasks: none falls due while they are measured.
pub const COUNTDOWN: Duration = Duration::from_secs(3600);

/// What holding the tasks cost.
pub struct Held {
    /// Tasks the worker took off the queue (all of them, unless its cap stopped it).
    pub held: usize,
    /// `VmRSS` before the first was sent, in kB.
    pub idle_kb: u64,
    /// `VmRSS` once the worker took all it would, in kB.
    pub holding_kb: u64,
}

impl Held {
    /// Resident bytes the worker grew by, per task it holds.
    pub fn bytes_per_task(&self) -> f64 {
        self.holding_kb.saturating_sub(self.idle_kb) as f64 * 1024.0 / self.held.max(1) as f64
    }
}

/// Sends `count` pings with [`COUNTDOWN`] to `queue`, which the worker process `pid`
/// consumes alone, and waits until the worker has taken all it will: the queue is empty,
/// or has not changed for two seconds.
pub async fn measure(
    app: &App,
    admin: &mut RedisAdmin,
    queue: &str,
    count: usize,
    pid: u32,
) -> HeldResult<Held> {
    let rss = || proc_status_kb(pid, "VmRSS").ok_or("the worker is not running");
    let idle_kb = rss()?;
    let started = Instant::now();
    let client = app.client();
    let tasks = TasksRegistry::new(client.clone());
    for first in (0..count).step_by(10_000) {
        let calls = (first..count.min(first + 10_000))
            .map(|_| tasks.ping().queue(queue).countdown(COUNTDOWN));
        client.send_batch(calls).await?;
    }
    eprintln!(
        "  held ETA: {count} sent with countdown=3600 in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut left = admin.llen(queue)?;
    let mut still_since = Instant::now();
    while left > 0 && still_since.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = admin.llen(queue)?;
        if now != left {
            still_since = Instant::now();
        }
        left = now;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = Held {
        held: count.saturating_sub(usize::try_from(left)?),
        idle_kb,
        holding_kb: rss()?,
    };
    eprintln!(
        "  held ETA: worker holds {} ({left} left on the queue) after {:.1} s; RSS {:.1} MB idle, {:.1} MB holding them: {:.0} bytes per task",
        held.held,
        started.elapsed().as_secs_f64(),
        held.idle_kb as f64 / 1024.0,
        held.holding_kb as f64 / 1024.0,
        held.bytes_per_task()
    );
    Ok(held)
}
