//! One AMQP connection that is re-established when it is lost: after a RabbitMQ restart,
//! a forced close, or missed heartbeats. With a failover list of brokers, each connection
//! goes to the first of them that answers, and each reconnection starts with the broker
//! after the one lost, round-robin, as kombu's `Connection` does with
//! `failover_strategy='round-robin'` (`kombu/connection.py::Connection.maybe_switch_next`).
//! Every connection the transport opens goes through here, so the consumer, the
//! publisher, the mailbox and the rpc result backend all fail over alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::Mutex;

use super::AmqpOptions;
use crate::error::{Error, ErrorKind, Result};

/// A connection handle with the generation it belongs to; a new generation starts with
/// every reconnection, so users can tell a stale handle from the current one.
#[derive(Clone)]
pub(crate) struct Connected {
    pub connection: Arc<Connection>,
    pub generation: u64,
}

/// One broker of a failover list: where to connect, and the URL as logs show it.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub uri: AMQPUri,
    /// The URL without its password.
    pub shown: String,
}

impl Endpoint {
    fn address(&self) -> String {
        format!("{}:{}", self.uri.authority.host, self.uri.authority.port)
    }
}

/// Which broker of the failover list a link tries first: kombu's round-robin `cycle`,
/// which moves on to the next URL after each connection error. Atomics, so that the
/// broker connected to can be read without waiting for a connection attempt.
#[derive(Default)]
struct Rotation {
    /// The broker the next connection tries first.
    next: AtomicUsize,
    /// The broker of the live (or last) connection, plus one; 0 before the first.
    current: AtomicUsize,
}

impl Rotation {
    /// The brokers of a list of `len` in the order one connection tries them: each once,
    /// from the one after the broker last connected to.
    fn order(&self, len: usize) -> impl Iterator<Item = usize> + use<> {
        let start = self.next.load(Ordering::Relaxed);
        (0..len).map(move |step| (start + step) % len)
    }

    /// Records a connection to broker `index` of `len`: once it is lost, the next
    /// connection starts with the broker after it.
    fn connected(&self, index: usize, len: usize) {
        self.current.store(index + 1, Ordering::Relaxed);
        self.next.store((index + 1) % len, Ordering::Relaxed);
    }

    /// The broker of the live (or last) connection.
    fn current(&self) -> Option<usize> {
        self.current.load(Ordering::Relaxed).checked_sub(1)
    }
}

pub(crate) struct Link {
    /// The brokers, in failover order; one for a plain URL.
    endpoints: Vec<Endpoint>,
    rotation: Rotation,
    /// What the connection is for, shown in RabbitMQ's connection list and in logs.
    purpose: &'static str,
    connect_timeout: Duration,
    current: Mutex<Option<Connected>>,
    generations: std::sync::atomic::AtomicU64,
    /// Set by `close`: no connection is opened again.
    closed: std::sync::atomic::AtomicBool,
}

impl Link {
    pub(crate) fn new(
        endpoints: Vec<Endpoint>,
        purpose: &'static str,
        options: &AmqpOptions,
    ) -> Self {
        Link {
            endpoints,
            rotation: Rotation::default(),
            purpose,
            connect_timeout: options.connect_timeout,
            current: Mutex::new(None),
            generations: Default::default(),
            closed: Default::default(),
        }
    }

    /// The live connection, connecting first if there is none: to the first broker of
    /// the failover list that answers, starting after the one last connected to. One
    /// caller connects while the others wait for it; each attempt is bounded by the
    /// connect timeout.
    pub(crate) async fn get(&self) -> Result<Connected> {
        let mut current = self.current.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Closed, "amqp: the broker was closed"));
        }
        if let Some(connected) = current.as_ref() {
            if connected.connection.status().connected() {
                return Ok(connected.clone());
            }
            tracing::warn!(purpose = self.purpose, state = ?connected.connection.status().state(), "AMQP connection lost; reconnecting");
        }
        *current = None;
        let len = self.endpoints.len();
        let mut failed = Vec::new();
        for index in self.rotation.order(len) {
            let endpoint = &self.endpoints[index];
            let connection = match self.connect(endpoint).await {
                Ok(connection) => connection,
                Err(error) => {
                    if len > 1 {
                        tracing::warn!(purpose = self.purpose, broker = %endpoint.shown, %error, "could not connect to this broker of the failover list");
                    }
                    failed.push((endpoint, error));
                    continue;
                }
            };
            self.rotation.connected(index, len);
            let generation = 1 + self
                .generations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let connected = Connected {
                connection: Arc::new(connection),
                generation,
            };
            if generation > 1 {
                tracing::info!(purpose = self.purpose, broker = %endpoint.shown, "AMQP connection re-established");
                crate::broker::reconnected(crate::broker::Transport::Amqp);
            } else if !failed.is_empty() {
                tracing::info!(purpose = self.purpose, broker = %endpoint.shown, "AMQP connected to a later broker of the failover list");
            }
            *current = Some(connected.clone());
            return Ok(connected);
        }
        Err(unreachable(failed))
    }

    /// A connection to `endpoint`, bounded by the connect timeout.
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("celerity {} {}", self.purpose, origin()).into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        tokio::time::timeout(
            self.connect_timeout,
            Connection::connect_uri(endpoint.uri.clone(), properties),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "amqp: connecting to {} timed out after {:?}",
                    endpoint.address(),
                    self.connect_timeout
                ),
            )
        })?
        .map_err(|e| {
            Error::new(
                ErrorKind::Broker,
                format!("amqp: could not connect to {}", endpoint.address()),
            )
            .with_source(e)
        })
    }

    /// The URL (without its password) of the broker of the live or last connection;
    /// `None` before the first.
    pub(crate) fn connected_to(&self) -> Option<&str> {
        let index = self.rotation.current()?;
        self.endpoints.get(index).map(|e| e.shown.as_str())
    }

    /// Forgets the connection of `generation` (an operation on it timed out, so it may
    /// be half-dead even though no error was seen yet) and closes it in the background.
    pub(crate) async fn discard(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            if let Some(stale) = current.take() {
                tokio::spawn(async move {
                    let closing = stale.connection.close(320, "stale connection");
                    let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
                });
            }
        }
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the connection, if any, for good.
    pub(crate) async fn close(&self) {
        let mut current = self.current.lock().await;
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(connected) = current.take() {
            let closing = connected.connection.close(200, "shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
        }
    }
}

/// The error of a connection that no broker accepted: the one attempt's own for a plain
/// URL, else one naming every broker tried, with the last one's cause.
fn unreachable(mut failed: Vec<(&Endpoint, Error)>) -> Error {
    let addresses: Vec<String> = failed.iter().map(|(e, _)| e.address()).collect();
    match failed.pop() {
        None => Error::new(ErrorKind::Config, "amqp: no broker URL"),
        Some((_, error)) if addresses.len() == 1 => error,
        Some((_, error)) => Error::new(
            error.kind(),
            format!(
                "amqp: could not connect to any broker of the failover list ({})",
                addresses.join(", ")
            ),
        )
        .with_source(error),
    }
}

fn origin() -> String {
    format!("{}@{}", std::process::id(), crate::host::hostname())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_round_robin_from_the_broker_after_the_one_lost() {
        let rotation = Rotation::default();
        let order = |rotation: &Rotation| rotation.order(3).collect::<Vec<_>>();
        assert_eq!(rotation.current(), None);
        assert_eq!(order(&rotation), [0, 1, 2], "the first that answers");
        rotation.connected(1, 3);
        assert_eq!(rotation.current(), Some(1));
        assert_eq!(order(&rotation), [2, 0, 1], "after losing the second");
        rotation.connected(2, 3);
        assert_eq!(order(&rotation), [0, 1, 2], "after losing the last");

        let single = Rotation::default();
        single.connected(0, 1);
        assert_eq!(
            single.order(1).collect::<Vec<_>>(),
            [0],
            "one URL: that one again"
        );
    }
}
