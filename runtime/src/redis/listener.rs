//! One pub/sub connection per backend for everyone waiting on results, like Celery's
//! `ResultConsumer` (`celery/backends/redis.py`): a waiter subscribes to its result's
//! channel on the shared connection instead of opening a connection of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::connection::RedisConnection;
use crate::error::Result;

/// The shared subscription and who waits on which channel.
#[derive(Clone)]
pub(crate) struct ResultListener {
    inner: Arc<Inner>,
}

struct Inner {
    connection: RedisConnection,
    /// Serialises connecting, so concurrent first waiters share one connection.
    connecting: tokio::sync::Mutex<()>,
    /// Subscription changes for the live connection, applied in the order they were
    /// made; `None` before the first waiter and after a loss.
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    /// Per channel, its waiters.
    waiters: Mutex<HashMap<String, Vec<Waiter>>>,
    next_id: AtomicU64,
}

/// A waiter's id and where its channel's messages go.
type Waiter = (u64, mpsc::UnboundedSender<Vec<u8>>);

enum Command {
    /// Subscribe, then say so.
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

/// A waiter's registration on a channel; unsubscribes when the channel's last one goes.
pub(crate) struct Registration {
    inner: Arc<Inner>,
    channel: String,
    id: u64,
    /// The channel's messages. `recv` returning `None` means the connection was lost and
    /// a message may have been missed: read the key again and register anew.
    pub(crate) messages: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl ResultListener {
    pub(crate) fn new(connection: RedisConnection) -> Self {
        ResultListener {
            inner: Arc::new(Inner {
                connection,
                connecting: tokio::sync::Mutex::new(()),
                commands: Mutex::new(None),
                waiters: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Registers for `channel`'s messages and subscribes to it. Once this returns, every
    /// message published to the channel reaches the registration (or it is closed).
    pub(crate) async fn register(&self, channel: &str) -> Result<Registration> {
        let commands = self.commands().await?;
        let (sender, messages) = mpsc::unbounded_channel();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut waiters = self.inner.waiters.lock().expect("waiters lock");
            let list = waiters.entry(channel.to_owned()).or_default();
            list.push((id, sender));
            list.len() == 1
        };
        let registration = Registration {
            inner: self.inner.clone(),
            channel: channel.to_owned(),
            id,
            messages,
        };
        if first {
            let (done, subscribed) = oneshot::channel();
            if commands
                .send(Command::Subscribe(channel.to_owned(), done))
                .is_ok()
            {
                // An error means the connection was lost: the registration is closed
                // too, and its waiter reads the key again.
                let _ = subscribed.await;
            }
        }
        Ok(registration)
    }

    /// The live connection's command queue, connecting and starting its tasks if there
    /// is none.
    async fn commands(&self) -> Result<mpsc::UnboundedSender<Command>> {
        if let Some(commands) = self.inner.commands.lock().expect("commands lock").clone() {
            return Ok(commands);
        }
        let _connecting = self.inner.connecting.lock().await;
        if let Some(commands) = self.inner.commands.lock().expect("commands lock").clone() {
            return Ok(commands);
        }
        let pubsub = self
            .inner
            .connection
            .subscribe("subscribe for results", &[])
            .await?;
        let (mut sink, mut stream) = pubsub.split();
        let (commands, mut queue) = mpsc::unbounded_channel();
        *self.inner.commands.lock().expect("commands lock") = Some(commands.clone());
        tokio::spawn(async move {
            while let Some(command) = queue.recv().await {
                let outcome = match command {
                    Command::Subscribe(channel, done) => {
                        let outcome = sink.subscribe(&channel).await;
                        let _ = done.send(());
                        outcome
                    }
                    Command::Unsubscribe(channel) => sink.unsubscribe(&channel).await,
                };
                if let Err(error) = outcome {
                    tracing::warn!(%error, "could not change the result subscription");
                }
            }
        });
        let inner = self.inner.clone();
        tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let channel = message.get_channel_name();
                let waiters = inner.waiters.lock().expect("waiters lock");
                if let Some(list) = waiters.get(channel) {
                    let payload = message.get_payload_bytes();
                    for (_, waiter) in list {
                        let _ = waiter.send(payload.to_vec());
                    }
                }
            }
            // Lost: forget the connection (ending its command task) and close every
            // registration, so each waiter reads its key again on a new connection.
            tracing::warn!("result subscription lost; waiters subscribe again");
            *inner.commands.lock().expect("commands lock") = None;
            inner.waiters.lock().expect("waiters lock").clear();
        });
        Ok(commands)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let last = {
            let mut waiters = self.inner.waiters.lock().expect("waiters lock");
            let Some(list) = waiters.get_mut(&self.channel) else {
                return;
            };
            list.retain(|(id, _)| *id != self.id);
            let last = list.is_empty();
            if last {
                waiters.remove(&self.channel);
            }
            last
        };
        if last && let Some(commands) = self.inner.commands.lock().expect("commands lock").as_ref()
        {
            let _ = commands.send(Command::Unsubscribe(std::mem::take(&mut self.channel)));
        }
    }
}
