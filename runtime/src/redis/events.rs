//! Monitoring events on Redis (`kombu/transport/redis.py`). Celery makes its `celeryev`
//! exchange a fanout one on Redis (`celery/events/event.py::get_exchange`), which kombu
//! turns into pub/sub: each message of events is `PUBLISH`ed in kombu's envelope on
//! `<keyprefix_fanout><exchange>/<routing key>`, `/0.celeryev/worker.heartbeat` in
//! database 0 (`Channel._get_publish_topic`, `fanout_patterns` on by default). Monitors
//! `PSUBSCRIBE /0.celeryev/*`; an event nobody listens to is lost, as in Celery.

use super::connection::RedisConnection;
use super::kombu::{self, DeliveryInfo};
use crate::error::Result;
use crate::events::{EXCHANGE, Event, messages};

/// The pub/sub channel of events routed with `routing_key` in database `db`.
pub(crate) fn channel(db: i64, routing_key: &str) -> String {
    format!("/{db}.{EXCHANGE}/{routing_key}")
}

/// Publishes `events` in one pipeline on `connection`, each message in kombu's envelope
/// as `Channel._put_fanout` publishes it.
pub(crate) async fn publish(connection: &RedisConnection, events: &[Event]) -> Result<()> {
    let db = connection.db();
    let mut pipeline = redis::pipe();
    for (routing_key, message) in messages(events) {
        let channel = channel(db, &routing_key);
        let info = DeliveryInfo {
            exchange: EXCHANGE.to_owned(),
            routing_key,
        };
        let envelope = kombu::wrap(&message, &info, &uuid::Uuid::new_v4().to_string());
        pipeline.cmd("PUBLISH").arg(channel).arg(envelope).ignore();
    }
    connection
        .run_pipeline("publish monitoring events", &pipeline)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_to_the_channel_of_their_routing_key() {
        assert_eq!(
            channel(0, "worker.heartbeat"),
            "/0.celeryev/worker.heartbeat"
        );
        assert_eq!(channel(15, "task.succeeded"), "/15.celeryev/task.succeeded");
    }
}
