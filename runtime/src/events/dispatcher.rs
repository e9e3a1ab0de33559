//! The worker's event dispatcher (`celery/events/dispatcher.py::EventDispatcher`): stamps
//! each event with the worker's name, process, clock, time and offset, and hands it to the
//! outbox. Worker events always go out; task events only while they are enabled (Celery's
//! `task` group, turned on by `-E` and by the `enable_events` command).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::event::{Event, Fields, TaskDetail, WorkerFields, load_average, utcoffset};
use super::heart::HEARTBEAT_INTERVAL;
use super::outbox::{MAX_BYTES, MAX_EVENTS, Outbox};
use crate::pidbox::clock_forward;

/// The worker's first event, sent once it consumes.
pub(crate) const WORKER_ONLINE: &str = "worker-online";
/// The worker's event every [`HEARTBEAT_INTERVAL`], and when remote control asks.
pub(crate) const WORKER_HEARTBEAT: &str = "worker-heartbeat";
/// The worker's last event, sent when it stops gracefully.
pub(crate) const WORKER_OFFLINE: &str = "worker-offline";

/// Makes a worker's events and queues them for publishing.
pub(crate) struct EventDispatcher {
    hostname: Arc<str>,
    pid: u32,
    task_events: AtomicBool,
    /// The offset to UTC, as `f64` bits: read for every event, refreshed with each worker
    /// event (so a change of daylight saving time shows within a heartbeat).
    utcoffset: AtomicU64,
    outbox: Arc<Outbox>,
}

impl EventDispatcher {
    /// The dispatcher of worker `hostname`, sending task events when `task_events`.
    pub(crate) fn new(hostname: &str, task_events: bool) -> EventDispatcher {
        EventDispatcher {
            hostname: hostname.into(),
            pid: std::process::id(),
            task_events: AtomicBool::new(task_events),
            utcoffset: AtomicU64::new(utcoffset().to_bits()),
            outbox: Arc::new(Outbox::new(MAX_EVENTS, MAX_BYTES)),
        }
    }

    /// Whether task events are sent now.
    #[inline]
    pub(crate) fn task_events(&self) -> bool {
        self.task_events.load(Ordering::Relaxed)
    }

    /// Turns task events on or off; whether they were on.
    pub(crate) fn set_task_events(&self, enabled: bool) -> bool {
        self.task_events.swap(enabled, Ordering::Relaxed)
    }

    /// What waits to be published.
    pub(crate) fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Sends a task event about task `uuid` (the caller checked [`Self::task_events`]).
    pub(crate) fn send_task(&self, uuid: String, detail: TaskDetail) {
        self.send(detail.kind(), Fields::Task { uuid, detail });
    }

    /// Sends the worker event `kind` with `active` tasks running and `processed` tasks
    /// started so far.
    pub(crate) fn send_worker(&self, kind: &'static str, active: usize, processed: u64) {
        self.utcoffset
            .store(utcoffset().to_bits(), Ordering::Relaxed);
        let fields = WorkerFields {
            freq: HEARTBEAT_INTERVAL.as_secs_f64(),
            active,
            processed,
            loadavg: load_average(),
        };
        self.send(kind, Fields::Worker(fields));
    }

    fn send(&self, kind: &'static str, fields: Fields) {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.outbox.push(Event {
            kind,
            hostname: self.hostname.clone(),
            utcoffset: f64::from_bits(self.utcoffset.load(Ordering::Relaxed)),
            pid: self.pid,
            clock: clock_forward(),
            timestamp,
            fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_events_follow_the_switch_and_events_take_the_clock_forward() {
        let dispatcher = EventDispatcher::new("w@t", false);
        assert!(!dispatcher.task_events());
        assert!(!dispatcher.set_task_events(true));
        assert!(dispatcher.set_task_events(true), "already on");
        dispatcher.send_worker(WORKER_ONLINE, 1, 2);
        dispatcher.send_task("t-1".into(), TaskDetail::Started);
        let sent = dispatcher.outbox().take();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].kind(), "worker-online");
        assert_eq!(sent[0].get("freq"), Some(2.0.into()));
        assert_eq!(sent[0].get("active"), Some(1.into()));
        assert_eq!(sent[0].get("processed"), Some(2.into()));
        assert_eq!(sent[1].kind(), "task-started");
        assert!(sent[1].clock() > sent[0].clock());
        assert_eq!(sent[1].hostname(), "w@t");
        assert_eq!(sent[1].get("pid"), Some(std::process::id().into()));
    }
}
