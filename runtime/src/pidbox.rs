//! Celery's remote-control mailbox (`kombu/pidbox.py`), the channel `celery inspect` and
//! `celery control` talk to workers through, independent of the transport.
//!
//! A client broadcasts a command to every worker's mailbox:
//!
//! ```json
//! {"method": "ping", "arguments": {}, "destination": null, "pattern": null, "matcher": null,
//!  "ticket": "16179d10-…", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "11ea04e9-…"}}
//! ```
//!
//! Each worker the command is for (`Node.handle_message`) runs it and, when it carries
//! `reply_to`, answers `{"<node name>": <answer>}` to that exchange and routing key with
//! the headers `{"ticket", "clock"}` (`Mailbox._publish_reply`), which is how the client
//! matches answers to its request.
//!
//! The messages themselves are built here, once: each transport only puts them on its
//! wire (an AMQP publish, a kombu envelope on Redis).

use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use crate::error::Result;
#[cfg(any(feature = "redis", feature = "amqp"))]
use crate::protocol::{Properties, RawMessage, to_python_json};

/// The mailbox exchange: `<control_exchange>.pidbox` with Celery's default `celery`.
#[cfg(feature = "redis")]
pub(crate) const EXCHANGE: &str = "celery.pidbox";

/// The exchange replies go to (`Mailbox.reply_exchange_fmt`).
pub(crate) const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

/// Where a command's answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The exchange, `reply.celery.pidbox`.
    pub exchange: String,
    /// The client's id (`Mailbox.oid`), which names its reply queue.
    pub routing_key: String,
}

/// A command read from a worker's mailbox.
#[derive(Debug, Clone, PartialEq)]
pub struct MailboxCommand {
    /// The command, e.g. `ping`, `revoke`, `hello`.
    pub method: String,
    /// Its keyword arguments.
    pub arguments: Map<String, Value>,
    /// The node names it is for; `None` for every node.
    pub destination: Option<Vec<String>>,
    /// A node name pattern it is for, with `matcher`.
    pub pattern: Option<String>,
    /// How `pattern` matches: `glob` (the default) or `pcre`.
    pub matcher: Option<String>,
    /// Where to answer; `None` when no answer is wanted.
    pub reply_to: Option<ReplyTo>,
    /// Identifies the request in the answer's headers.
    pub ticket: Option<String>,
}

impl MailboxCommand {
    /// Reads a command body as `Mailbox._publish` writes it; `None` if it is not one.
    pub fn from_json(body: &[u8]) -> Option<MailboxCommand> {
        let Value::Object(mut body) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        let text = |value: Option<Value>| match value {
            Some(Value::String(text)) => Some(text),
            _ => None,
        };
        let method = text(body.remove("method"))?;
        let arguments = match body.remove("arguments") {
            Some(Value::Object(arguments)) => arguments,
            _ => Map::new(),
        };
        let destination = match body.remove("destination") {
            Some(Value::Array(names)) => Some(
                names
                    .into_iter()
                    .filter_map(|name| text(Some(name)))
                    .collect(),
            ),
            Some(Value::String(name)) => Some(vec![name]),
            _ => None,
        };
        let reply_to = match body.remove("reply_to") {
            Some(Value::Object(mut to)) => Some(ReplyTo {
                exchange: text(to.remove("exchange")).unwrap_or_else(|| REPLY_EXCHANGE.into()),
                routing_key: text(to.remove("routing_key"))?,
            }),
            _ => None,
        };
        Some(MailboxCommand {
            method,
            arguments,
            destination,
            pattern: text(body.remove("pattern")),
            matcher: text(body.remove("matcher")),
            reply_to,
            ticket: text(body.remove("ticket")),
        })
    }

    /// Whether worker `node` runs this command (`Node.handle_message`): it is named in a
    /// non-empty `destination`, or matches `pattern`, or the command is for every node.
    pub fn is_for(&self, node: &str) -> bool {
        match (&self.destination, &self.pattern) {
            (Some(names), _) if !names.is_empty() => names.iter().any(|name| name == node),
            (_, Some(pattern)) if self.matcher.is_some() => {
                match self.matcher.as_deref() {
                    Some("glob") => glob_match(pattern.as_bytes(), node.as_bytes()),
                    other => {
                        // kombu's `pcre` matcher is Python's `re.match`; a worker that
                        // cannot evaluate the pattern stays out rather than guessing.
                        tracing::debug!(matcher = ?other, %pattern, "ignoring a control command addressed by a pattern Celerity cannot match");
                        false
                    }
                }
            }
            _ => true,
        }
    }

    /// The body of a `revoke` broadcast, as `app.control.revoke(ids)` sends it.
    pub fn revoke(task_ids: &[String]) -> Value {
        MailboxCommand::cast(
            "revoke",
            json!({"task_id": task_ids, "terminate": false, "signal": "SIGTERM"}),
        )
    }

    /// The body of a broadcast with no reply (`Mailbox._publish` for `cast`).
    pub fn cast(method: &str, arguments: Value) -> Value {
        json!({
            "method": method,
            "arguments": arguments,
            "destination": null,
            "pattern": null,
            "matcher": null,
        })
    }
}

/// Task ids as commands carry them: one id, a list, or a set (serialised as a mapping).
pub fn task_ids(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(id)) => vec![id.clone()],
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect(),
        Some(Value::Object(ids)) => ids.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Python's `fnmatch` on node names: `*`, `?` and `[…]` (with `!` for negation).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().skip(1).position(|c| *c == b']').map(|i| i + 1) else {
                return name.first() == Some(&b'[') && glob_match(rest, &name[1..]);
            };
            let (negated, set) = match &rest[..end] {
                [b'!', set @ ..] => (true, set),
                set => (false, set),
            };
            let Some((first, tail)) = name.split_first() else {
                return false;
            };
            let mut inside = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    inside |= (set[i]..=set[i + 2]).contains(first);
                    i += 3;
                } else {
                    inside |= set[i] == *first;
                    i += 1;
                }
            }
            inside != negated && glob_match(&rest[end + 1..], tail)
        }
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// The Lamport clock a mailbox sends with commands and answers (`Mailbox.clock`, a
/// `kombu.clocks.LamportClock`), shared by the mailboxes of this process.
static CLOCK: AtomicU64 = AtomicU64::new(0);

/// Advances the clock for a message sent now, and returns its new value.
pub(crate) fn clock_forward() -> u64 {
    CLOCK.fetch_add(1, Ordering::Relaxed) + 1
}

/// The clock's value, unchanged (`LamportClock.value`, which `inspect clock` reports).
pub(crate) fn clock_value() -> u64 {
    CLOCK.load(Ordering::Relaxed)
}

/// Moves the clock past `other`, a clock value received (`LamportClock.adjust`).
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) fn clock_adjust(other: u64) {
    CLOCK.fetch_max(other, Ordering::Relaxed);
    CLOCK.fetch_add(1, Ordering::Relaxed);
}

/// A command `body` (see [`MailboxCommand::cast`]) as `Mailbox._publish` sends it without
/// a reply: persistent, with the `clock` and an `expires` of 0 (no reply awaited).
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) fn command_message(body: &Value) -> RawMessage {
    let mut headers = Map::new();
    headers.insert("clock".into(), clock_forward().into());
    headers.insert("expires".into(), 0.into());
    message(body, headers, 2)
}

/// An `answer` to the request `ticket` as `Mailbox._publish_reply` sends it: transient,
/// with the `ticket` and the `clock`.
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) fn reply_message(ticket: &str, answer: &Value) -> RawMessage {
    let mut headers = Map::new();
    headers.insert("ticket".into(), ticket.into());
    headers.insert("clock".into(), clock_forward().into());
    message(answer, headers, 1)
}

/// A mailbox message as kombu's producer writes it: JSON, priority 0.
#[cfg(any(feature = "redis", feature = "amqp"))]
fn message(body: &Value, headers: Map<String, Value>, delivery_mode: u8) -> RawMessage {
    RawMessage {
        headers,
        properties: Properties {
            delivery_mode: Some(delivery_mode),
            priority: Some(0),
            ..Properties::default()
        },
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        body: to_python_json(body).unwrap_or_default(),
    }
}

/// The command a received mailbox `message` carries, after moving the clock past the
/// sender's (`Node.handle_message`); `None`, logged, when it carries none.
#[cfg(any(feature = "redis", feature = "amqp"))]
pub(crate) fn read_command(message: &RawMessage) -> Option<MailboxCommand> {
    if let Some(clock) = message.headers.get("clock").and_then(Value::as_u64) {
        clock_adjust(clock);
    }
    let command = MailboxCommand::from_json(&message.body);
    if command.is_none() {
        tracing::warn!("ignoring a control message that is not a command");
    }
    command
}

/// A worker's mailbox on one transport: the commands addressed to the workers, and the
/// way back to the client that asked.
pub trait Mailbox: Send {
    /// The next command; `None` once the mailbox is closed for good.
    fn next(&mut self) -> BoxFuture<'_, Option<MailboxCommand>>;

    /// Sends `answer` (`{"<node name>": …}`) to `to`, with the request's `ticket`.
    fn reply<'a>(
        &'a mut self,
        to: &'a ReplyTo,
        ticket: &'a str,
        answer: Value,
    ) -> BoxFuture<'a, Result<()>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `app.control.inspect(destination=['w1@vm']).ping()` as kombu 5.7 publishes it.
    const PING: &str = r#"{"method": "ping", "arguments": {}, "destination": ["w1@vm"], "pattern": null, "matcher": null, "ticket": "16179d10-89e2-4212-8da5-d435029a5dae", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "11ea04e9-c511-3878-9677-5bb7de240aaa"}}"#;

    #[test]
    fn reads_the_commands_celery_clients_send() {
        let ping = MailboxCommand::from_json(PING.as_bytes()).unwrap();
        assert_eq!(ping.method, "ping");
        assert_eq!(
            ping.ticket.as_deref(),
            Some("16179d10-89e2-4212-8da5-d435029a5dae")
        );
        assert_eq!(
            ping.reply_to,
            Some(ReplyTo {
                exchange: REPLY_EXCHANGE.into(),
                routing_key: "11ea04e9-c511-3878-9677-5bb7de240aaa".into()
            })
        );
        assert!(ping.is_for("w1@vm"));
        assert!(!ping.is_for("w2@vm"));

        let revoke = MailboxCommand::from_json(
            br#"{"method": "revoke", "arguments": {"task_id": ["a"], "terminate": false, "signal": "SIGTERM"}, "destination": null, "pattern": null, "matcher": null}"#,
        )
        .unwrap();
        assert_eq!(revoke.arguments["task_id"], json!(["a"]));
        assert_eq!((&revoke.reply_to, &revoke.ticket), (&None, &None));
        assert!(revoke.is_for("anyone@anywhere"));
        assert_eq!(MailboxCommand::from_json(b"[1]"), None);
        assert_eq!(MailboxCommand::from_json(b"{\"arguments\": {}}"), None);
    }

    #[test]
    fn patterns_address_nodes_like_fnmatch() {
        let to = |pattern: &str| MailboxCommand {
            pattern: Some(pattern.into()),
            matcher: Some("glob".into()),
            ..MailboxCommand::from_json(br#"{"method": "ping"}"#).unwrap()
        };
        assert!(to("celery@*").is_for("celery@web-1"));
        assert!(to("w?@vm").is_for("w1@vm"));
        assert!(to("w[0-3]@vm").is_for("w2@vm"));
        assert!(!to("w[!0-3]@vm").is_for("w2@vm"));
        assert!(!to("celery@*").is_for("celerity@web-1"));
        let pcre = MailboxCommand {
            matcher: Some("pcre".into()),
            ..to("celery@.*")
        };
        assert!(!pcre.is_for("celery@web-1"));
    }

    #[test]
    #[cfg(any(feature = "redis", feature = "amqp"))]
    fn replies_carry_the_ticket_and_the_clock_and_are_transient() {
        let reply = reply_message("t-1", &json!({"w1@vm": {"ok": "pong"}}));
        assert_eq!(reply.headers["ticket"], "t-1");
        assert!(reply.headers["clock"].as_u64().is_some());
        assert_eq!(reply.properties.delivery_mode, Some(1));
        assert_eq!(reply.content_type, "application/json");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body, json!({"w1@vm": {"ok": "pong"}}));

        let command = command_message(&MailboxCommand::revoke(&["a".into()]));
        assert_eq!(command.properties.delivery_mode, Some(2));
        assert_eq!(command.headers["expires"], 0);
        let clock = command.headers["clock"].as_u64().unwrap();
        assert_eq!(read_command(&command).unwrap().method, "revoke");
        assert!(
            clock_forward() > clock + 1,
            "reading moved the clock past the sender's"
        );
    }

    #[test]
    #[cfg(any(feature = "redis", feature = "amqp"))]
    fn the_clock_moves_past_what_it_hears() {
        let before = clock_forward();
        clock_adjust(before + 100);
        assert!(clock_forward() > before + 100);
    }
}
