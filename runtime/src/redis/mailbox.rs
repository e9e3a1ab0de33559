//! Celery's mailbox on Redis (`kombu/transport/redis.py`). The mailbox exchange is a
//! fanout exchange, which kombu's Redis transport turns into pub/sub: commands are
//! published in kombu's envelope on `/<db>.celery.pidbox` (`Channel._put_fanout`). The
//! reply exchange is a direct exchange: an answer is pushed onto every list bound to it
//! with the request's routing key, found in `_kombu.binding.reply.celery.pidbox`
//! (`Channel._lookup`), where the client waits with `BRPOP`.

use futures::future::BoxFuture;
use serde_json::Value;

use super::connection::{RedisConnection, Subscription};
use super::kombu::{self, DeliveryInfo, PRIORITY_SEPARATOR};
use crate::error::Result;
use crate::pidbox::{self, EXCHANGE, Mailbox, MailboxCommand, ReplyTo};
use crate::protocol::RawMessage;

/// The pub/sub channel of the mailbox exchange in database `db`
/// (`keyprefix_fanout + exchange`).
pub(crate) fn channel(db: i64) -> String {
    format!("/{db}.{EXCHANGE}")
}

/// A mailbox `message` (built by [`pidbox`]) in kombu's envelope, routed through
/// `exchange` with `routing_key`.
fn envelope(message: &RawMessage, exchange: &str, routing_key: &str) -> Vec<u8> {
    let info = DeliveryInfo {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
    };
    kombu::wrap(message, &info, &uuid::Uuid::new_v4().to_string())
}

/// A command `body` (see [`MailboxCommand::cast`]) as `Mailbox._publish` sends it on
/// Redis, to be `PUBLISH`ed on [`channel`].
pub(crate) fn broadcast_envelope(body: &Value) -> Vec<u8> {
    envelope(&pidbox::command_message(body), EXCHANGE, "")
}

/// A worker's mailbox on Redis.
pub(crate) struct RedisMailbox {
    connection: RedisConnection,
    commands: Subscription,
}

impl RedisMailbox {
    /// Subscribes to the mailbox channel of the connection's database.
    pub(crate) async fn open(connection: RedisConnection) -> Result<Self> {
        let commands =
            Subscription::open(connection.clone(), vec![channel(connection.db())]).await?;
        Ok(RedisMailbox {
            connection,
            commands,
        })
    }

    /// The lists bound to the direct exchange `exchange` with `routing_key`: members of
    /// `_kombu.binding.<exchange>` are `routing_key␆␖pattern␆␖queue`.
    async fn bound_queues(&self, exchange: &str, routing_key: &str) -> Result<Vec<String>> {
        let key = format!("_kombu.binding.{exchange}");
        let members: Vec<String> = self
            .connection
            .run("read the reply bindings", |mut c| {
                let mut command = redis::cmd("SMEMBERS");
                command.arg(&key);
                async move { command.query_async(&mut c).await }
            })
            .await?;
        Ok(members
            .iter()
            .filter_map(|member| {
                let mut parts = member.splitn(3, PRIORITY_SEPARATOR);
                let key = parts.next()?;
                let _pattern = parts.next()?;
                let queue = parts.next()?;
                (key == routing_key).then(|| queue.to_owned())
            })
            .collect())
    }
}

impl Mailbox for RedisMailbox {
    fn next(&mut self) -> BoxFuture<'_, Option<MailboxCommand>> {
        Box::pin(async move {
            loop {
                let payload = self.commands.next().await;
                let message = match kombu::unwrap(&payload) {
                    Ok(unwrapped) => unwrapped.message,
                    Err(error) => {
                        tracing::warn!(%error, "ignoring a control message that is not a kombu envelope");
                        continue;
                    }
                };
                if let Some(command) = pidbox::read_command(&message) {
                    return Some(command);
                }
            }
        })
    }

    fn reply<'a>(
        &'a mut self,
        to: &'a ReplyTo,
        ticket: &'a str,
        answer: Value,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let queues = self.bound_queues(&to.exchange, &to.routing_key).await?;
            if queues.is_empty() {
                // The client stopped waiting and unbound its queue; kombu drops the answer
                // too (`Mailbox._publish_reply` ignores `InconsistencyError`).
                tracing::debug!(routing_key = %to.routing_key, "no one waits for this control answer");
                return Ok(());
            }
            let message = pidbox::reply_message(ticket, &answer);
            let payload = envelope(&message, &to.exchange, &to.routing_key);
            let mut pipeline = redis::pipe();
            for queue in &queues {
                pipeline.cmd("LPUSH").arg(queue).arg(&payload).ignore();
            }
            self.connection
                .run_pipeline("answer a control command", &pipeline)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_travel_in_kombus_envelope() {
        let body = MailboxCommand::cast("revoke", serde_json::json!({"task_id": ["a"]}));
        let unwrapped = kombu::unwrap(&broadcast_envelope(&body)).unwrap();
        assert_eq!(
            unwrapped.delivery_info,
            DeliveryInfo {
                exchange: "celery.pidbox".into(),
                routing_key: String::new()
            }
        );
        assert_eq!(unwrapped.message.headers["expires"], 0);
        assert!(unwrapped.message.headers["clock"].as_u64().is_some());
        let command = MailboxCommand::from_json(&unwrapped.message.body).unwrap();
        assert_eq!(command.method, "revoke");
        assert_eq!(channel(15), "/15.celery.pidbox");
    }
}
