//! The consuming loop: pulls deliveries from the broker while the prefetch window has
//! room, follows the window and the queues as remote control changes them, and stops
//! first when the worker stops (Celery's `celery/worker/consumer/consumer.py` event loop,
//! with `qos` and `add_task_queue` / `cancel_task_queue`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::execute::receive;
use super::queues::QueueChange;
use super::shared::Shared;
use crate::backoff::Backoff;
use crate::broker::Consumer;

/// The pause after a failed receive: the transports retry and reconnect on their own, so
/// an error here is rare and the first retry comes soon.
const RECEIVE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// What makes the consuming loop stop waiting: the worker stopping, or a change to what it
/// fetches.
enum Woken {
    Stop,
    /// The window changed (the pool was resized, tasks are held for their ETA or left),
    /// or the queues are to change: the loop starts over and applies it.
    Again,
}

/// Everything the consuming loop watches while it waits.
struct Watched {
    stopped: watch::Receiver<bool>,
    held_for_eta: watch::Receiver<usize>,
    concurrency: watch::Receiver<usize>,
    queue_changes: mpsc::UnboundedReceiver<QueueChange>,
    /// Changes received, to be made at the top of the loop, where the consumer is free.
    pending: Vec<QueueChange>,
}

impl Watched {
    /// The prefetch count the broker should have now: the window plus the tasks held for
    /// their ETA. Marks both as seen.
    fn wanted(&mut self, shared: &Shared) -> usize {
        self.concurrency.borrow_and_update();
        shared.pool.window() + *self.held_for_eta.borrow_and_update()
    }

    /// Runs `work` unless something watched happens first.
    async fn or<T>(&mut self, work: impl std::future::Future<Output = T>) -> Result<T, Woken> {
        tokio::select! {
            _ = self.stopped.wait_for(|s| *s) => Err(Woken::Stop),
            _ = self.held_for_eta.changed() => Err(Woken::Again),
            _ = self.concurrency.changed() => Err(Woken::Again),
            Some(change) = self.queue_changes.recv() => {
                self.pending.push(change);
                Err(Woken::Again)
            }
            value = work => Ok(value),
        }
    }
}

/// Pulls deliveries while the prefetch window has room, so the worker never holds more
/// messages than `concurrency × prefetch_multiplier`; follows the window and the queues as
/// remote control changes them; stops when `stopped` turns true. Returns the consumer, its
/// deliveries cancelled but its connection open, so that the messages still held can be
/// settled before it closes.
pub(crate) async fn consume(
    shared: Arc<Shared>,
    mut consumer: Box<dyn Consumer>,
    queue_changes: mpsc::UnboundedReceiver<QueueChange>,
    stopped: watch::Receiver<bool>,
) -> Box<dyn Consumer> {
    let mut watched = Watched {
        stopped,
        held_for_eta: shared.held.count(),
        concurrency: shared.pool.changes(),
        queue_changes,
        pending: Vec::new(),
    };
    let mut due = shared.held.leaving();
    let mut prefetch = 0;
    // Failed receives in a row, for the pause before the next attempt.
    let mut failures = 0;
    loop {
        for change in std::mem::take(&mut watched.pending) {
            shared.queues.apply(consumer.as_mut(), change).await;
        }
        let wanted = watched.wanted(&shared);
        if wanted != prefetch {
            match consumer.set_prefetch(wanted).await {
                Ok(()) => prefetch = wanted,
                Err(error) => {
                    tracing::warn!(%error, wanted, "could not set the broker's prefetch count")
                }
            }
        }
        // Held tasks whose ETA came take their places first: the consumer takes none while
        // one waits (else, idle on an empty queue, it could keep the last place for good).
        match watched.or(due.wait_for(|n| *n == 0)).await {
            Ok(_) => {}
            Err(Woken::Stop) => break,
            Err(Woken::Again) => continue,
        }
        let held = match watched
            .or(shared.pool.prefetch.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(Woken::Stop) => break,
            Err(Woken::Again) => continue,
        };
        let delivery = match watched.or(consumer.next()).await {
            Ok(delivery) => delivery,
            Err(Woken::Stop) => break,
            Err(Woken::Again) => continue,
        };
        match delivery {
            Ok(delivery) => {
                failures = 0;
                let malformed = delivery.malformed_reason().map(str::to_owned);
                let (message, queue, _redelivered, acker) = delivery.into_parts();
                let received = receive(shared.clone(), message, queue, malformed, acker, held);
                tokio::spawn(received);
            }
            Err(error) => {
                failures += 1;
                let pause = RECEIVE_BACKOFF.delay(failures);
                tracing::error!(%error, ?pause, "could not receive from the broker; retrying");
                drop(held);
                tokio::time::sleep(pause).await;
            }
        }
    }
    // Celery cancels its task consumer first when it stops (`celery/worker/consumer/
    // tasks.py::Tasks.shutdown`), so nothing more arrives while the rest is settled.
    if let Err(error) = consumer.cancel().await {
        tracing::warn!(%error, "could not cancel consuming; the broker's close settles it");
    }
    consumer
}
