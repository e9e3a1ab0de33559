//! The schedulers' lease and record of runs on RabbitMQ alone, for deployments without
//! Redis.
//!
//! - **The lease is a single-active-consumer queue**, `celerity.beat.<group>.lease`
//!   (`x-single-active-consumer`): every replica consumes it, and RabbitMQ delivers to one
//!   consumer only, switching to another when that consumer's channel or connection closes.
//!   Each replica puts a token in the queue (`x-max-length: 1` keeps one waiting at most);
//!   a replica that receives one is the active consumer, and leads until its channel
//!   closes. A scheduler that dies gives the lease up at once (its connection closes); one
//!   cut off is given up when RabbitMQ closes its connection for missed heartbeats. The
//!   holder acknowledges its token and puts a new one every renewal, so that RabbitMQ's
//!   `consumer_timeout` never closes its channel.
//! - **The record of runs is one persistent message** in the durable queue
//!   `celerity.beat.<group>.runs` (JSON: schedule name → last run claimed, ms since the
//!   epoch), which only the lease holder touches. It keeps the record unacknowledged; a
//!   claim replaces it in one transaction (`tx.select`: publish the new record, acknowledge
//!   the old) on the channel of the lease consumer. A scheduler that lost the lease lost
//!   that channel, so its claim cannot commit (it is fenced), and its unacknowledged
//!   record went back to the queue for the next holder, which takes the latest run of every
//!   record it finds.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, DeliveryTag, FieldTable};
use lapin::{BasicProperties, Channel, Consumer};

use super::AmqpBroker;
use crate::beat::lease::{Acquire, Claim};
use crate::error::{Error, ErrorKind, Result};

/// The lease and the runs of one scheduler group on RabbitMQ.
pub(crate) struct AmqpLease {
    /// A broker of the lease's own: its consuming connection carries the lease consumer.
    broker: AmqpBroker,
    lease_queue: String,
    runs_queue: String,
    /// How long one call waits for the lease.
    wait: Duration,
    live: tokio::sync::Mutex<Option<Live>>,
}

/// A replica's lease consumer, and what it holds once it leads.
struct Live {
    /// Transactional; the lease consumer, the tokens and the record all use it.
    channel: Channel,
    tokens: Consumer,
    lead: Option<Lead>,
}

/// What the lease holder holds: its token, the record of runs and the record's delivery.
struct Lead {
    token: DeliveryTag,
    runs: HashMap<String, i64>,
    record: DeliveryTag,
}

impl AmqpLease {
    /// The lease of group `name` on the RabbitMQ at `url`; a call of `acquire` waits a
    /// sixth of `lease` for it.
    pub(crate) async fn open(url: &str, name: &str, lease: Duration) -> Result<Self> {
        let broker = AmqpBroker::connect(url).await?;
        Ok(AmqpLease {
            broker,
            lease_queue: format!("celerity.beat.{name}.lease"),
            runs_queue: format!("celerity.beat.{name}.runs"),
            wait: lease / 6,
            live: tokio::sync::Mutex::new(None),
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "single-active-consumer queue `{}` on {}",
            self.lease_queue,
            crate::broker::Broker::describe(&self.broker)
        )
    }

    pub(crate) async fn acquire(&self) -> Result<Acquire> {
        let mut live = self.live.lock().await;
        if !live
            .as_ref()
            .is_some_and(|l| l.channel.status().connected())
        {
            *live = Some(self.subscribe().await?);
        }
        let current = live.as_mut().expect("subscribed above");
        if current.lead.is_some() {
            return Ok(Acquire::Held);
        }
        let token = match tokio::time::timeout(self.wait, current.tokens.next()).await {
            Err(_) => return Ok(Acquire::Busy(Duration::ZERO)),
            Ok(Some(Ok(delivery))) => delivery.delivery_tag,
            Ok(Some(Err(error))) => {
                *live = None;
                return Err(super::amqp_error("receive the beat lease", error));
            }
            Ok(None) => {
                *live = None;
                return Ok(Acquire::Busy(Duration::ZERO));
            }
        };
        match self.take_record(&current.channel).await {
            Ok((runs, record)) => {
                current.lead = Some(Lead {
                    token,
                    runs,
                    record,
                });
                Ok(Acquire::Held)
            }
            Err(error) => {
                // Give the token back by closing the channel: another replica may lead.
                if let Some(failed) = live.take() {
                    let _ = failed.channel.close(200, "beat record unreadable").await;
                }
                Err(error)
            }
        }
    }

    /// A new channel consuming the lease queue, with a token put in it.
    async fn subscribe(&self) -> Result<Live> {
        let broker = &self.broker;
        let channel = broker.consuming_channel().await?;
        broker
            .bounded(
                "set the beat lease's prefetch",
                channel.basic_qos(1, BasicQosOptions::default()),
            )
            .await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let mut arguments = FieldTable::default();
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        broker
            .bounded(
                "declare the beat lease",
                channel.queue_declare(&self.lease_queue, durable, arguments),
            )
            .await?;
        broker
            .bounded(
                "declare the beat record",
                channel.queue_declare(&self.runs_queue, durable, FieldTable::default()),
            )
            .await?;
        broker
            .bounded("start a transaction", channel.tx_select())
            .await?;
        self.put_token(&channel).await?;
        broker
            .bounded("commit the beat token", channel.tx_commit())
            .await?;
        let tokens = broker
            .bounded(
                "consume the beat lease",
                channel.basic_consume(
                    &self.lease_queue,
                    "",
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        Ok(Live {
            channel,
            tokens,
            lead: None,
        })
    }

    async fn put_token(&self, channel: &Channel) -> Result<()> {
        self.broker
            .bounded(
                "put a beat token",
                channel.basic_publish(
                    "",
                    &self.lease_queue,
                    BasicPublishOptions::default(),
                    b"{}",
                    BasicProperties::default().with_delivery_mode(2),
                ),
            )
            .await
            .map(drop)
    }

    /// Collects every record of runs in the queue (one, unless a holder died between
    /// publishing a new one and acknowledging the old), and keeps one with the latest run
    /// of each schedule: returns the runs and the kept record's delivery.
    async fn take_record(&self, channel: &Channel) -> Result<(HashMap<String, i64>, DeliveryTag)> {
        let mut runs: HashMap<String, i64> = HashMap::new();
        let mut tags = Vec::new();
        while let Some(message) = self
            .broker
            .bounded(
                "read the beat record",
                channel.basic_get(&self.runs_queue, BasicGetOptions { no_ack: false }),
            )
            .await?
        {
            tags.push(message.delivery.delivery_tag);
            let record: HashMap<String, i64> =
                serde_json::from_slice(&message.delivery.data).unwrap_or_default();
            for (schedule, run) in record {
                let last = runs.entry(schedule).or_insert(run);
                *last = (*last).max(run);
            }
        }
        let record = self.replace_record(channel, &runs, &tags).await?;
        Ok((runs, record))
    }

    /// Publishes `runs` as the record and acknowledges the messages `tags`, in one
    /// transaction; then takes the new record (unacknowledged) and returns its delivery.
    async fn replace_record(
        &self,
        channel: &Channel,
        runs: &HashMap<String, i64>,
        tags: &[DeliveryTag],
    ) -> Result<DeliveryTag> {
        let broker = &self.broker;
        let body = serde_json::to_vec(runs).map_err(|e| {
            Error::new(ErrorKind::Encode, "could not encode the beat record").with_source(e)
        })?;
        broker
            .bounded(
                "publish the beat record",
                channel.basic_publish(
                    "",
                    &self.runs_queue,
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                ),
            )
            .await?;
        for tag in tags {
            self.ack(channel, *tag).await?;
        }
        broker
            .bounded("commit the beat record", channel.tx_commit())
            .await?;
        let message = broker
            .bounded(
                "take the beat record",
                channel.basic_get(&self.runs_queue, BasicGetOptions { no_ack: false }),
            )
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Broker,
                    "amqp: the beat record was not in its queue after it was committed",
                )
            })?;
        Ok(message.delivery.delivery_tag)
    }

    async fn ack(&self, channel: &Channel, tag: DeliveryTag) -> Result<()> {
        self.broker
            .bounded(
                "acknowledge a beat message",
                channel.basic_ack(tag, BasicAckOptions::default()),
            )
            .await
    }

    /// Whether this scheduler still leads: its channel answers. Its token is replaced by a
    /// new one on the way, so that no delivery stays unacknowledged for long.
    pub(crate) async fn renew(&self) -> Result<bool> {
        let mut live = self.live.lock().await;
        let Some(current) = live.as_mut() else {
            return Ok(false);
        };
        let Some(lead) = current.lead.as_mut() else {
            return Ok(false);
        };
        let rotated = async {
            self.put_token(&current.channel).await?;
            self.ack(&current.channel, lead.token).await?;
            self.broker
                .bounded("commit the beat token", current.channel.tx_commit())
                .await
        };
        if rotated.await.is_err() {
            *live = None;
            return Ok(false);
        }
        match tokio::time::timeout(self.wait, current.tokens.next()).await {
            Ok(Some(Ok(delivery))) => {
                lead.token = delivery.delivery_tag;
                Ok(true)
            }
            _ => {
                *live = None;
                Ok(false)
            }
        }
    }

    pub(crate) async fn release(&self) {
        // Closing the channel returns the token and the record to their queues, and
        // RabbitMQ hands the lease to another consumer at once.
        if let Some(live) = self.live.lock().await.take() {
            let _ = live.channel.close(200, "beat lease released").await;
        }
    }

    pub(crate) async fn last_runs(&self) -> Result<HashMap<String, i64>> {
        let live = self.live.lock().await;
        let lead = live.as_ref().and_then(|l| l.lead.as_ref());
        Ok(lead.map(|l| l.runs.clone()).unwrap_or_default())
    }

    pub(crate) async fn claim(&self, schedule: &str, run: i64) -> Result<Claim> {
        let mut live = self.live.lock().await;
        let Some(current) = live.as_mut() else {
            return Ok(Claim::NotLeader);
        };
        let Some(lead) = current.lead.as_mut() else {
            return Ok(Claim::NotLeader);
        };
        if lead.runs.get(schedule).is_some_and(|last| *last >= run) {
            return Ok(Claim::AlreadySent);
        }
        let mut runs = lead.runs.clone();
        runs.insert(schedule.to_owned(), run);
        match self
            .replace_record(&current.channel, &runs, &[lead.record])
            .await
        {
            Ok(record) => {
                lead.runs = runs;
                lead.record = record;
                Ok(Claim::Claimed)
            }
            Err(error) => {
                // Whether the transaction committed is unknown: this scheduler lets the
                // lease go (its record returns to the queue), and the next holder reads
                // what was committed.
                tracing::warn!(%error, "beat: could not record a run on RabbitMQ; giving the lease up");
                if let Some(lost) = live.take() {
                    let _ = lost.channel.close(200, "beat lease given up").await;
                }
                Ok(Claim::NotLeader)
            }
        }
    }
}
