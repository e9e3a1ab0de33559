//! The embedded in-process broker: the default with no configuration, and the broker for
//! users' tests. It keeps AMQP's delivery semantics: a delivery dropped without an ack or
//! reject goes back to the head of its queue, as if the connection had closed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, broadcast, mpsc};

use crate::broker::{Acknowledger, Broker, Consumer, Control, ControlStream, Delivery};
use crate::error::Result;
use crate::events::Event;
use crate::protocol::RawMessage;

/// An in-memory broker; clones share the same queues.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

struct Shared {
    queues: Mutex<HashMap<String, VecDeque<Entry>>>,
    published: Notify,
    /// Deliveries handed out and not yet settled.
    unacked: AtomicUsize,
    control: broadcast::Sender<Control>,
    /// The subscribers to monitoring events.
    events: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            queues: Mutex::default(),
            published: Notify::new(),
            unacked: AtomicUsize::new(0),
            control: broadcast::channel(1024).0,
            events: Mutex::default(),
        }
    }
}

struct Entry {
    message: RawMessage,
    redelivered: bool,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages waiting in `queue` (not counting deliveries in progress).
    pub fn len(&self, queue: &str) -> usize {
        self.lock().get(queue).map_or(0, VecDeque::len)
    }

    /// Deliveries handed to consumers and not yet acknowledged or rejected.
    pub fn unacked(&self) -> usize {
        self.shared.unacked.load(Ordering::SeqCst)
    }

    /// Whether `queue` has no waiting messages.
    pub fn is_empty(&self, queue: &str) -> bool {
        self.len(queue) == 0
    }

    /// The monitoring events workers on this broker publish from now on (worker events,
    /// and task events where enabled), in the order each worker sends them: what Celery's
    /// `app.events.Receiver` reads on Redis or RabbitMQ, for tests. Each subscription gets
    /// every event and keeps those it has not read yet.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let broker = celerity::broker::MemoryBroker::new();
    /// let mut events = broker.subscribe_events();
    /// assert!(events.try_next().is_none());
    /// # }
    /// ```
    pub fn subscribe_events(&self) -> MemoryEvents {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.shared
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sender);
        MemoryEvents { receiver }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Entry>>> {
        // A panic while holding this lock cannot leave the map inconsistent (every
        // operation is a single push or pop), so a poisoned lock is still usable.
        self.shared.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, queue: &str, entry: Entry, front: bool) {
        let mut queues = self.lock();
        let list = queues.entry(queue.to_owned()).or_default();
        if front {
            list.push_front(entry);
        } else {
            list.push_back(entry);
        }
        drop(queues);
        self.shared.published.notify_waiters();
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBroker")
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(&'a self, queue: &'a str, message: RawMessage) -> BoxFuture<'a, Result<()>> {
        self.push(
            queue,
            Entry {
                message,
                redelivered: false,
            },
            false,
        );
        Box::pin(async { Ok(()) })
    }

    fn consume<'a>(&'a self, queues: &'a [String]) -> BoxFuture<'a, Result<Box<dyn Consumer>>> {
        let consumer = MemoryConsumer {
            broker: self.clone(),
            queues: queues.to_vec(),
            next_queue: 0,
        };
        Box::pin(async move { Ok(Box::new(consumer) as Box<dyn Consumer>) })
    }

    fn describe(&self) -> String {
        "memory://".into()
    }

    fn broadcast<'a>(&'a self, command: Control) -> BoxFuture<'a, Result<()>> {
        // No subscriber is not an error: no worker is running to receive it.
        let _ = self.shared.control.send(command);
        Box::pin(async { Ok(()) })
    }

    fn control<'a>(&'a self) -> BoxFuture<'a, Result<Box<dyn ControlStream>>> {
        let receiver = self.shared.control.subscribe();
        Box::pin(async move { Ok(Box::new(MemoryControl { receiver }) as Box<dyn ControlStream>) })
    }

    fn publish_events<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<()>> {
        let mut subscribers = self.shared.events.lock().unwrap_or_else(|p| p.into_inner());
        // A subscription dropped is forgotten at the next publish.
        subscribers.retain(|subscriber| {
            events
                .iter()
                .all(|event| subscriber.send(event.clone()).is_ok())
        });
        Box::pin(async { Ok(()) })
    }
}

/// The monitoring events a [`MemoryBroker`] carries, as one subscription receives them
/// ([`MemoryBroker::subscribe_events`]).
#[derive(Debug)]
pub struct MemoryEvents {
    receiver: mpsc::UnboundedReceiver<Event>,
}

impl MemoryEvents {
    /// The next event, waiting for it; `None` once the broker and all its clones are gone.
    pub async fn next(&mut self) -> Option<Event> {
        self.receiver.recv().await
    }

    /// The next event if one has arrived.
    pub fn try_next(&mut self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }
}

struct MemoryControl {
    receiver: broadcast::Receiver<Control>,
}

impl ControlStream for MemoryControl {
    fn next(&mut self) -> BoxFuture<'_, Option<Control>> {
        Box::pin(async move {
            loop {
                match self.receiver.recv().await {
                    Ok(command) => return Some(command),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "control commands were dropped: the worker fell behind"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }
}

struct MemoryConsumer {
    broker: MemoryBroker,
    queues: Vec<String>,
    /// Round-robin start, so a busy queue never starves the others.
    next_queue: usize,
}

impl MemoryConsumer {
    fn try_take(&mut self) -> Option<Delivery> {
        let mut queues = self.broker.lock();
        let count = self.queues.len();
        if count == 0 {
            return None;
        }
        for step in 0..count {
            let index = (self.next_queue + step) % count;
            let name = &self.queues[index];
            if let Some(entry) = queues.get_mut(name).and_then(VecDeque::pop_front) {
                self.next_queue = (index + 1) % count;
                self.broker.shared.unacked.fetch_add(1, Ordering::SeqCst);
                let acker = MemoryAcker {
                    broker: self.broker.clone(),
                    queue: name.clone(),
                    message: Some(entry.message.clone()),
                };
                return Some(Delivery::new(
                    entry.message,
                    name.clone(),
                    entry.redelivered,
                    Box::new(acker),
                ));
            }
        }
        None
    }
}

impl Consumer for MemoryConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery>> {
        Box::pin(async move {
            loop {
                // Register for the wake-up before looking, so a publish in between is not missed.
                let shared = self.broker.shared.clone();
                let published = shared.published.notified();
                tokio::pin!(published);
                published.as_mut().enable();
                if let Some(delivery) = self.try_take() {
                    return Ok(delivery);
                }
                published.await;
            }
        })
    }

    fn add_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        if !self.queues.iter().any(|q| q == queue) {
            self.queues.push(queue.to_owned());
        }
        Box::pin(async { Ok(()) })
    }

    fn cancel_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        self.queues.retain(|q| q != queue);
        self.next_queue = 0;
        Box::pin(async { Ok(()) })
    }
}

struct MemoryAcker {
    broker: MemoryBroker,
    queue: String,
    /// `Some` until settled.
    message: Option<RawMessage>,
}

impl MemoryAcker {
    fn settled(&mut self) -> Option<RawMessage> {
        let message = self.message.take();
        if message.is_some() {
            self.broker.shared.unacked.fetch_sub(1, Ordering::SeqCst);
        }
        message
    }

    fn requeue(&mut self) {
        if let Some(message) = self.settled() {
            self.broker.push(
                &self.queue,
                Entry {
                    message,
                    redelivered: true,
                },
                true,
            );
        }
    }
}

impl Acknowledger for MemoryAcker {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.settled();
        Box::pin(async { Ok(()) })
    }

    fn reject(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
        if requeue {
            self.requeue();
        } else {
            self.settled();
        }
        Box::pin(async { Ok(()) })
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        self.requeue();
    }
}
