//! The Redis broker against a real Redis: kombu's envelope, bindings and batch order on the
//! wire, unacknowledged messages recorded under their own tags and restored after the
//! visibility timeout, malformed envelopes, round robin between queues, fetched messages
//! returned when a consumer stops. What every transport does alike (round trips, retries,
//! revokes, graceful stops) is in `round_trip.rs`.

mod support;

use std::time::Duration;

use base64::Engine;
use celerity::backend::RedisBackend;
use celerity::broker::{Broker, RedisBroker};
use celerity::{App, SendOptions};
use redis::AsyncCommands;
use serde_json::{Value, json};
use support::{DOUBLE, to, unique_queue};

async fn app(url: &str) -> App {
    App::new(
        RedisBroker::connect(url).await.unwrap(),
        RedisBackend::connect(url).await.unwrap(),
    )
}

#[tokio::test]
async fn the_envelope_on_the_wire_is_kombus() {
    let Some(url) = support::redis_url() else {
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
        .send_task::<i64>(&DOUBLE, vec![json!(21)])
        .with_options(options)
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
    let Some(url) = support::redis_url() else {
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
        .send_task::<i64>(&DOUBLE, vec![json!(4)])
        .with_options(to(&queue))
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
    let worker = support::doubler(&app, &queue).await;
    assert_eq!(sent.get(Duration::from_secs(10)).await.unwrap(), 8);
    worker.shutdown().await;
}

#[tokio::test]
async fn malformed_envelopes_are_dropped_and_the_worker_goes_on() {
    let Some(url) = support::redis_url() else {
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
    // Tagged, so the fetch script records it as unacknowledged, but its body is not
    // base64: rejecting it must remove that record, or the sweep would restore it forever.
    let unreadable = format!("{queue}-unreadable");
    let envelope = json!({
        "body": "not base64!",
        "properties": {"body_encoding": "base64", "delivery_tag": unreadable},
    });
    let _: i64 = raw.lpush(&queue, envelope.to_string()).await.unwrap();
    let worker = support::doubler(&app, &queue).await;
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(5)])
        .with_options(to(&queue))
        .await
        .unwrap();
    assert_eq!(sent.get(Duration::from_secs(10)).await.unwrap(), 10);
    assert_eq!(
        raw.llen::<_, i64>(&queue).await.unwrap(),
        0,
        "the malformed messages are gone"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while raw
        .hexists::<_, _, bool>("unacked", &unreadable)
        .await
        .unwrap()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the unreadable message's unacked record is never removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn fetching_records_each_message_under_its_own_tag_however_the_envelope_is_written() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let app = app(&url).await;
    let queue = unique_queue();
    let mut raw = support::raw_redis(&url).await;
    app.client()
        .send_task::<i64>(&DOUBLE, vec![json!(1)])
        .with_options(to(&queue))
        .await
        .unwrap();
    let kombu: String = raw.rpop(&queue, None).await.unwrap();
    let original = serde_json::from_str::<Value>(&kombu).unwrap()["properties"]["delivery_tag"]
        .as_str()
        .unwrap()
        .to_owned();
    let retag = |tag: &str| kombu.replace(&original, tag);

    // The same message written four ways, each under a tag of its own: as kombu writes
    // it; compact, as other clients write JSON; with a custom header that is also called
    // `delivery_tag`; and with a tag holding an escaped quote.
    let plain = format!("{queue}-plain");
    let compact = format!("{queue}-compact");
    let decoy = format!("{queue}-decoy");
    let quoted = format!("{queue}-quo\"ted");
    let envelopes = [
        retag(&plain),
        serde_json::to_string(&serde_json::from_str::<Value>(&retag(&compact)).unwrap()).unwrap(),
        retag(&decoy).replacen(
            r#""headers": {"#,
            r#""headers": {"delivery_tag": "not-this-one", "#,
            1,
        ),
        retag(&quoted.replace('"', "\\\"")),
    ];
    assert!(
        envelopes[2].contains("not-this-one"),
        "the decoy header is in place"
    );
    for envelope in &envelopes {
        let _: i64 = raw.lpush(&queue, envelope).await.unwrap();
    }

    let broker = RedisBroker::connect(&url).await.unwrap();
    let mut consumer = broker.consume(std::slice::from_ref(&queue)).await.unwrap();
    let mut ackers = Vec::new();
    for _ in &envelopes {
        let (message, _, _, acker) = consumer.next().await.unwrap().into_parts();
        assert_eq!(message.headers["task"], DOUBLE.name);
        ackers.push(acker);
    }
    for tag in [&plain, &compact, &decoy, &quoted] {
        let record: Option<String> = raw.hget("unacked", tag).await.unwrap();
        let record: Value =
            serde_json::from_str(&record.unwrap_or_else(|| panic!("no record for {tag}"))).unwrap();
        assert_eq!(record[0]["properties"]["delivery_tag"], tag.as_str());
        assert_eq!(record[1], "", "exchange");
        assert_eq!(record[2], queue.as_str(), "routing key");
        let indexed: Option<f64> = raw.zscore("unacked_index", tag).await.unwrap();
        assert!(indexed.is_some(), "{tag} indexed");
    }
    for acker in ackers {
        acker.ack().await.unwrap();
    }
    for tag in [&plain, &compact, &decoy, &quoted] {
        assert!(!raw.hexists::<_, _, bool>("unacked", tag).await.unwrap());
    }
}

#[tokio::test]
async fn a_batch_is_pushed_oldest_first() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let app = app(&url).await;
    let queue = unique_queue();
    let client = app.client();
    let calls = (0..500).map(|x| {
        celerity::TaskCall::<_, i64>::new(&client, &DOUBLE, support::DoubleCall { x }).queue(&queue)
    });
    let sent = client.send_batch(calls).await.unwrap();
    assert_eq!(sent.len(), 500);

    // Oldest first: the consumer pops from the tail, so the tail holds the first call.
    let mut raw = support::raw_redis(&url).await;
    assert_eq!(raw.llen::<_, i64>(&queue).await.unwrap(), 500);
    let tail: Vec<String> = raw.lrange(&queue, -1, -1).await.unwrap();
    let envelope: Value = serde_json::from_str(&tail[0]).unwrap();
    assert_eq!(envelope["headers"]["id"], sent[0].id());
    let _: () = raw.del(&queue).await.unwrap();
}

#[tokio::test]
async fn consuming_registers_kombus_binding_so_python_producers_route_to_the_queue() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let broker = RedisBroker::connect(&url).await.unwrap();
    let queue = unique_queue();
    let _consumer = broker.consume(std::slice::from_ref(&queue)).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let member = format!("{queue}\x06\x16\x06\x16{queue}");
    let bindings: Vec<String> = raw
        .smembers(format!("_kombu.binding.{queue}"))
        .await
        .unwrap();
    assert_eq!(bindings, vec![member.clone()]);
    let permanent: Vec<String> = raw
        .smembers(format!("_kombu.binding_permanent.{queue}"))
        .await
        .unwrap();
    assert_eq!(permanent, vec![member]);
    let _: () = raw
        .del(&[
            format!("_kombu.binding.{queue}"),
            format!("_kombu.binding_permanent.{queue}"),
        ])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_busy_queue_does_not_starve_another() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let broker = RedisBroker::connect(&url).await.unwrap();
    let app = App::new(broker.clone(), RedisBackend::connect(&url).await.unwrap());
    let (busy, quiet) = (unique_queue(), unique_queue());
    for x in 0..20 {
        app.client()
            .send_task::<i64>(&DOUBLE, vec![json!(x)])
            .with_options(to(&busy))
            .await
            .unwrap();
    }
    for x in 0..2 {
        app.client()
            .send_task::<i64>(&DOUBLE, vec![json!(x)])
            .with_options(to(&quiet))
            .await
            .unwrap();
    }
    let mut consumer = broker
        .consume(&[busy.clone(), quiet.clone()])
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let delivery = consumer.next().await.unwrap();
        let (_message, queue, _redelivered, acker) = delivery.into_parts();
        acker.ack().await.unwrap();
        order.push(if queue == busy { "busy" } else { "quiet" });
    }
    assert_eq!(
        order,
        ["busy", "quiet", "busy", "quiet"],
        "kombu's round robin"
    );
    let mut raw = support::raw_redis(&url).await;
    let _: () = raw.del(&busy).await.unwrap();
}

#[tokio::test]
async fn fetched_but_unstarted_tasks_return_to_the_queue_when_the_consumer_stops() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let broker = RedisBroker::connect(&url).await.unwrap();
    let app = App::new(broker.clone(), RedisBackend::connect(&url).await.unwrap());
    let queue = unique_queue();
    for x in 0..10 {
        app.client()
            .send_task::<i64>(&DOUBLE, vec![json!(x)])
            .with_options(to(&queue))
            .await
            .unwrap();
    }
    let mut consumer = broker.consume(std::slice::from_ref(&queue)).await.unwrap();
    // A window of 40 fetches 10 at a time: one round trip takes them all.
    consumer.set_prefetch(40).await.unwrap();
    let first = consumer.next().await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    assert_eq!(
        raw.llen::<_, i64>(&queue).await.unwrap(),
        0,
        "all ten fetched"
    );
    drop(consumer);
    let mut requeued = 0;
    for _ in 0..100 {
        requeued = raw.llen::<_, i64>(&queue).await.unwrap();
        if requeued == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        requeued, 9,
        "the nine never handed out are back in the queue"
    );
    let (_message, _queue, _redelivered, acker) = first.into_parts();
    acker.ack().await.unwrap();
    let _: () = raw.del(&queue).await.unwrap();
}

#[tokio::test]
async fn a_task_held_past_the_visibility_timeout_runs_once() {
    // A server of its own: a two-second visibility timeout sweeps the whole `unacked` hash.
    let Some(server) = support::RedisServer::start().await else {
        return;
    };
    let url = server.url();
    let broker = RedisBroker::connect(&url)
        .await
        .unwrap()
        .visibility_timeout(Duration::from_secs(2));
    let app = App::new(broker, RedisBackend::connect(&url).await.unwrap());
    let queue = unique_queue();
    let worker = support::probe_worker(&app, &queue, 4, 4).await;
    let later = SendOptions {
        countdown: Some(Duration::from_secs(6)),
        ..to(&queue)
    };
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(21)])
        .with_options(later)
        .await
        .unwrap();
    // Held three times the visibility timeout, with the worker's own sweep running.
    let mut raw = support::raw_redis(&url).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let queued: i64 = raw.llen(&queue).await.unwrap();
        let unacked: i64 = raw.hlen("unacked").await.unwrap();
        assert_eq!((queued, unacked), (0, 1), "held once, never restored");
    }
    assert_eq!(sent.get(Duration::from_secs(10)).await.unwrap(), 42);
    // A second copy would have run at the same ETA; give it time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = worker.singleton::<support::Runs>().unwrap().list();
    assert_eq!(runs, [21], "ran exactly once");
    worker.shutdown().await;
}
