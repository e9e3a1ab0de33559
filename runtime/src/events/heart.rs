//! The worker's heartbeat (`celery/worker/heartbeat.py::Heart`): a `worker-heartbeat`
//! every two seconds, whether task events are on or not, so monitors know the worker is
//! alive and how busy it is.

use std::time::Duration;

/// How often a worker sends `worker-heartbeat`: Celery's default (`Heart.interval`).
/// Monitors take a worker for gone after twice as long without one
/// (`celery/events/state.py::heartbeat_expires`).
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Sends a heartbeat through `send` every [`HEARTBEAT_INTERVAL`], the first one interval
/// from now, until the task running it is stopped. A heartbeat late because the runtime
/// was busy delays the next ones rather than bunching them.
pub(crate) async fn heartbeats(send: impl Fn()) {
    let start = tokio::time::Instant::now() + HEARTBEAT_INTERVAL;
    let mut ticks = tokio::time::interval_at(start, HEARTBEAT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        send();
    }
}
