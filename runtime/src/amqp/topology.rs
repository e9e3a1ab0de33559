//! The exchanges, queues and bindings Celery declares, so that Python and Rust declare
//! equivalent entities: RabbitMQ refuses a redeclaration that differs in any flag or
//! argument with `406 PRECONDITION_FAILED`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};
use serde_json::{Map, Value};

use super::wire;

/// The type of a queue's exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    /// Routes by exact routing key (Celery's default).
    Direct,
    /// Routes by routing-key pattern.
    Topic,
    /// Routes to every bound queue.
    Fanout,
}

impl ExchangeType {
    fn kind(self) -> ExchangeKind {
        match self {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Fanout => ExchangeKind::Fanout,
        }
    }
}

/// How a task queue is declared: Celery's `kombu.Queue` with its exchange.
///
/// [`AmqpQueue::new`] gives what Celery declares for a queue it was not told about
/// (`celery/app/amqp.py::Queues.new_missing`, also the default `celery` queue): a durable
/// queue, not exclusive, not auto-deleted, bound to a durable direct exchange of the same
/// name with the queue name as routing key.
#[derive(Debug, Clone, PartialEq)]
pub struct AmqpQueue {
    pub(crate) name: String,
    pub(crate) exchange: String,
    pub(crate) exchange_type: ExchangeType,
    pub(crate) routing_key: String,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) exclusive: bool,
    pub(crate) max_priority: Option<u8>,
    pub(crate) arguments: Map<String, Value>,
}

impl AmqpQueue {
    /// Celery's declaration of queue `name`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        AmqpQueue {
            exchange: name.clone(),
            exchange_type: ExchangeType::Direct,
            routing_key: name.clone(),
            name,
            durable: true,
            auto_delete: false,
            exclusive: false,
            max_priority: None,
            arguments: Map::new(),
        }
    }

    /// Binds the queue to `exchange` of type `kind` instead of its own direct exchange.
    pub fn exchange(mut self, exchange: impl Into<String>, kind: ExchangeType) -> Self {
        self.exchange = exchange.into();
        self.exchange_type = kind;
        self
    }

    /// The binding key (default: the queue name).
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = key.into();
        self
    }

    /// Makes it a priority queue (`x-max-priority`, Celery's `task_queue_max_priority` or
    /// `Queue(max_priority=…)`): RabbitMQ delivers higher priorities first.
    pub fn max_priority(mut self, max: u8) -> Self {
        self.max_priority = Some(max);
        self
    }

    /// Whether the queue survives a broker restart (default true).
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Whether the broker deletes the queue when its last consumer goes (default false).
    pub fn auto_delete(mut self, auto_delete: bool) -> Self {
        self.auto_delete = auto_delete;
        self
    }

    /// Adds a queue argument, e.g. `x-dead-letter-exchange` or `x-queue-type`, exactly as
    /// `Queue(queue_arguments={…})` does.
    pub fn argument(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.arguments.insert(key.into(), value.into());
        self
    }

    /// Dead-letters rejected and expired messages to `exchange`
    /// (`x-dead-letter-exchange`).
    pub fn dead_letter_exchange(self, exchange: impl Into<String>) -> Self {
        self.argument("x-dead-letter-exchange", exchange.into())
    }

    /// A quorum queue (`x-queue-type: quorum`, Celery's `task_default_queue_type`).
    pub fn quorum(self) -> Self {
        self.argument("x-queue-type", "quorum")
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a quorum queue, which supports no global QoS
    /// (`celery/worker/consumer/tasks.py::Tasks.qos_global`).
    pub(crate) fn is_quorum(&self) -> bool {
        self.arguments.get("x-queue-type").and_then(Value::as_str) == Some("quorum")
    }

    /// The declaration as `inspect active_queues` reports it, with `default_max_priority`
    /// (the broker's) where the queue sets none.
    pub(crate) fn info(&self, default_max_priority: Option<u8>) -> crate::broker::QueueInfo {
        let max_priority = self.max_priority.or(default_max_priority);
        let mut arguments = self.arguments.clone();
        if let Some(max) = max_priority {
            arguments
                .entry("x-max-priority")
                .or_insert_with(|| Value::from(max));
        }
        let mut info = crate::broker::QueueInfo::new(self.name.clone());
        info.exchange = self.exchange.clone();
        info.exchange_type = match self.exchange_type {
            ExchangeType::Direct => "direct",
            ExchangeType::Topic => "topic",
            ExchangeType::Fanout => "fanout",
        };
        info.routing_key = self.routing_key.clone();
        info.durable = self.durable;
        info.auto_delete = self.auto_delete;
        info.exclusive = self.exclusive;
        info.max_priority = max_priority;
        info.arguments = arguments;
        info
    }

    /// Where a message for this queue is published. Celery sends to the default exchange
    /// with the queue name as routing key when the exchange is direct, and through the
    /// exchange otherwise (`AMQP._create_task_sender.send_task_message`).
    pub(crate) fn route(&self) -> (&str, &str) {
        if self.exchange_type == ExchangeType::Direct || self.exchange.is_empty() {
            ("", &self.name)
        } else {
            (&self.exchange, &self.routing_key)
        }
    }

    /// The queue's arguments as kombu sends them: its own, then `x-max-priority`
    /// (`Queue.queue_arguments` merged with `max_priority`).
    fn queue_arguments(&self, default_max_priority: Option<u8>) -> FieldTable {
        let mut arguments = self.arguments.clone();
        if let Some(max) = self.max_priority.or(default_max_priority) {
            arguments
                .entry("x-max-priority")
                .or_insert_with(|| Value::from(max));
        }
        wire::table(&arguments)
    }

    /// Declares the exchange, the queue and their binding (`kombu/entity.py::Queue.declare`).
    /// The default exchange (`""`) is neither declared nor bound.
    pub(crate) async fn declare(
        &self,
        channel: &Channel,
        default_max_priority: Option<u8>,
    ) -> lapin::Result<()> {
        if !self.exchange.is_empty() {
            declare_exchange(channel, &self.exchange, self.exchange_type, true).await?;
        }
        let options = QueueDeclareOptions {
            durable: self.durable,
            auto_delete: self.auto_delete,
            exclusive: self.exclusive,
            ..Default::default()
        };
        channel
            .queue_declare(
                &self.name,
                options,
                self.queue_arguments(default_max_priority),
            )
            .await?;
        if !self.exchange.is_empty() {
            channel
                .queue_bind(
                    &self.name,
                    &self.exchange,
                    &self.routing_key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Declares an exchange as kombu does: not auto-deleted, no arguments.
pub(crate) async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeType,
    durable: bool,
) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable,
        ..Default::default()
    };
    channel
        .exchange_declare(name, kind.kind(), options, FieldTable::default())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;

    #[test]
    fn a_missing_queue_is_declared_as_celery_declares_it() {
        let queue = AmqpQueue::new("celery");
        assert_eq!(
            (queue.exchange.as_str(), queue.routing_key.as_str()),
            ("celery", "celery")
        );
        assert!(queue.durable && !queue.auto_delete && !queue.exclusive);
        assert!(queue.queue_arguments(None).inner().is_empty());
        assert_eq!(
            queue.route(),
            ("", "celery"),
            "published via the default exchange"
        );
    }

    #[test]
    fn priority_and_extra_arguments_are_typed_like_pythons() {
        let queue = AmqpQueue::new("q").dead_letter_exchange("dlx");
        let arguments = queue.queue_arguments(Some(10));
        assert_eq!(
            arguments.inner().get("x-max-priority"),
            Some(&AMQPValue::LongInt(10))
        );
        assert_eq!(
            arguments.inner().get("x-dead-letter-exchange"),
            Some(&AMQPValue::LongString("dlx".into()))
        );
        let own = AmqpQueue::new("q")
            .max_priority(5)
            .queue_arguments(Some(10));
        assert_eq!(
            own.inner().get("x-max-priority"),
            Some(&AMQPValue::LongInt(5))
        );
    }

    #[test]
    fn a_topic_queue_is_published_through_its_exchange() {
        let queue = AmqpQueue::new("emails")
            .exchange("mail", ExchangeType::Topic)
            .routing_key("mail.send");
        assert_eq!(queue.route(), ("mail", "mail.send"));
        assert!(AmqpQueue::new("q").quorum().is_quorum());
    }
}
