//! The events waiting for the broker, and the task that publishes them.
//!
//! A task's path only pushes its events here; one background task takes whatever has
//! gathered about every millisecond and publishes it in one batch (one Redis pipeline, one
//! run of AMQP publishes awaiting their confirms). The outbox is bounded: when the broker
//! does not keep up (slow, or unreachable while its connection retries), the oldest
//! events are dropped and counted, and the count is logged, so monitoring never holds
//! back the tasks or the worker's memory. Celery's dispatcher buffers without a bound
//! while the connection is down (`buffer_while_offline`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::Event;
use crate::broker::Broker;

/// The most events the outbox holds.
pub(crate) const MAX_EVENTS: usize = 16_384;

/// The most bytes (about) the events in the outbox take.
pub(crate) const MAX_BYTES: usize = 16 << 20;

/// How long the publishing task lets events gather before it takes them.
const GATHER: Duration = Duration::from_millis(1);

/// The most events published in one call to the broker.
const PUBLISH_CHUNK: usize = 1024;

/// Events waiting to be published, oldest first.
pub(crate) struct Outbox {
    pending: Mutex<Pending>,
    ready: Notify,
    dropped: AtomicU64,
    closed: AtomicBool,
    max_events: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Pending {
    /// Each event with its size.
    events: VecDeque<(usize, Event)>,
    bytes: usize,
}

impl Outbox {
    /// An outbox of at most `max_events` events and about `max_bytes` bytes.
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Outbox {
        Outbox {
            pending: Mutex::default(),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            max_events: max_events.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Pushes and takes leave the queue whole: a poisoned lock is still consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `event`, dropping the oldest events while the outbox is full.
    pub(crate) fn push(&self, event: Event) {
        let size = event.size();
        let mut pending = self.lock();
        let mut dropped = 0;
        while pending.events.len() >= self.max_events
            || (pending.bytes + size > self.max_bytes && !pending.events.is_empty())
        {
            let Some((oldest, _)) = pending.events.pop_front() else {
                break;
            };
            pending.bytes -= oldest;
            dropped += 1;
        }
        pending.bytes += size;
        pending.events.push_back((size, event));
        drop(pending);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.ready.notify_one();
    }

    /// How many events wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Takes every event waiting, oldest first.
    pub(crate) fn take(&self) -> Vec<Event> {
        let mut pending = self.lock();
        pending.bytes = 0;
        std::mem::take(&mut pending.events)
            .into_iter()
            .map(|(_, event)| event)
            .collect()
    }

    /// The events dropped since the last call.
    fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// The next batch to publish: what gathered for [`GATHER`] after the first event
    /// arrived. `None` once the outbox is closed and empty.
    async fn next_batch(&self) -> Option<Vec<Event>> {
        loop {
            let arrived = self.ready.notified();
            let empty = self.lock().events.is_empty();
            if !empty {
                break;
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            arrived.await;
        }
        if !self.closed.load(Ordering::Acquire) {
            tokio::time::sleep(GATHER).await;
        }
        Some(self.take())
    }

    /// No event comes after those waiting: the publishing task publishes them and ends.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }
}

/// Publishes what gathers in `outbox` through `broker` until the outbox is closed and
/// empty. A batch the broker refuses (after its own retries) is lost, and logged.
pub(crate) async fn publish(outbox: Arc<Outbox>, broker: Arc<dyn Broker>) {
    while let Some(batch) = outbox.next_batch().await {
        let dropped = outbox.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "dropped {dropped} monitoring events: the broker did not take them as fast as the worker made them (the worker keeps at most {} events, {} MiB, waiting)",
                outbox.max_events,
                outbox.max_bytes >> 20
            );
        }
        for chunk in batch.chunks(PUBLISH_CHUNK) {
            if let Err(error) = broker.publish_events(chunk).await {
                tracing::warn!(%error, lost = chunk.len(), "could not publish monitoring events");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::{Fields, TaskDetail};

    fn event(clock: u64, result: &str) -> Event {
        Event {
            kind: "task-succeeded",
            hostname: "w@t".into(),
            utcoffset: 0.0,
            pid: 1,
            clock,
            timestamp: 0.0,
            fields: Fields::Task {
                uuid: clock.to_string(),
                detail: TaskDetail::Succeeded {
                    result: result.into(),
                    runtime: 0.0,
                },
            },
        }
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_events_and_counts_them() {
        let outbox = Outbox::new(3, MAX_BYTES);
        for clock in 1..=5 {
            outbox.push(event(clock, "1"));
        }
        assert_eq!(outbox.take_dropped(), 2);
        assert_eq!(outbox.take_dropped(), 0, "counted once");
        let kept: Vec<u64> = outbox.take().iter().map(Event::clock).collect();
        assert_eq!(kept, [3, 4, 5]);
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn the_outbox_is_bounded_in_bytes_too() {
        let large = "x".repeat(1000);
        let size = event(0, &large).size();
        let outbox = Outbox::new(MAX_EVENTS, size * 2);
        for clock in 1..=4 {
            outbox.push(event(clock, &large));
        }
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.take_dropped(), 2);
        // An event larger than the whole bound is still kept, alone.
        outbox.push(event(5, &"y".repeat(size * 3)));
        let kept: Vec<u64> = outbox.take().iter().map(Event::clock).collect();
        assert_eq!(kept, [5]);
    }

    #[tokio::test]
    async fn closing_publishes_what_waits_then_ends() {
        let outbox = Arc::new(Outbox::new(MAX_EVENTS, MAX_BYTES));
        outbox.push(event(1, "1"));
        outbox.close();
        assert_eq!(outbox.next_batch().await.map(|b| b.len()), Some(1));
        assert!(outbox.next_batch().await.is_none());
    }
}
