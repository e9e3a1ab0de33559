//! Consuming task queues: one channel with a consumer per queue, `basic.qos` set from the
//! worker's prefetch window, kept subscribed by [`Subscription`].

use futures::future::BoxFuture;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicQosOptions, BasicRejectOptions};

use super::subscription::{Setup, Subscription};
use super::{AmqpBroker, AmqpQueue, wire};
use crate::broker::{Acknowledger, Consumer, Delivery};
use crate::error::{Error, ErrorKind, Result};

/// The prefetch count used until the worker sets its window: Celery's default window for
/// one process (`worker_prefetch_multiplier` 4).
const DEFAULT_PREFETCH: u16 = 4;

pub(crate) struct AmqpConsumer {
    subscription: Subscription<TaskQueues>,
}

/// The task queues a worker consumes, and its prefetch window.
struct TaskQueues {
    queues: Vec<AmqpQueue>,
    prefetch: u16,
}

impl TaskQueues {
    /// Global QoS, as Celery sets it on RabbitMQ 3.x: one window for all the channel's
    /// consumers, and changes apply to consumers already running (a per-consumer
    /// `basic.qos` only affects consumers started after it). Quorum queues support no
    /// global QoS, so with them the prefetch count stays as it was when consuming started
    /// (`celery/worker/consumer/tasks.py::Tasks.qos_global`: "Prefetch count is now
    /// static").
    fn qos_global(&self) -> bool {
        !self.queues.iter().any(AmqpQueue::is_quorum)
    }

    /// Sets the prefetch count on `channel`.
    async fn qos(&self, broker: &AmqpBroker, channel: &Channel) -> Result<()> {
        let qos = BasicQosOptions {
            global: self.qos_global(),
        };
        broker
            .bounded(
                "set the prefetch count",
                channel.basic_qos(self.prefetch, qos),
            )
            .await
    }
}

impl Setup for TaskQueues {
    const WHAT: &'static str = "task consumer";
    const ACKNOWLEDGED: bool = true;

    fn queues(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().map(AmqpQueue::name)
    }

    /// Declares the queues again (a restarted broker may have lost non-durable ones) and
    /// sets the prefetch count the worker last asked for.
    async fn declare(&self, broker: &AmqpBroker, channel: &Channel) -> Result<()> {
        let max_priority = broker.options().max_priority;
        for queue in &self.queues {
            broker
                .bounded("declare a queue", queue.declare(channel, max_priority))
                .await?;
        }
        self.qos(broker, channel).await?;
        tracing::debug!(prefetch = self.prefetch, "prefetch count set");
        Ok(())
    }
}

impl AmqpConsumer {
    pub(crate) fn new(broker: AmqpBroker, queues: Vec<AmqpQueue>) -> Self {
        let queues = TaskQueues {
            queues,
            prefetch: DEFAULT_PREFETCH,
        };
        AmqpConsumer {
            subscription: Subscription::new(broker, queues),
        }
    }

    fn delivery(&self, queue: &str, delivery: lapin::message::Delivery) -> Delivery {
        let queue = queue.to_owned();
        let message = wire::raw_message(&delivery.properties, delivery.data);
        let acker = AmqpAcker {
            broker: self.subscription.broker().clone(),
            acker: Some(delivery.acker),
        };
        Delivery::new(message, queue, delivery.redelivered, Box::new(acker))
    }
}

impl Consumer for AmqpConsumer {
    /// Failed set-ups are returned: the worker reports them and asks again.
    fn next(&mut self) -> BoxFuture<'_, Result<Delivery>> {
        Box::pin(async move {
            let (queue, delivery) = self.subscription.next().await?;
            Ok(self.delivery(&queue, delivery))
        })
    }

    /// Applies to the running consumers at once, and to every set-up after a loss.
    fn set_prefetch(&mut self, count: usize) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let count = u16::try_from(count).unwrap_or(u16::MAX).max(1);
            if count == self.subscription.setup().prefetch {
                return Ok(());
            }
            self.subscription.setup_mut().prefetch = count;
            let subscription = &self.subscription;
            if let Some(channel) = subscription.channel() {
                subscription
                    .setup()
                    .qos(subscription.broker(), channel)
                    .await?;
            }
            Ok(())
        })
    }

    /// `basic.cancel` for each queue: RabbitMQ delivers nothing more, and what it already
    /// delivered stays unacknowledged on the channel, to be settled there or requeued when
    /// the channel closes.
    fn cancel(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.subscription.cancel())
    }

    /// Declares the queue as [`Broker::consume`](crate::broker::Broker::consume) does,
    /// then starts a consumer of it on the consuming channel; every set-up after a loss
    /// consumes it too.
    fn add_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self
                .subscription
                .setup()
                .queues
                .iter()
                .any(|q| q.name == queue)
            {
                return Ok(());
            }
            let declaration = self.subscription.broker().queue_declaration(queue);
            self.subscription.broker().declare(&declaration).await?;
            self.subscription.setup_mut().queues.push(declaration);
            self.subscription.consume_queue(queue).await;
            Ok(())
        })
    }

    /// `basic.cancel` for the queue's consumer; set-ups after a loss leave it out.
    fn cancel_queue<'a>(&'a mut self, queue: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.subscription
                .setup_mut()
                .queues
                .retain(|q| q.name != queue);
            self.subscription.stop_consuming(queue).await
        })
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
