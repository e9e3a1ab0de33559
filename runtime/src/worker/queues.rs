//! The queues a worker consumes, changeable while it runs: Celery's `add_consumer` and
//! `cancel_consumer` remote-control commands. Remote control asks; the consuming loop,
//! which owns the consumer, applies each change between two deliveries, as Celery's
//! consumer does on its event loop (`state.consumer.call_soon(add_task_queue, …)`).

use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::broker::Consumer;

/// A change to the queues consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueueChange {
    /// Consume this queue too.
    Add(String),
    /// Consume this queue no more.
    Cancel(String),
}

/// The queues consumed now, and the way to ask the consuming loop to change them.
pub(crate) struct ConsumedQueues {
    consumed: Mutex<Vec<String>>,
    requests: mpsc::UnboundedSender<QueueChange>,
}

impl ConsumedQueues {
    /// The worker's first queues, and the receiving end the consuming loop reads changes
    /// from.
    pub(crate) fn new(queues: Vec<String>) -> (Self, mpsc::UnboundedReceiver<QueueChange>) {
        let (requests, changes) = mpsc::unbounded_channel();
        let consumed = ConsumedQueues {
            consumed: Mutex::new(queues),
            requests,
        };
        (consumed, changes)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<String>> {
        // Every update is one push or removal: a poisoned lock is consistent.
        self.consumed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The queues consumed, in the order they were added.
    pub(crate) fn names(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// Asks the consuming loop for `change`; it is made soon, not before this returns.
    pub(crate) fn request(&self, change: QueueChange) {
        // The loop reads until the worker stops; a change asked after that has no effect.
        let _ = self.requests.send(change);
    }

    /// Makes `change` on `consumer`: what the consuming loop does with each request. A
    /// queue added or cancelled twice is left as it is, as Celery does
    /// (`Consumer.add_task_queue` checks `consuming_from(queue)`).
    pub(crate) async fn apply(&self, consumer: &mut dyn Consumer, change: QueueChange) {
        match change {
            QueueChange::Add(queue) => {
                if self.lock().contains(&queue) {
                    return;
                }
                match consumer.add_queue(&queue).await {
                    Ok(()) => {
                        tracing::info!(%queue, "started consuming from {queue}");
                        self.lock().push(queue);
                    }
                    Err(error) => {
                        tracing::error!(%error, %queue, "could not start consuming from {queue}")
                    }
                }
            }
            QueueChange::Cancel(queue) => {
                if !self.lock().contains(&queue) {
                    return;
                }
                // Consumed no more from here on, even if the broker did not confirm it:
                // a consumer set up again after a loss leaves the queue out.
                self.lock().retain(|q| *q != queue);
                match consumer.cancel_queue(&queue).await {
                    Ok(()) => tracing::info!(%queue, "stopped consuming from {queue}"),
                    Err(error) => {
                        tracing::warn!(%error, %queue, "could not cancel consuming from {queue} cleanly")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;

    #[tokio::test]
    async fn changes_reach_the_consumer_once_each() {
        let broker = crate::broker::MemoryBroker::new();
        let mut consumer = broker.consume(&["a".to_owned()]).await.unwrap();
        let (queues, mut changes) = ConsumedQueues::new(vec!["a".into()]);
        queues.request(QueueChange::Add("b".into()));
        queues.request(QueueChange::Add("b".into()));
        queues.request(QueueChange::Cancel("a".into()));
        while let Ok(change) = changes.try_recv() {
            queues.apply(consumer.as_mut(), change).await;
        }
        assert_eq!(queues.names(), ["b"]);
        queues
            .apply(consumer.as_mut(), QueueChange::Cancel("b".into()))
            .await;
        assert!(queues.names().is_empty(), "the last queue may go too");
    }
}
