//! The Redis broker against a real Redis: round trips, kombu's envelope on the wire,
//! unacknowledged messages restored after the visibility timeout, malformed envelopes.

mod support;

use std::time::Duration;

use base64::Engine;
use celerity::backend::RedisBackend;
use celerity::broker::{Broker, RedisBroker};
use celerity::{App, SendOptions};
use redis::AsyncCommands;
use serde_json::{Map, Value, json};
use support::{DOUBLE, DoubleArgs, Doubler, unique_queue};

async fn app(url: &str) -> App {
    App::new(
        RedisBroker::connect(url).await.unwrap(),
        RedisBackend::connect(url).await.unwrap(),
    )
}

fn to(queue: &str) -> SendOptions {
    SendOptions {
        queue: Some(queue.to_owned()),
        ..Default::default()
    }
}

#[tokio::test]
async fn tasks_round_trip_through_redis_with_typed_results() {
    let Some(url) = support::redis_url().await else {
        return;
    };
    let app = app(&url).await;
    let queue = unique_queue();
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.clone()])
        .concurrency(8);
    let worker = builder.start().await.unwrap();
    let mut sent = Vec::new();
    for x in 0..200 {
        sent.push(
            app.client()
                .send_task::<i64>(&DOUBLE, vec![json!(x)], Map::new(), to(&queue))
                .await
                .unwrap(),
        );
    }
    for (x, result) in sent.iter().enumerate() {
        assert_eq!(
            result.get(Duration::from_secs(10)).await.unwrap(),
            2 * x as i64
        );
    }
    let mut raw = support::raw_redis(&url).await;
    let left: i64 = raw.llen(&queue).await.unwrap();
    assert_eq!(left, 0);
    worker.shutdown().await;
}

#[tokio::test]
async fn the_envelope_on_the_wire_is_kombus() {
    let Some(url) = support::redis_url().await else {
        return;
    };
    let app = app(&url).await;
    let queue = unique_queue();
    let options = SendOptions {
        priority: Some(5),
        ..to(&queue)
    };
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(21)], Map::new(), options)
        .await
        .unwrap();
    let mut raw = support::raw_redis(&url).await;
    // Priority 5 lands in kombu's bucket 3.
    let items: Vec<String> = raw
        .lrange(format!("{queue}\x06\x163"), 0, -1)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    let envelope: Value = serde_json::from_str(&items[0]).unwrap();
    let keys: Vec<&str> = envelope
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "body",
            "content-encoding",
            "content-type",
            "headers",
            "properties"
        ]
    );
    let properties = &envelope["properties"];
    assert_eq!(
        properties["delivery_info"],
        json!({"exchange": "", "routing_key": queue})
    );
    assert_eq!(properties["body_encoding"], "base64");
    assert_eq!(properties["priority"], 5);
    assert_eq!(properties["correlation_id"], sent.id());
    assert!(uuid::Uuid::parse_str(properties["delivery_tag"].as_str().unwrap()).is_ok());
    assert_eq!(envelope["headers"]["task"], "t.double");
    let body = base64::engine::general_purpose::STANDARD
        .decode(envelope["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"[[21], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
    );
    let _: i64 = raw.del(format!("{queue}\x06\x163")).await.unwrap();
}

#[tokio::test]
async fn a_lost_consumers_messages_are_restored_after_the_visibility_timeout() {
    let Some(url) = support::redis_url().await else {
        return;
    };
    // A database of its own: restoring sweeps the shared `unacked` hash.
    let url = url
        .rsplit_once('/')
        .map_or(url.clone(), |(base, _)| format!("{base}/14"));
    // The consumer that dies keeps the default one-hour visibility timeout, so its own
    // sweep leaves the message alone; only the explicit restore below uses zero.
    let broker = RedisBroker::connect(&url).await.unwrap();
    let app = App::new(broker.clone(), RedisBackend::connect(&url).await.unwrap());
    let queue = unique_queue();
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(4)], Map::new(), to(&queue))
        .await
        .unwrap();

    let mut raw = support::raw_redis(&url).await;
    let queued: Vec<String> = raw.lrange(&queue, 0, -1).await.unwrap();
    let envelope: Value = serde_json::from_str(&queued[0]).unwrap();
    let tag = envelope["properties"]["delivery_tag"]
        .as_str()
        .unwrap()
        .to_owned();

    // A consumer takes the message and dies without acknowledging it.
    let mut consumer = broker.consume(std::slice::from_ref(&queue)).await.unwrap();
    let delivery = consumer.next().await.unwrap();
    let (_message, _queue, redelivered, acker) = delivery.into_parts();
    assert!(!redelivered);
    std::mem::forget(acker);
    drop(consumer);
    assert_eq!(raw.llen::<_, i64>(&queue).await.unwrap(), 0);
    assert!(
        raw.hexists::<_, _, bool>("unacked", &tag).await.unwrap(),
        "recorded as unacknowledged"
    );
    let indexed: Option<f64> = raw.zscore("unacked_index", &tag).await.unwrap();
    assert!(indexed.is_some(), "indexed with its fetch time");

    let restorer = broker.clone().visibility_timeout(Duration::ZERO);
    assert!(restorer.restore_visible().await.unwrap() >= 1);
    let restored: Vec<String> = raw.lrange(&queue, 0, -1).await.unwrap();
    let envelope: Value = serde_json::from_str(&restored[0]).unwrap();
    assert_eq!(
        envelope["headers"]["redelivered"], true,
        "kombu's redelivered flags"
    );
    assert_eq!(envelope["properties"]["delivery_info"]["redelivered"], true);
    assert_eq!(
        envelope["properties"]["delivery_tag"],
        tag.as_str(),
        "restored under its own tag"
    );
    assert!(!raw.hexists::<_, _, bool>("unacked", &tag).await.unwrap());

    // Another worker completes it.
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.clone()]);
    let worker = builder.start().await.unwrap();
    assert_eq!(sent.get(Duration::from_secs(10)).await.unwrap(), 8);
    worker.shutdown().await;
}

#[tokio::test]
async fn malformed_envelopes_are_dropped_and_the_worker_goes_on() {
    let Some(url) = support::redis_url().await else {
        return;
    };
    let app = app(&url).await;
    let queue = unique_queue();
    let mut raw = support::raw_redis(&url).await;
    let _: i64 = raw.lpush(&queue, "not json at all").await.unwrap();
    let _: i64 = raw
        .lpush(
            &queue,
            r#"{"body": "W10=", "properties": {"body_encoding": "base64"}}"#,
        )
        .await
        .unwrap();
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.clone()]);
    let worker = builder.start().await.unwrap();
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(5)], Map::new(), to(&queue))
        .await
        .unwrap();
    assert_eq!(sent.get(Duration::from_secs(10)).await.unwrap(), 10);
    assert_eq!(
        raw.llen::<_, i64>(&queue).await.unwrap(),
        0,
        "the malformed messages are gone"
    );
    worker.shutdown().await;
}
