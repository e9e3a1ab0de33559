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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::broker::Acknowledger;
use crate::protocol::{Properties, RawMessage};

/// How many returns to the broker run at once when a worker stops.
const RETURNS_AT_ONCE: usize = 64;

/// How long a stopping worker waits for the broker to take its held messages back.
const RETURN_TIMEOUT: Duration = Duration::from_secs(30);

/// A message held until its ETA, with the means to settle it.
pub(crate) struct Waiting {
    /// `None` when the broker keeps the message until it is settled and reads it back
    /// ([`Acknowledger::can_reload`]): Redis, whose `unacked` hash has it.
    raw: Option<PackedMessage>,
    /// Shared by every task held from the same queue.
    queue: Arc<str>,
    acker: Box<dyn Acknowledger>,
    /// Its place in the prefetch window, kept by a task held beyond the cap.
    pub place: Option<OwnedSemaphorePermit>,
}

impl Waiting {
    /// The message, unpacked or read back from the broker, the queue it came from and the
    /// means to settle it. `None` when the broker no longer has it for this delivery or
    /// cannot be reached (logged): another consumer restored it, or it is restored after
    /// the visibility timeout, and runs then.
    pub(crate) async fn into_parts(self) -> Option<(RawMessage, String, Box<dyn Acknowledger>)> {
        let Waiting {
            raw, queue, acker, ..
        } = self;
        let raw = match raw {
            Some(raw) => raw.unpack(),
            None => match acker.reload().await {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    tracing::info!(
                        %queue,
                        "a task held for its ETA is back on its queue, restored by another consumer; it runs from there"
                    );
                    return None;
                }
                Err(error) => {
                    tracing::warn!(
                        %error,
                        %queue,
                        "could not read a task held for its ETA back from the broker; it is restored after the visibility timeout"
                    );
                    return None;
                }
            },
        };
        Some((raw, queue.to_string(), acker))
    }
}

/// A message as held: every field in one allocation, its headers as JSON text instead of
/// a map of JSON values. A worker holding 100,000 tasks took 600 MB with the map (and a
/// second copy of the envelope), 270 MB with the headers as text beside the message's
/// other parts in their own allocations (a dozen small blocks a task, and the holes the
/// decoding of the next messages left between them). Decoded again, fully, when its ETA
/// comes. A worker on Redis keeps none of it: the message is in the `unacked` hash
/// until settled, and read from there when its ETA comes.
///
/// Layout: the correlation id, reply-to, expiration, content type, content encoding and
/// body, each as its length plus one in LEB128 (0 for an absent property) followed by its
/// bytes; one byte of flags and one byte each for the delivery mode and the priority; then
/// the headers' JSON text to the end.
pub(crate) struct PackedMessage(Box<[u8]>);

/// Flags of the packed delivery mode and priority.
const HAS_DELIVERY_MODE: u8 = 1;
const HAS_PRIORITY: u8 = 2;

/// Room for Celery's protocol v2 headers as JSON text (about 450 bytes for a task sent
/// by Celery or Celerity), so packing them seldom grows the buffer.
const HEADERS_ROOM: usize = 512;

impl PackedMessage {
    pub(crate) fn pack(raw: RawMessage) -> Self {
        // Named field by field, so a field added to either struct cannot be left out.
        let RawMessage {
            headers,
            properties,
            content_type,
            content_encoding,
            body,
        } = raw;
        let Properties {
            correlation_id,
            reply_to,
            delivery_mode,
            priority,
            expiration,
        } = properties;
        let texts = [
            correlation_id.as_deref(),
            reply_to.as_deref(),
            expiration.as_deref(),
            Some(content_type.as_str()),
            Some(content_encoding.as_str()),
        ];
        let sizes: usize = texts.iter().flatten().map(|t| t.len()).sum();
        let mut packed = Vec::with_capacity(sizes + body.len() + HEADERS_ROOM + 64);
        for text in texts {
            put(&mut packed, text.map(str::as_bytes));
        }
        put(&mut packed, Some(&body));
        drop(body);
        let flags =
            delivery_mode.map_or(0, |_| HAS_DELIVERY_MODE) | priority.map_or(0, |_| HAS_PRIORITY);
        packed.extend([flags, delivery_mode.unwrap_or(0), priority.unwrap_or(0)]);
        // Written in place, with no text of its own to copy. Serialising a map of JSON
        // values into memory cannot fail.
        let _ = serde_json::to_writer(&mut packed, &headers);
        PackedMessage(packed.into_boxed_slice())
    }

    pub(crate) fn unpack(self) -> RawMessage {
        let mut fields = Fields(&self.0);
        let mut text = || {
            fields
                .take()
                .map(|t| String::from_utf8_lossy(t).into_owned())
        };
        let (correlation_id, reply_to, expiration) = (text(), text(), text());
        let (content_type, content_encoding) = (text(), text());
        let body = fields.take().map(<[u8]>::to_vec);
        let [flags, delivery_mode, priority] = fields.bytes();
        let given = |flag: u8, value: u8| (flags & flag != 0).then_some(value);
        // It was written from a map in `pack`, so it reads back as one.
        let headers = serde_json::from_slice(fields.0).unwrap_or_default();
        RawMessage {
            headers,
            properties: Properties {
                correlation_id,
                reply_to,
                delivery_mode: given(HAS_DELIVERY_MODE, delivery_mode),
                priority: given(HAS_PRIORITY, priority),
                expiration,
            },
            content_type: content_type.unwrap_or_default(),
            content_encoding: content_encoding.unwrap_or_default(),
            body: body.unwrap_or_default(),
        }
    }
}

/// Appends `field`: its length plus one in LEB128, 0 when absent, then its bytes.
fn put(packed: &mut Vec<u8>, field: Option<&[u8]>) {
    let mut tagged = field.map_or(0, |f| f.len() as u64 + 1);
    loop {
        let low = (tagged & 0x7f) as u8;
        tagged >>= 7;
        if tagged == 0 {
            packed.push(low);
            break;
        }
        packed.push(low | 0x80);
    }
    packed.extend_from_slice(field.unwrap_or_default());
}

/// The fields of a packed message, read in the order [`PackedMessage::pack`] wrote them.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// The next field; `None` when it was absent.
    fn take(&mut self) -> Option<&'a [u8]> {
        let mut tagged = 0u64;
        let mut shift = 0;
        while let Some((&byte, rest)) = self.0.split_first() {
            self.0 = rest;
            tagged |= u64::from(byte & 0x7f) << shift.min(63);
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let length = usize::try_from(tagged.checked_sub(1)?).unwrap_or(usize::MAX);
        let (field, rest) = self.0.split_at(length.min(self.0.len()));
        self.0 = rest;
        Some(field)
    }

    /// The next `N` bytes (zeros past the end).
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut bytes = [0; N];
        let (taken, rest) = self.0.split_at(N.min(self.0.len()));
        bytes[..taken.len()].copy_from_slice(taken);
        self.0 = rest;
        bytes
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
    /// The names of the queues tasks were held from, shared by those tasks.
    queues: Vec<Arc<str>>,
}

impl State {
    /// `queue`'s name, shared with the other tasks held from it.
    fn queue(&mut self, queue: String) -> Arc<str> {
        if let Some(known) = self.queues.iter().find(|q| ***q == *queue) {
            return known.clone();
        }
        let name: Arc<str> = queue.into();
        self.queues.push(name.clone());
        name
    }
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

    /// Holds `raw`, taken from `queue` and settled through `acker`, until `due`, giving
    /// up `place`, its place in the prefetch window, while fewer than the cap are held that
    /// way. Beyond the cap it keeps the place, so a worker holding that many stops
    /// fetching once its window is full of them: the memory it holds stays bounded,
    /// nothing is requeued (a far-future task requeued comes straight back, a hot loop),
    /// and nothing is lost. Once the worker stops, the task is handed back instead.
    pub(crate) async fn hold(
        &self,
        due: Instant,
        raw: RawMessage,
        queue: String,
        acker: Box<dyn Acknowledger>,
        place: OwnedSemaphorePermit,
    ) {
        let raw = (!acker.can_reload()).then(|| PackedMessage::pack(raw));
        let refused = {
            let mut state = self.lock();
            let mut task = Waiting {
                raw,
                queue: state.queue(queue),
                acker,
                place: None,
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};

    fn round_trip(raw: RawMessage) {
        assert_eq!(PackedMessage::pack(raw.clone()).unpack(), raw);
    }

    fn message(headers: Value, properties: Properties, body: Vec<u8>) -> RawMessage {
        RawMessage {
            headers: headers.as_object().cloned().unwrap_or_default(),
            properties,
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            body,
        }
    }

    #[test]
    fn a_packed_message_unpacks_to_every_field_it_had() {
        let headers = json!({"lang": "py", "task": "tasks.add", "id": "1", "eta": null,
            "timelimit": [null, 0.5], "retries": 3, "stamps": {}, "custom": ["é", 1]});
        round_trip(message(
            headers.clone(),
            Properties {
                correlation_id: Some("1".into()),
                reply_to: Some("reply".into()),
                delivery_mode: Some(2),
                priority: Some(0),
                expiration: Some("60000".into()),
            },
            br#"[[1, 2], {}, {"callbacks": null}]"#.to_vec(),
        ));
        // No properties, an empty body, empty content type and encoding.
        let mut bare = message(json!({}), Properties::default(), Vec::new());
        bare.content_type.clear();
        bare.content_encoding.clear();
        round_trip(bare);
        // Properties present but empty, and a priority without a delivery mode.
        round_trip(message(
            headers.clone(),
            Properties {
                correlation_id: Some(String::new()),
                priority: Some(9),
                ..Properties::default()
            },
            b"[]".to_vec(),
        ));
        // A body that is not UTF-8, with bytes the length prefixes use.
        let mut binary = message(headers, Properties::default(), (0..=255).collect());
        binary.content_type = "application/octet-stream".into();
        binary.content_encoding = "binary".into();
        round_trip(binary);
    }

    #[test]
    fn large_headers_and_bodies_keep_their_order_and_bytes() {
        let mut headers = Map::new();
        for i in (0..2000).rev() {
            headers.insert(format!("header-{i}"), json!("x".repeat(i % 300)));
        }
        let body = vec![0x80; 300_000];
        let raw = RawMessage {
            headers,
            properties: Properties {
                reply_to: Some("r".repeat(200)),
                ..Properties::default()
            },
            content_type: "application/json".into(),
            content_encoding: "utf-8".into(),
            body,
        };
        let unpacked = PackedMessage::pack(raw.clone()).unpack();
        assert!(unpacked.headers.keys().eq(raw.headers.keys()));
        assert_eq!(unpacked, raw);
    }
}
