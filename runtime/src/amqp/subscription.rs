//! One AMQP subscription that stays subscribed: a channel on the consuming connection,
//! what consuming needs declared on it, one consumer a queue, and all of it set up again
//! on a new channel, after a backoff, when the connection or channel is lost or the broker
//! cancels the consumers. The task consumer, the pidbox mailbox and the `rpc://` result
//! receiver consume through it; each supplies only its [`Setup`] and reads deliveries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{SelectAll, Stream, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;

use super::AmqpBroker;
use crate::error::{Error, ErrorKind, Result};

/// What a subscription declares and consumes: the part each of its users supplies.
pub(super) trait Setup: Send + Sync {
    /// What the subscription is for, as logs name it: `task consumer`.
    const WHAT: &'static str;

    /// Whether deliveries are acknowledged (task queues), or need no acknowledgement
    /// (`no_ack=True`, as Celery consumes its mailbox and result queues).
    const ACKNOWLEDGED: bool;

    /// The queues consumed: a delivery comes with the name of its queue.
    fn queues(&self) -> impl Iterator<Item = &str>;

    /// Declares on a new channel what consuming needs (exchanges, queues, bindings,
    /// `basic.qos`). Runs at every set-up: a restarted broker may have lost what was not
    /// durable, and a failover broker never had it.
    fn declare(
        &self,
        broker: &AmqpBroker,
        channel: &Channel,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// One consumer's deliveries, with the name of its queue.
type Deliveries = Pin<Box<dyn Stream<Item = (Arc<str>, lapin::Result<Delivery>)> + Send + Sync>>;

/// A consumer kept subscribed across lost connections, channels and consumers.
pub(super) struct Subscription<S: Setup> {
    broker: AmqpBroker,
    setup: S,
    live: Option<Live>,
    /// Failed set-ups since the last success, counting the loss itself: the next attempt
    /// first waits for the backoff of this many.
    failures: u32,
    /// Set by `cancel`: the subscription is not set up again.
    cancelled: bool,
}

/// A subscription's channel and the consumers on it.
struct Live {
    channel: Channel,
    /// The queue and consumer tag of each consumer, for `basic.cancel`.
    consumers: Vec<(Arc<str>, String)>,
    deliveries: SelectAll<Deliveries>,
}

impl<S: Setup> Subscription<S> {
    /// A subscription set up by the first [`next`](Self::next).
    pub(super) fn new(broker: AmqpBroker, setup: S) -> Self {
        Subscription {
            broker,
            setup,
            live: None,
            failures: 0,
            cancelled: false,
        }
    }

    /// A subscription set up before this returns, so that what the broker refuses the
    /// first time (an exclusive queue another connection holds) reaches the caller.
    pub(super) async fn open(broker: AmqpBroker, setup: S) -> Result<Self> {
        let mut subscription = Subscription::new(broker, setup);
        subscription.live = Some(subscription.subscribe().await?);
        Ok(subscription)
    }

    pub(super) fn broker(&self) -> &AmqpBroker {
        &self.broker
    }

    pub(super) fn setup(&self) -> &S {
        &self.setup
    }

    /// The setup, to change what the next set-up declares.
    pub(super) fn setup_mut(&mut self) -> &mut S {
        &mut self.setup
    }

    /// The channel of the live consumers, if any: for settings that apply to them as they
    /// run (a new `basic.qos`).
    pub(super) fn channel(&self) -> Option<&Channel> {
        self.live.as_ref().map(|live| &live.channel)
    }

    /// Opens a channel, declares what the setup needs and starts one consumer a queue.
    async fn subscribe(&self) -> Result<Live> {
        let broker = &self.broker;
        let channel = broker.consuming_channel().await?;
        self.setup.declare(broker, &channel).await?;
        let mut live = Live {
            channel,
            consumers: Vec::new(),
            deliveries: SelectAll::new(),
        };
        for queue in self.setup.queues() {
            live.consume::<S>(broker, queue).await?;
        }
        tracing::debug!(queues = ?self.setup.queues().collect::<Vec<_>>(), "{} consuming", S::WHAT);
        Ok(live)
    }

    /// Starts consuming `queue` on the live channel, once the setup lists it: a set-up
    /// after a loss consumes it too. Without a live channel the next set-up starts it; so
    /// does a failure here, which gives up the channel (a refused `basic.consume` closes
    /// it) for a new set-up.
    pub(super) async fn consume_queue(&mut self, queue: &str) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.consumers.iter().any(|(q, _)| &**q == queue) {
            return;
        }
        if let Err(error) = live.consume::<S>(&self.broker, queue).await {
            tracing::warn!(%error, queue, "could not start consuming a queue; setting the AMQP {} up again", S::WHAT);
            if let Some(live) = self.live.take() {
                self.broker
                    .close_in_background(live.channel, "consumer set up again");
            }
            self.failures = 1;
        }
    }

    /// `basic.cancel` for the consumer of `queue`, once the setup no longer lists it:
    /// the broker delivers nothing more from it, and what it delivered stays to be
    /// settled on the channel.
    pub(super) async fn stop_consuming(&mut self, queue: &str) -> Result<()> {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let Some(at) = live.consumers.iter().position(|(q, _)| &**q == queue) else {
            return Ok(());
        };
        let (_, tag) = live.consumers.remove(at);
        let cancel = live
            .channel
            .basic_cancel(&tag, BasicCancelOptions::default());
        self.broker
            .bounded("cancel consuming a queue", cancel)
            .await
    }

    /// The next delivery, with the name of its queue. After a loss the subscription is
    /// set up again, first waiting for the backoff. An error is a set-up that failed (the
    /// next call waits longer before trying again), or `Closed` once cancelled.
    ///
    /// Cancel-safe: the state lives in the subscription, so dropping the future loses no
    /// delivery.
    pub(super) async fn next(&mut self) -> Result<(Arc<str>, Delivery)> {
        loop {
            if self.cancelled {
                return Err(Error::new(
                    ErrorKind::Closed,
                    format!("amqp: the {} was cancelled", S::WHAT),
                ));
            }
            let Some(live) = self.live.as_mut() else {
                if self.failures > 0 {
                    tokio::time::sleep(self.broker.backoff(self.failures)).await;
                }
                match self.subscribe().await {
                    Ok(live) => {
                        if self.failures > 0 {
                            tracing::info!("AMQP {} re-established", S::WHAT);
                        }
                        self.failures = 0;
                        self.live = Some(live);
                    }
                    Err(error) => {
                        self.failures = self.failures.saturating_add(1);
                        return Err(error);
                    }
                }
                continue;
            };
            let ended = match live.deliveries.next().await {
                Some((queue, Ok(delivery))) => return Ok((queue, delivery)),
                Some((queue, Err(error))) => Some((queue, error)),
                // Every consumer was cancelled here, none by the broker: nothing comes
                // until a queue is consumed again.
                None if live.consumers.is_empty() => return futures::future::pending().await,
                None => None,
            };
            self.lost(ended);
        }
    }

    /// As [`next`](Self::next), trying again (each failure logged) for as long as
    /// setting up fails; `None` once the broker is closed or the subscription cancelled.
    pub(super) async fn next_retrying(&mut self) -> Option<(Arc<str>, Delivery)> {
        loop {
            match self.next().await {
                Ok(delivered) => return Some(delivered),
                Err(error) if error.kind() == ErrorKind::Closed => return None,
                Err(error) => {
                    tracing::warn!(%error, "could not set up the AMQP {} again; retrying", S::WHAT);
                }
            }
        }
    }

    /// Forgets the live consumers after `ended`: the error of the consumer of that queue,
    /// or `None` once the broker cancelled them all. Deliveries not acknowledged on the
    /// lost channel are requeued by the broker, flagged redelivered.
    fn lost(&mut self, ended: Option<(Arc<str>, lapin::Error)>) {
        self.live = None;
        self.failures = 1;
        if self.broker.is_closed() {
            return;
        }
        match ended {
            Some((queue, error)) => {
                tracing::warn!(%error, %queue, "AMQP {} lost; re-establishing", S::WHAT);
            }
            None => {
                tracing::warn!("AMQP {} cancelled by the broker; re-establishing", S::WHAT);
            }
        }
    }

    /// `basic.cancel` for each consumer: the broker delivers nothing more, and what it
    /// already delivered stays unacknowledged on the channel, to be settled there or
    /// requeued when the channel closes. The subscription is not set up again.
    pub(super) async fn cancel(&mut self) -> Result<()> {
        self.cancelled = true;
        let Some(live) = &self.live else {
            return Ok(());
        };
        for (_, tag) in &live.consumers {
            let cancel = live
                .channel
                .basic_cancel(tag, BasicCancelOptions::default());
            self.broker.bounded("cancel consuming", cancel).await?;
        }
        Ok(())
    }
}

impl Live {
    /// Starts a consumer of `queue` on the channel.
    async fn consume<S: Setup>(&mut self, broker: &AmqpBroker, queue: &str) -> Result<()> {
        let options = BasicConsumeOptions {
            no_ack: !S::ACKNOWLEDGED,
            ..Default::default()
        };
        let tag = format!("celerity-{}", uuid::Uuid::new_v4());
        let consume = self
            .channel
            .basic_consume(queue, &tag, options, FieldTable::default());
        let consumer = broker
            .bounded(&format!("start the {}", S::WHAT), consume)
            .await?;
        let name: Arc<str> = queue.into();
        let named = name.clone();
        let stream: Deliveries = Box::pin(consumer.map(move |d| (named.clone(), d)));
        self.deliveries.push(stream);
        self.consumers.push((name, tag));
        Ok(())
    }
}

impl<S: Setup> Drop for Subscription<S> {
    fn drop(&mut self) {
        // Closing the channel cancels its consumers; the broker requeues whatever they
        // still held unacknowledged. `AmqpBroker::close` waits for it.
        if let Some(live) = self.live.take() {
            self.broker
                .close_in_background(live.channel, "consumer closed");
        }
    }
}
