//! Celery's mailbox (`kombu/pidbox.py`) on AMQP: commands are published to the fanout
//! exchange `celery.pidbox`, and each node reads them from its own exclusive queue
//! `<node>.celery.pidbox` bound to it; answers go to the direct exchange
//! `reply.celery.pidbox` with the client's id as routing key. Python's
//! `app.control.revoke(id)` and `celery inspect ping` reach Rust workers this way, and
//! `AsyncResult::revoke` reaches Python workers.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use lapin::Channel;
use lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::AMQPSoftError;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

use super::subscription::{Setup, Subscription};
use super::topology::{ExchangeType, declare_exchange};
use super::{AmqpBroker, Declare, Route, is_refusal, wire};
use crate::broker::{Control, ControlStream};
use crate::error::Result;
use crate::pidbox::{self, Mailbox, MailboxCommand, ReplyTo, task_ids};
use crate::protocol::RawMessage;

/// `control_queue_ttl`: commands older than this are dropped from a node's queue.
const QUEUE_TTL_MS: i32 = 300_000;
/// `control_queue_expires`: the broker deletes a dead node's queue after this.
const QUEUE_EXPIRES_MS: i32 = 10_000;

/// Tells apart the broadcast listeners of several workers in one process.
static LISTENERS: AtomicU64 = AtomicU64::new(0);

fn exchange_name(broker: &AmqpBroker) -> String {
    format!("{}.pidbox", broker.options().control_exchange)
}

/// Publishes `message` (built by [`pidbox`]) through `route`.
async fn publish(broker: &AmqpBroker, route: Route<'_>, message: &RawMessage) -> Result<()> {
    let properties = wire::basic_properties(message);
    broker
        .publish_confirmed(route, properties, &message.body)
        .await
}

/// Publishes `command` as `Mailbox._broadcast` does without a reply: to the fanout
/// exchange, which is declared first (non-durable, as `Mailbox._get_exchange`).
pub(super) async fn broadcast(broker: &AmqpBroker, command: Control) -> Result<()> {
    let Control::Revoke { task_ids } = command;
    let message = pidbox::command_message(&MailboxCommand::revoke(&task_ids));
    let exchange = exchange_name(broker);
    let route = Route {
        exchange: &exchange,
        routing_key: "",
        declare: Declare::TransientExchange(&exchange, ExchangeType::Fanout),
    };
    publish(broker, route, &message).await
}

/// A node's queue `<node>.celery.pidbox`, bound to the mailbox exchange.
struct NodeQueue {
    queue: String,
    exchange: String,
}

impl Setup for NodeQueue {
    const WHAT: &'static str = "control mailbox";
    const ACKNOWLEDGED: bool = false;

    fn queues(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.queue.as_str())
    }

    /// Declares the exchange and the queue as `Mailbox.get_queue` does (exclusive,
    /// auto-deleted, with the control TTLs) and binds them.
    async fn declare(&self, broker: &AmqpBroker, channel: &Channel) -> Result<()> {
        broker
            .bounded(
                "declare the control exchange",
                declare_exchange(channel, &self.exchange, ExchangeType::Fanout, false),
            )
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(QUEUE_TTL_MS));
        arguments.insert("x-expires".into(), AMQPValue::LongInt(QUEUE_EXPIRES_MS));
        let options = QueueDeclareOptions {
            durable: false,
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        broker
            .bounded(
                "declare the control queue",
                channel.queue_declare(&self.queue, options, arguments),
            )
            .await?;
        broker
            .bounded(
                "bind the control queue",
                channel.queue_bind(
                    &self.queue,
                    &self.exchange,
                    "",
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        Ok(())
    }
}

/// The commands sent to node `node`, subscribed before this returns.
async fn open(broker: AmqpBroker, node: &str) -> Result<Subscription<NodeQueue>> {
    let queue = NodeQueue {
        queue: format!("{node}.{}.pidbox", broker.options().control_exchange),
        exchange: exchange_name(&broker),
    };
    Subscription::open(broker, queue).await
}

/// The next command on a node's queue; `None` once the broker is closed.
async fn next_command(commands: &mut Subscription<NodeQueue>) -> Option<MailboxCommand> {
    loop {
        let (_, delivery) = commands.next_retrying().await?;
        let message = wire::raw_message(&delivery.properties, delivery.data);
        if let Some(command) = pidbox::read_command(&message) {
            return Some(command);
        }
    }
}

/// The revokes broadcast to workers, read from a queue of this listener's own.
pub(super) struct PidboxStream {
    node: String,
    commands: Subscription<NodeQueue>,
}

impl PidboxStream {
    pub(crate) async fn open(broker: AmqpBroker) -> Result<Self> {
        let node = format!(
            "celerity-{}-{}@{}",
            std::process::id(),
            LISTENERS.fetch_add(1, Ordering::Relaxed),
            crate::host::hostname()
        );
        let commands = open(broker, &node).await?;
        Ok(PidboxStream { node, commands })
    }
}

impl ControlStream for PidboxStream {
    fn next(&mut self) -> BoxFuture<'_, Option<Control>> {
        Box::pin(async move {
            loop {
                let command = next_command(&mut self.commands).await?;
                if command.method == "revoke" && command.is_for(&self.node) {
                    let task_ids = task_ids(command.arguments.get("task_id"));
                    return Some(Control::Revoke { task_ids });
                }
            }
        })
    }
}

/// A worker's mailbox: the commands sent to node `<node>` and the way back to the client.
pub(super) struct AmqpMailbox {
    commands: Subscription<NodeQueue>,
}

impl AmqpMailbox {
    /// `None` when another connection holds this node's exclusive queue: a worker of the
    /// same name is running (Celery's workers then refuse the mailbox too).
    pub(crate) async fn open(broker: AmqpBroker, node: &str) -> Result<Option<Self>> {
        match open(broker, node).await {
            Ok(commands) => Ok(Some(AmqpMailbox { commands })),
            Err(error) if is_refusal(&error, AMQPSoftError::RESOURCELOCKED) => {
                tracing::warn!(
                    node,
                    "a node of this name already uses its mailbox; this worker will not answer remote control (give it a unique name)"
                );
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

impl Mailbox for AmqpMailbox {
    fn next(&mut self) -> BoxFuture<'_, Option<MailboxCommand>> {
        Box::pin(next_command(&mut self.commands))
    }

    /// Publishes the answer as `Mailbox._publish_reply` does: to the reply exchange
    /// (direct, non-durable, declared first).
    fn reply<'a>(
        &'a mut self,
        to: &'a ReplyTo,
        ticket: &'a str,
        answer: Value,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let message = pidbox::reply_message(ticket, &answer);
            let route = Route {
                exchange: &to.exchange,
                routing_key: &to.routing_key,
                declare: Declare::TransientExchange(&to.exchange, ExchangeType::Direct),
            };
            publish(self.commands.broker(), route, &message).await
        })
    }
}
