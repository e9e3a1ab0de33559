//! One AMQP connection that is re-established when it is lost: after a RabbitMQ restart,
//! a forced close, or missed heartbeats.

use std::sync::Arc;
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

pub(crate) struct Link {
    uri: AMQPUri,
    /// What the connection is for, shown in RabbitMQ's connection list and in logs.
    purpose: &'static str,
    connect_timeout: Duration,
    current: Mutex<Option<Connected>>,
    generations: std::sync::atomic::AtomicU64,
    /// Set by `close`: no connection is opened again.
    closed: std::sync::atomic::AtomicBool,
}

impl Link {
    pub fn new(uri: AMQPUri, purpose: &'static str, options: &AmqpOptions) -> Self {
        Link {
            uri,
            purpose,
            connect_timeout: options.connect_timeout,
            current: Mutex::new(None),
            generations: Default::default(),
            closed: Default::default(),
        }
    }

    /// The live connection, connecting first if there is none. One caller connects while
    /// the others wait for it; the attempt is bounded by the connect timeout.
    pub async fn get(&self) -> Result<Connected> {
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
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("celerity {} {}", self.purpose, origin()).into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let connection = tokio::time::timeout(
            self.connect_timeout,
            Connection::connect_uri(self.uri.clone(), properties),
        )
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "amqp: connecting to {}:{} timed out after {:?}",
                    self.uri.authority.host, self.uri.authority.port, self.connect_timeout
                ),
            )
        })?
        .map_err(|e| {
            Error::new(
                ErrorKind::Broker,
                format!(
                    "amqp: could not connect to {}:{}",
                    self.uri.authority.host, self.uri.authority.port
                ),
            )
            .with_source(e)
        })?;
        let generation = 1 + self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let connected = Connected {
            connection: Arc::new(connection),
            generation,
        };
        if generation > 1 {
            tracing::info!(purpose = self.purpose, "AMQP connection re-established");
        }
        *current = Some(connected.clone());
        Ok(connected)
    }

    /// Forgets the connection of `generation` (an operation on it timed out, so it may
    /// be half-dead even though no error was seen yet) and closes it in the background.
    pub async fn discard(&self, generation: u64) {
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
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes the connection, if any, for good.
    pub async fn close(&self) {
        let mut current = self.current.lock().await;
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(connected) = current.take() {
            let closing = connected.connection.close(200, "shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
        }
    }
}

fn origin() -> String {
    format!("{}@{}", std::process::id(), crate::client::hostname())
}
