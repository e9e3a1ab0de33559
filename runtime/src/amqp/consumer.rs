//! Consuming task queues: one channel with a consumer per queue, `basic.qos` set from the
//! worker's prefetch window, and the whole set re-established on a new channel when the
//! channel or connection is lost.

use std::pin::Pin;

use futures::future::BoxFuture;
use futures::stream::{SelectAll, Stream, StreamExt};
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;

use super::{AmqpBroker, AmqpQueue, wire};
use crate::broker::{Acknowledger, Consumer, Delivery};
use crate::error::{Error, ErrorKind, Result};

/// The prefetch count used until the worker sets its window: Celery's default window for
/// one process (`worker_prefetch_multiplier` 4).
const DEFAULT_PREFETCH: u16 = 4;

type Deliveries =
    Pin<Box<dyn Stream<Item = (String, lapin::Result<lapin::message::Delivery>)> + Send + Sync>>;

pub(crate) struct AmqpConsumer {
    broker: AmqpBroker,
    queues: Vec<AmqpQueue>,
    prefetch: u16,
    live: Option<Live>,
    /// Failed attempts to (re)open since the last success, for the backoff.
    failures: u32,
}

struct Live {
    channel: Channel,
    /// One consumer tag per queue, for `basic.cancel`.
    tags: Vec<String>,
    deliveries: SelectAll<Deliveries>,
}

impl AmqpConsumer {
    pub fn new(broker: AmqpBroker, queues: Vec<AmqpQueue>) -> Self {
        AmqpConsumer {
            broker,
            queues,
            prefetch: DEFAULT_PREFETCH,
            live: None,
            failures: 0,
        }
    }

    /// Global QoS, as Celery sets it on RabbitMQ 3.x: one window for all the channel's
    /// consumers, and changes apply to consumers already running (a per-consumer
    /// `basic.qos` only affects consumers started after it). Quorum queues support no
    /// global QoS, so with them the prefetch count stays as it was when consuming started
    /// (`celery/worker/consumer/tasks.py::Tasks.qos_global`: "Prefetch count is now
    /// static").
    fn qos_global(&self) -> bool {
        !self.queues.iter().any(AmqpQueue::is_quorum)
    }

    /// Opens a channel, declares the queues again (a restarted broker may have lost
    /// non-durable ones), sets QoS and starts one consumer per queue.
    async fn open(&self) -> Result<Live> {
        let broker = &self.broker;
        let channel = broker.consuming_channel().await?;
        let max_priority = broker.options().max_priority;
        for queue in &self.queues {
            broker
                .bounded("declare a queue", queue.declare(&channel, max_priority))
                .await?;
        }
        let qos = BasicQosOptions {
            global: self.qos_global(),
        };
        broker
            .bounded(
                "set the prefetch count",
                channel.basic_qos(self.prefetch, qos),
            )
            .await?;
        let mut deliveries = SelectAll::new();
        let mut tags = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let tag = format!("celerity-{}", uuid::Uuid::new_v4());
            let consumer = broker
                .bounded(
                    "start consuming",
                    channel.basic_consume(
                        &queue.name,
                        &tag,
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            let name = queue.name.clone();
            let stream: Deliveries = Box::pin(consumer.map(move |d| (name.clone(), d)));
            deliveries.push(stream);
            tags.push(tag);
        }
        tracing::debug!(queues = ?self.queues.iter().map(AmqpQueue::name).collect::<Vec<_>>(), prefetch = self.prefetch, "consuming");
        Ok(Live {
            channel,
            tags,
            deliveries,
        })
    }

    fn delivery(&self, queue: String, delivery: lapin::message::Delivery) -> Delivery {
        let message = wire::raw_message(&delivery.properties, delivery.data);
        let acker = AmqpAcker {
            broker: self.broker.clone(),
            acker: Some(delivery.acker),
        };
        Delivery::new(message, queue, delivery.redelivered, Box::new(acker))
    }
}

impl Consumer for AmqpConsumer {
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery>> {
        Box::pin(async move {
            loop {
                let Some(live) = self.live.as_mut() else {
                    if self.failures > 0 {
                        tokio::time::sleep(self.broker.backoff(self.failures)).await;
                    }
                    match self.open().await {
                        Ok(live) => {
                            if self.failures > 0 {
                                tracing::info!("AMQP consumers re-established");
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
                match live.deliveries.next().await {
                    Some((queue, Ok(delivery))) => return Ok(self.delivery(queue, delivery)),
                    Some((_, Err(_))) | None if self.broker.is_closed() => {}
                    Some((queue, Err(error))) => {
                        tracing::warn!(%error, %queue, "AMQP consumer lost; re-establishing");
                    }
                    None => {
                        tracing::warn!("AMQP consumers cancelled by the broker; re-establishing")
                    }
                }
                // Deliveries not yet acknowledged on the lost channel are requeued by
                // the broker, flagged redelivered.
                self.live = None;
                self.failures = 1;
            }
        })
    }

    fn set_prefetch(&mut self, count: usize) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let count = u16::try_from(count).unwrap_or(u16::MAX).max(1);
            if count == self.prefetch {
                return Ok(());
            }
            self.prefetch = count;
            let global = self.qos_global();
            if let Some(live) = &self.live {
                let qos = BasicQosOptions { global };
                self.broker
                    .bounded("set the prefetch count", live.channel.basic_qos(count, qos))
                    .await?;
            }
            Ok(())
        })
    }

    /// `basic.cancel` for each queue: RabbitMQ delivers nothing more, and what it already
    /// delivered stays unacknowledged on the channel, to be settled there or requeued when
    /// the channel closes.
    fn cancel(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(live) = &self.live else {
                return Ok(());
            };
            for tag in &live.tags {
                self.broker
                    .bounded(
                        "cancel consuming",
                        live.channel
                            .basic_cancel(tag, lapin::options::BasicCancelOptions::default()),
                    )
                    .await?;
            }
            Ok(())
        })
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        // Closing the channel cancels its consumers; the broker requeues whatever this
        // consumer still held unacknowledged.
        if let Some(live) = self.live.take() {
            self.broker
                .close_in_background(live.channel, "consumer closed");
        }
    }
}

/// Settles one delivery on the channel it came from.
struct AmqpAcker {
    broker: AmqpBroker,
    /// `Some` until settled.
    acker: Option<lapin::acker::Acker>,
}

impl AmqpAcker {
    fn settle(
        &mut self,
        action: &'static str,
        requeue: Option<bool>,
    ) -> BoxFuture<'static, Result<()>> {
        let acker = self.acker.take();
        let broker = self.broker.clone();
        Box::pin(async move {
            let Some(acker) = acker else { return Ok(()) };
            let settled = match requeue {
                None => {
                    broker
                        .bounded(action, acker.ack(BasicAckOptions::default()))
                        .await?
                }
                Some(requeue) => {
                    broker
                        .bounded(action, acker.reject(BasicRejectOptions { requeue }))
                        .await?
                }
            };
            if settled {
                Ok(())
            } else {
                // The channel it came from is gone: the broker has requeued the message
                // and will deliver it again.
                Err(Error::new(
                    ErrorKind::Broker,
                    format!(
                        "amqp: could not {action}: its channel was closed; the broker redelivers it"
                    ),
                ))
            }
        })
    }
}

impl Acknowledger for AmqpAcker {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.settle("acknowledge a message", None)
    }

    fn reject(mut self: Box<Self>, requeue: bool) -> BoxFuture<'static, Result<()>> {
        self.settle("reject a message", Some(requeue))
    }
}

impl Drop for AmqpAcker {
    /// An unsettled delivery goes back to its queue at once rather than waiting, invisible,
    /// for its channel to close.
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let requeue = acker.reject(BasicRejectOptions { requeue: true });
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), requeue).await;
            });
        }
    }
}
