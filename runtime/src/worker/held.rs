//! Tasks held until their ETA (a countdown, an `eta`, every pending retry): one ordered
//! set and one timer for all of them, rather than a sleeping task each, so that a graceful
//! stop can hand every one of them back to the broker at once.
//!
//! Celery keeps them in its timer (`celery/worker/strategy.py`: `apply_eta_task`) and
//! puts them back when the worker stops: kombu's Redis channel restores its unacknowledged
//! deliveries on close (`kombu/transport/redis.py`: `QoS.restore_unacked_once`), and an
//! AMQP channel's close makes RabbitMQ requeue them. A Celerity worker returns them itself
//! (a reject with requeue), because a Redis delivery dropped unsettled stays in `unacked`
//! until the visibility timeout, an hour by default.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::broker::Acknowledger;
use crate::protocol::RawMessage;

/// How many returns to the broker run at once when a worker stops.
const RETURNS_AT_ONCE: usize = 64;

/// How long a stopping worker waits for the broker to take its held messages back.
const RETURN_TIMEOUT: Duration = Duration::from_secs(30);

/// A message held until its ETA, with the means to settle it.
pub(crate) struct Waiting {
    pub raw: PackedMessage,
    pub queue: String,
    pub acker: Box<dyn Acknowledger>,
    /// Its place in the prefetch window, kept by a task held beyond the cap.
    pub place: Option<OwnedSemaphorePermit>,
}

/// A message as held: its headers as JSON text instead of a map of JSON values, which
/// takes several times the room (with the map and a second copy of the envelope, a
/// worker holding 100,000 tasks took 600 MB; packed, 280 MB). Decoded again, fully,
/// when its ETA comes.
pub(crate) struct PackedMessage {
    /// The message without its headers, its body trimmed to size.
    shell: RawMessage,
    headers: Box<[u8]>,
}

impl PackedMessage {
    pub(crate) fn pack(mut raw: RawMessage) -> Self {
        let headers = std::mem::take(&mut raw.headers);
        // Serialising a map of JSON values cannot fail.
        let headers = serde_json::to_vec(&headers)
            .unwrap_or_default()
            .into_boxed_slice();
        raw.body.shrink_to_fit();
        PackedMessage {
            shell: raw,
            headers,
        }
    }

    pub(crate) fn unpack(self) -> RawMessage {
        let mut raw = self.shell;
        // It was written from a map just above, so it reads back as one.
        raw.headers = serde_json::from_slice(&self.headers).unwrap_or_default();
        raw
    }
}

/// The tasks a worker holds until their ETA.
pub(crate) struct HeldTasks {
    state: Mutex<State>,
    /// Wakes the timer: a task due sooner than it sleeps for, or the worker stopping.
    wake: Notify,
    /// How many are held outside the prefetch window. The consumer raises the broker's
    /// prefetch by as many, as Celery does (`consumer.qos.increment_eventually()`).
    count: watch::Sender<usize>,
    /// How many may be held outside the window; those beyond keep their place in it.
    cap: usize,
    /// Tasks out of the set whose fate is not settled yet: due and waiting for a place in
    /// the prefetch window, or on their way back to the broker. [`HeldTasks::close`] waits
    /// for them.
    leaving: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    /// By due time, then arrival: tasks due at the same instant keep their order.
    tasks: BTreeMap<(Instant, u64), Waiting>,
    /// How many of `tasks` hold no place in the prefetch window.
    outside: usize,
    arrivals: u64,
    closed: bool,
}

impl HeldTasks {
    /// Holds up to `cap` tasks outside the prefetch window.
    pub(crate) fn new(cap: usize) -> Self {
        HeldTasks {
            state: Mutex::default(),
            wake: Notify::new(),
            count: watch::channel(0).0,
            cap,
            leaving: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every operation leaves the set consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches how many tasks came due (or are going back to the broker) and are not
    /// settled yet.
    pub(crate) fn leaving(&self) -> watch::Receiver<usize> {
        self.leaving.subscribe()
    }

    /// Watches how many tasks are held outside the prefetch window.
    pub(crate) fn count(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }

    /// Holds `task` until `due`, giving up `place`, its place in the prefetch window, while
    /// fewer than the cap are held that way. Beyond the cap it keeps the place, so a
    /// worker holding that many stops fetching once its window is full of them: the
    /// memory it holds stays bounded, nothing is requeued (a far-future task requeued
    /// comes straight back, a hot loop), and nothing is lost. Once the worker stops, the
    /// task is handed back instead.
    pub(crate) async fn hold(&self, due: Instant, mut task: Waiting, place: OwnedSemaphorePermit) {
        let refused = {
            let mut state = self.lock();
            if state.closed {
                Some((task, place))
            } else {
                let arrival = state.arrivals;
                state.arrivals += 1;
                let sooner = state
                    .tasks
                    .keys()
                    .next()
                    .is_none_or(|(first, _)| due < *first);
                if state.outside < self.cap {
                    state.outside += 1;
                    drop(place);
                } else {
                    task.place = Some(place);
                }
                state.tasks.insert((due, arrival), task);
                self.count.send_replace(state.outside);
                if sooner {
                    self.wake.notify_one();
                }
                None
            }
        };
        if let Some((task, place)) = refused {
            self.leaving.send_modify(|n| *n += 1);
            self.give_back(task).await;
            drop(place);
            self.left();
        }
    }

    /// Takes the tasks due at `now`; also returns when the next one is due, and whether
    /// the set is closed.
    fn take_due(&self, now: Instant) -> (Vec<Waiting>, Option<Instant>, bool) {
        let mut state = self.lock();
        let mut due = Vec::new();
        while let Some(entry) = state.tasks.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let task = entry.remove();
            if task.place.is_none() {
                state.outside -= 1;
            }
            due.push(task);
        }
        if !due.is_empty() {
            // Counted as leaving before the count drops: the consumer, woken by the count,
            // then sees them waiting for a place and lets them have it.
            self.leaving.send_modify(|n| *n += due.len());
            self.count.send_replace(state.outside);
        }
        let next = state.tasks.keys().next().map(|(at, _)| *at);
        (due, next, state.closed)
    }

    /// Hands each task to `start` when its ETA comes, until [`close`](Self::close).
    /// `start` calls [`left`](Self::left) once the task has its place in the prefetch
    /// window or is back on the broker.
    pub(crate) async fn run(&self, start: impl Fn(Waiting)) {
        loop {
            // Registered before looking, so a task held in between is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (due, next, closed) = self.take_due(Instant::now());
            if closed {
                return;
            }
            due.into_iter().for_each(&start);
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Stops holding: every task still held, and every one offered from now on, goes back
    /// to the broker. Returns once the broker has them all back (or after a timeout).
    pub(crate) async fn close(&self) {
        let tasks = {
            let mut state = self.lock();
            state.closed = true;
            state.outside = 0;
            self.count.send_replace(0);
            std::mem::take(&mut state.tasks)
        };
        self.wake.notify_one();
        if !tasks.is_empty() {
            tracing::info!(
                count = tasks.len(),
                "returning tasks held for their ETA to the broker"
            );
        }
        let returns = futures::stream::iter(tasks.into_values())
            .for_each_concurrent(RETURNS_AT_ONCE, |task| self.give_back(task));
        let mut leaving = self.leaving.subscribe();
        let all_back = async {
            returns.await;
            let _ = leaving.wait_for(|n| *n == 0).await;
        };
        if tokio::time::timeout(RETURN_TIMEOUT, all_back)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?RETURN_TIMEOUT,
                "not every held task was returned to the broker in time; the broker redelivers the rest"
            );
        }
    }

    /// A task handed to `start` by [`run`](Self::run) is settled: admitted to the window
    /// or given back.
    pub(crate) fn left(&self) {
        self.leaving.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Returns `task` to its queue, unstarted (a reject with requeue).
    pub(crate) async fn give_back(&self, task: Waiting) {
        let Waiting {
            raw, queue, acker, ..
        } = task;
        drop(raw);
        if let Err(error) = acker.reject(true).await {
            tracing::warn!(%error, %queue, "could not return a held task to the broker");
        }
    }
}
