//! Publishing: one channel in confirm mode on the publishing connection, declarations
//! made once per connection, and every publish retried through reconnections.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::{BasicProperties, Channel};

use super::AmqpBroker;
use super::topology::{self, AmqpQueue, ExchangeType};
use crate::error::{Error, ErrorKind, Result};

/// Where a message is published.
pub(crate) struct Route<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// Declared first, once per connection (kombu's `declare=[…]` with `maybe_declare`).
    pub declare: Declare<'a>,
}

/// What a publish declares first.
pub(crate) enum Declare<'a> {
    /// Nothing: the default exchange routes by queue name (results, replies).
    Nothing,
    /// A task queue with its exchange and binding.
    Queue(&'a AmqpQueue),
    /// A non-durable exchange (the pidbox fanout).
    TransientExchange(&'a str, ExchangeType),
    /// A durable exchange (the events' `celeryev`).
    DurableExchange(&'a str, ExchangeType),
}

impl Declare<'_> {
    /// Declares what a route needs, once per connection.
    async fn declare(&self, publisher: &Publisher, max_priority: Option<u8>) -> lapin::Result<()> {
        match *self {
            Declare::Nothing => {}
            Declare::Queue(queue) => {
                if !publisher.has_declared(&queue.name) {
                    queue.declare(&publisher.channel, max_priority).await?;
                    publisher.remember(&queue.name);
                }
            }
            Declare::TransientExchange(name, kind) | Declare::DurableExchange(name, kind) => {
                let key = format!("exchange {name}");
                if !publisher.has_declared(&key) {
                    let durable = matches!(self, Declare::DurableExchange(..));
                    topology::declare_exchange(&publisher.channel, name, kind, durable).await?;
                    publisher.remember(&key);
                }
            }
        }
        Ok(())
    }
}

/// The publishing channel, in confirm mode, with the queues declared on its connection
/// (kombu's `maybe_declare` cache, per connection).
pub(super) struct Publisher {
    pub(super) channel: Channel,
    pub(super) generation: u64,
    declared: std::sync::Mutex<HashSet<String>>,
}

impl Publisher {
    pub(super) fn has_declared(&self, queue: &str) -> bool {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(queue)
    }

    pub(super) fn forget(&self, queue: &str) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(queue);
    }

    pub(super) fn remember(&self, queue: &str) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_owned());
    }
}

impl AmqpBroker {
    /// Publishes `body` with `properties` and waits for the broker's confirm, retrying
    /// through reconnections for up to the configured retry period.
    pub(crate) async fn publish_confirmed(
        &self,
        route: Route<'_>,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<()> {
        let message = (route.routing_key, properties, body);
        self.publish_all(route.exchange, &route.declare, &[message])
            .await
    }

    /// Publishes `messages` to `exchange`, each with its routing key, in order and
    /// pipelined: all are sent, then their confirms are awaited. After a reconnection it
    /// resumes with the first message not confirmed.
    pub(super) async fn publish_all(
        &self,
        exchange: &str,
        declare: &Declare<'_>,
        messages: &[(&str, BasicProperties, &[u8])],
    ) -> Result<()> {
        let max_priority = self.shared.options.max_priority;
        let confirmed = std::sync::atomic::AtomicUsize::new(0);
        let confirmed = &confirmed;
        let all_acked = self
            .retrying("publish a message", |publisher| async move {
                declare.declare(&publisher, max_priority).await?;
                let start = confirmed.load(std::sync::atomic::Ordering::SeqCst);
                let mut confirms = Vec::with_capacity(messages.len() - start);
                for (routing_key, properties, body) in &messages[start..] {
                    let confirm = publisher
                        .channel
                        .basic_publish(
                            exchange,
                            routing_key,
                            BasicPublishOptions::default(),
                            body,
                            properties.clone(),
                        )
                        .await?;
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    if let Confirmation::Nack(_) = confirm.await? {
                        return Ok(false);
                    }
                    confirmed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(true)
            })
            .await?;
        if all_acked {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Broker,
                "amqp: the broker refused a message (basic.nack)",
            ))
        }
    }

    /// Runs `operation` on the publishing channel, bounded by the operation timeout, and
    /// retries it after reconnecting while the retry period lasts. Refusals (a soft AMQP
    /// error such as `PRECONDITION_FAILED`) are not retried: they would fail again.
    pub(super) async fn retrying<T, F, Fut>(&self, action: &str, mut operation: F) -> Result<T>
    where
        F: FnMut(Arc<Publisher>) -> Fut,
        Fut: Future<Output = lapin::Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.shared.options.retry_for;
        let mut attempt = 0;
        loop {
            let error = match self.publisher().await {
                Ok(publisher) => match self.bounded(action, operation(publisher.clone())).await {
                    Ok(value) => return Ok(value),
                    Err(error) => {
                        self.forget_publisher(&publisher).await;
                        if error.kind() == ErrorKind::Timeout {
                            self.shared.publishing.discard(publisher.generation).await;
                        }
                        if matches!(error.kind(), ErrorKind::Config | ErrorKind::Closed) {
                            return Err(error);
                        }
                        error
                    }
                },
                Err(error) if error.kind() == ErrorKind::Closed => return Err(error),
                Err(error) => error,
            };
            attempt += 1;
            let delay = self.backoff(attempt);
            if tokio::time::Instant::now() + delay > deadline {
                return Err(error);
            }
            tracing::warn!(%error, ?delay, "amqp: {action} failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// The publishing channel, opening a connection and channel when needed.
    pub(super) async fn publisher(&self) -> Result<Arc<Publisher>> {
        let mut current = self.shared.publisher.lock().await;
        if let Some(publisher) = current.as_ref() {
            if publisher.channel.status().connected() {
                return Ok(publisher.clone());
            }
        }
        *current = None;
        let connected = self.shared.publishing.get().await?;
        let channel = self
            .bounded("open a channel", connected.connection.create_channel())
            .await?;
        self.bounded(
            "enable publisher confirms",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        let publisher = Arc::new(Publisher {
            channel,
            generation: connected.generation,
            declared: Default::default(),
        });
        let first = self.lock_declare_first().clone();
        for queue in &first {
            self.bounded("declare a queue", queue.declare(&publisher.channel, None))
                .await?;
            publisher.remember(&queue.name);
        }
        *current = Some(publisher.clone());
        Ok(publisher)
    }

    async fn forget_publisher(&self, stale: &Arc<Publisher>) {
        let mut current = self.shared.publisher.lock().await;
        if current.as_ref().is_some_and(|p| Arc::ptr_eq(p, stale)) {
            *current = None;
        }
    }
}
