//! The AMQP broker against a real RabbitMQ: Celery's message and
//! declarations on the wire (compared with what Python Celery publishes), priorities,
//! `basic.qos` as the prefetch window, topic routing, dead-lettered malformed messages,
//! settling deliveries, a cancelled consumer, timeouts, a closed broker and Celery's remote
//! control. What every transport does alike (round trips, batches, retries, revokes, ETA
//! holding, graceful stops) is in `round_trip.rs`.
//!
//! Needs RabbitMQ (`CELERITY_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! skips without it unless `CELERITY_REQUIRE_BROKERS=1`. Every test uses queues of its own.

mod support;

use std::time::{Duration, Instant};

use celerity::backend::RpcBackend;
use celerity::broker::{AmqpBroker, AmqpOptions, AmqpQueue, Broker, ExchangeType};
use celerity::{App, ResultError, SendOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use support::{
    DOUBLE, Probe, RECORD, RawAmqp, RecordArgs, Runs, SLOW, TestQueue, to, unique_queue,
};

const WAIT: Duration = Duration::from_secs(20);

/// One test's share of RabbitMQ: an app on the rpc backend, a queue of its own (deleted by
/// `finish`), and a plain channel to look at it.
struct Rabbit {
    url: String,
    on: TestQueue,
    raw: RawAmqp,
}

impl std::ops::Deref for Rabbit {
    type Target = TestQueue;
    fn deref(&self) -> &TestQueue {
        &self.on
    }
}

impl Rabbit {
    /// `None` when RabbitMQ is not there. `configure` adjusts the broker's options for the
    /// test's queue.
    async fn start(configure: impl FnOnce(&str, AmqpOptions) -> AmqpOptions) -> Option<Rabbit> {
        let url = support::amqp_url()?;
        let queue = unique_queue();
        let options = configure(&queue, AmqpOptions::default());
        let broker = AmqpBroker::connect_with(&url, options).await.unwrap();
        let backend = RpcBackend::connect(&broker).await.unwrap();
        Some(Rabbit {
            raw: RawAmqp::connect(&url).await,
            on: TestQueue {
                app: App::new(broker, backend),
                queue,
            },
            url,
        })
    }

    async fn finish(self) {
        self.raw.delete(&self.queue).await;
    }
}

#[tokio::test]
async fn the_message_and_declarations_on_the_wire_are_celerys() {
    let Some(rabbit) = Rabbit::start(|_, options| options).await else {
        return;
    };
    let (queue, raw) = (&rabbit.queue, &rabbit.raw);
    let options = SendOptions {
        countdown: Some(Duration::from_secs(10)),
        expires: Some(Duration::from_secs(60)),
        priority: Some(3),
        ..Default::default()
    };
    let sent = rabbit.send::<i64>(&DOUBLE, json!([21]), options).await;
    let message = raw.get(queue).await.expect("the message is on the queue");
    let delivery = &message.delivery;
    assert_eq!(
        (delivery.exchange.as_str(), delivery.routing_key.as_str()),
        ("", queue.as_str()),
        "published to the default exchange, routed by queue name"
    );
    let properties = &delivery.properties;
    let text = |p: &Option<lapin::types::ShortString>| p.as_ref().map(|s| s.to_string());
    assert_eq!(
        text(properties.content_type()).as_deref(),
        Some("application/json")
    );
    assert_eq!(
        text(properties.content_encoding()).as_deref(),
        Some("utf-8")
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(*properties.priority(), Some(3));
    assert_eq!(
        text(properties.correlation_id()).as_deref(),
        Some(sent.id())
    );
    assert_eq!(
        text(properties.reply_to()),
        rabbit.app.backend().reply_to(),
        "the rpc reply queue"
    );
    assert_eq!(text(properties.expiration()).as_deref(), Some("60000"));
    assert!(properties.message_id().is_none() && properties.timestamp().is_none());
    let headers = properties.headers().clone().expect("headers");
    let header = |key: &str| headers.inner().get(key).cloned();
    assert_eq!(
        header("task"),
        Some(AMQPValue::LongString("t.double".into()))
    );
    assert_eq!(header("retries"), Some(AMQPValue::LongInt(0)));
    assert_eq!(
        header("group"),
        Some(AMQPValue::Void),
        "None is void, not absent"
    );
    assert_eq!(
        header("timelimit"),
        Some(AMQPValue::FieldArray(
            vec![AMQPValue::Void, AMQPValue::Void].into()
        ))
    );
    assert_eq!(
        header("stamps"),
        Some(AMQPValue::FieldTable(FieldTable::default()))
    );
    assert_eq!(header("ignore_result"), Some(AMQPValue::Boolean(false)));
    assert_eq!(
        String::from_utf8(delivery.data.clone()).unwrap(),
        r#"[[21], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
    );

    // Declared as Celery declares it: the same flags pass, other arguments are refused.
    let durable = || lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let same = raw
        .channel
        .queue_declare(queue, durable(), FieldTable::default())
        .await;
    assert!(same.is_ok(), "{same:?}");
    let other = RawAmqp::connect(&rabbit.url).await;
    let mut priority = FieldTable::default();
    priority.insert("x-max-priority".into(), AMQPValue::LongInt(10));
    let refused = other
        .channel
        .queue_declare(queue, durable(), priority)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("PRECONDITION_FAILED"),
        "{refused}"
    );
    // And bound to its direct exchange of the same name.
    raw.channel
        .basic_publish(
            queue,
            queue,
            Default::default(),
            b"via the exchange",
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let routed = raw.get(queue).await.expect("routed by the binding");
    assert_eq!(routed.delivery.data, b"via the exchange");
    rabbit.finish().await;
}

/// The headers with what legitimately differs between two sends of the same call blanked
/// out: the ids, the sender's origin and language, and the times (compared on their own).
fn comparable(headers: &FieldTable) -> Vec<(String, AMQPValue)> {
    headers
        .inner()
        .iter()
        .map(|(key, value)| match key.as_str() {
            "id" | "root_id" | "origin" | "lang" | "eta" | "expires" => {
                (key.to_string(), AMQPValue::LongString("…".into()))
            }
            _ => (key.to_string(), value.clone()),
        })
        .collect()
}

/// The time in header `key`, which must be an ISO 8601 string with an offset.
fn header_time(headers: &FieldTable, key: &str) -> chrono::DateTime<chrono::Utc> {
    let Some(AMQPValue::LongString(text)) = headers.inner().get(key) else {
        panic!("{key} is not a string: {:?}", headers.inner().get(key))
    };
    chrono::DateTime::parse_from_rfc3339(&text.to_string())
        .unwrap_or_else(|e| panic!("{key} {text} is not ISO 8601: {e}"))
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn celerity_publishes_what_celery_publishes_for_the_same_call() {
    let Some(rabbit) = Rabbit::start(|_, options| options.max_priority(10)).await else {
        return;
    };
    let Some(python) = support::python_with_celery() else {
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/capture_amqp.py");
    let call = json!({"task": "t.double", "args": [21], "kwargs": {}, "countdown": 30,
                      "expires": 120, "priority": 4, "max_priority": 10});
    let output = std::process::Command::new(&python)
        .arg(&script)
        .args([
            rabbit.url.as_str(),
            rabbit.queue.as_str(),
            &call.to_string(),
        ])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let python_sent: Value = serde_json::from_slice(&output.stdout).unwrap();

    // Python declared the queue first, as a priority queue: Celerity declares the same
    // (the send would fail with PRECONDITION_FAILED otherwise).
    let options = SendOptions {
        countdown: Some(Duration::from_secs(30)),
        expires: Some(Duration::from_secs(120)),
        priority: Some(4),
        ..Default::default()
    };
    let sent = rabbit.send::<i64>(&DOUBLE, json!([21]), options).await;

    let raw = &rabbit.raw;
    let from_python = raw
        .get(&rabbit.queue)
        .await
        .expect("Celery's message")
        .delivery;
    let from_rust = raw
        .get(&rabbit.queue)
        .await
        .expect("Celerity's message")
        .delivery;
    let (py, rs) = (&from_python.properties, &from_rust.properties);
    let py_headers = py.headers().clone().unwrap();
    let rs_headers = rs.headers().clone().unwrap();
    assert_eq!(
        py_headers.inner().get("lang"),
        Some(&AMQPValue::LongString("py".into()))
    );
    assert_eq!(
        rs_headers.inner().get("lang"),
        Some(&AMQPValue::LongString("rs".into()))
    );
    assert_eq!(
        comparable(&rs_headers),
        comparable(&py_headers),
        "headers, with their AMQP types"
    );
    for (key, ahead) in [("eta", 30), ("expires", 120)] {
        let (py_time, rs_time) = (header_time(&py_headers, key), header_time(&rs_headers, key));
        assert!(
            (rs_time - py_time).num_seconds().abs() < 10,
            "{key}: {py_time} vs {rs_time}"
        );
        let from_now = (rs_time - chrono::Utc::now()).num_seconds();
        assert!(
            (ahead - 10..=ahead).contains(&from_now),
            "{key} is {from_now}s ahead"
        );
    }
    assert_eq!(from_rust.data, from_python.data, "the body, byte for byte");
    let properties = |p: &lapin::BasicProperties, id: &str, reply_to: &str| {
        let text = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.to_string());
        assert_eq!(text(p.correlation_id()).as_deref(), Some(id));
        assert_eq!(text(p.reply_to()).as_deref(), Some(reply_to));
        let p = p
            .clone()
            .with_headers(FieldTable::default())
            .with_correlation_id("…".into())
            .with_reply_to("…".into());
        format!("{p:?}")
    };
    assert_eq!(
        properties(rs, sent.id(), &rabbit.app.backend().reply_to().unwrap()),
        properties(
            py,
            python_sent["id"].as_str().unwrap(),
            python_sent["reply_to"].as_str().unwrap()
        ),
        "the same properties: content type and encoding, delivery mode, priority, expiration"
    );
    rabbit.finish().await;
}

#[tokio::test]
async fn higher_priorities_published_later_run_first() {
    let priority_queue =
        |queue: &str, options: AmqpOptions| options.queue(AmqpQueue::new(queue).max_priority(9));
    let Some(rabbit) = Rabbit::start(priority_queue).await else {
        return;
    };
    let mut sent = Vec::new();
    for (n, priority) in [(1, 0), (2, 0), (3, 1), (4, 5), (5, 9), (6, 9)] {
        let options = SendOptions {
            priority: Some(priority),
            ..Default::default()
        };
        sent.push(rabbit.send::<i64>(&RECORD, json!([n]), options).await);
    }
    let worker = rabbit.worker(1, 1).await;
    for result in &sent {
        result.get(WAIT).await.unwrap();
    }
    let runs = worker.singleton::<Runs>().unwrap().list();
    assert_eq!(
        runs,
        [5, 6, 4, 3, 1, 2],
        "by priority, then in publishing order"
    );
    worker.shutdown().await;
    rabbit.finish().await;
}

#[tokio::test]
async fn the_broker_holds_back_what_exceeds_the_prefetch_window() {
    let Some(rabbit) = Rabbit::start(|_, options| options).await else {
        return;
    };
    let mut sent = Vec::new();
    for _ in 0..6 {
        sent.push(
            rabbit
                .send::<u64>(&SLOW, json!([1500]), SendOptions::default())
                .await,
        );
    }
    // Concurrency 1 × multiplier 2, late acks: one running, one reserved, four on the broker.
    let worker = rabbit.worker(1, 2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        rabbit.raw.count(&rabbit.queue).await,
        4,
        "basic.qos is the worker's window"
    );
    for result in &sent {
        assert_eq!(result.get(WAIT).await.unwrap(), 1500);
    }
    worker.shutdown().await;
    rabbit.finish().await;
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_and_the_worker_goes_on() {
    let dead_lettered = |queue: &str, options: AmqpOptions| {
        let dead = format!("{queue}.dead");
        options.queue(AmqpQueue::new(queue).dead_letter_exchange(dead))
    };
    let Some(rabbit) = Rabbit::start(dead_lettered).await else {
        return;
    };
    let (raw, queue) = (&rabbit.raw, &rabbit.queue);
    let dead = format!("{queue}.dead");
    raw.channel
        .exchange_declare(
            &dead,
            lapin::ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    raw.channel
        .queue_declare(&dead, Default::default(), FieldTable::default())
        .await
        .unwrap();
    raw.channel
        .queue_bind(&dead, &dead, "", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let worker = rabbit.worker(2, 4).await;
    let mut headers = FieldTable::default();
    headers.insert("task".into(), AMQPValue::LongString("t.record".into()));
    headers.insert("id".into(), AMQPValue::LongString("bad-body".into()));
    let garbage = [
        (Some(headers), b"not json at all".as_slice()),
        (None, b"[1, 2, 3]".as_slice()),
    ];
    for (headers, body) in garbage {
        let mut properties =
            lapin::BasicProperties::default().with_content_type("application/json".into());
        if let Some(headers) = headers {
            properties = properties.with_headers(headers);
        }
        raw.channel
            .basic_publish("", queue, Default::default(), body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let sent = rabbit
        .send::<i64>(&RECORD, json!([5]), SendOptions::default())
        .await;
    assert_eq!(sent.get(WAIT).await.unwrap(), 5, "the worker goes on");
    let deadline = Instant::now() + Duration::from_secs(5);
    while raw.count(&dead).await < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        raw.count(&dead).await,
        2,
        "both rejected without requeue, into the DLX"
    );
    assert_eq!(raw.count(queue).await, 0);
    let first = raw.get(&dead).await.unwrap();
    assert_eq!(first.delivery.data, b"not json at all");
    worker.shutdown().await;
    raw.delete(&dead).await;
    rabbit.finish().await;
}

#[tokio::test]
async fn deliveries_are_acked_rejected_or_requeued_as_asked() {
    let Some(rabbit) = Rabbit::start(|_, options| options).await else {
        return;
    };
    let body = |delivery: &celerity::broker::Delivery| delivery.message.body.clone();
    let mut consumer = rabbit
        .app
        .broker()
        .consume(std::slice::from_ref(&rabbit.queue))
        .await
        .unwrap();
    consumer.set_prefetch(1).await.unwrap();
    // One message at a time: RabbitMQ does not promise where a requeued message lands
    // among others.
    rabbit
        .send::<i64>(&DOUBLE, json!([0]), SendOptions::default())
        .await;
    let first = consumer.next().await.unwrap();
    assert!(!first.redelivered);
    let sent = body(&first);
    first.into_parts().3.reject(true).await.unwrap();
    let again = consumer.next().await.unwrap();
    assert_eq!(
        (body(&again), again.redelivered),
        (sent.clone(), true),
        "requeued, flagged redelivered"
    );
    drop(again.into_parts().3);
    let dropped = consumer.next().await.unwrap();
    assert_eq!(
        (body(&dropped), dropped.redelivered),
        (sent, true),
        "dropped unsettled: back at once"
    );
    dropped.into_parts().3.ack().await.unwrap();
    for x in 1..3 {
        rabbit
            .send::<i64>(&DOUBLE, json!([x]), SendOptions::default())
            .await;
    }
    let second = consumer.next().await.unwrap();
    second.into_parts().3.reject(false).await.unwrap();
    let third = consumer.next().await.unwrap();
    assert!(!third.redelivered, "the rejected message did not come back");
    third.into_parts().3.ack().await.unwrap();
    drop(consumer);
    assert_eq!(
        rabbit.raw.count(&rabbit.queue).await,
        0,
        "acked and rejected messages are gone"
    );
    rabbit.finish().await;
}

#[tokio::test]
async fn a_topic_routed_queue_is_published_through_its_exchange() {
    let topic = |queue: &str, options: AmqpOptions| {
        let declaration = AmqpQueue::new(queue)
            .exchange(format!("{queue}.topic"), ExchangeType::Topic)
            .routing_key("mail.send");
        options.queue(declaration)
    };
    let Some(rabbit) = Rabbit::start(topic).await else {
        return;
    };
    // The default exchange would also deliver a message to the queue of its routing
    // key's name, so the route is read off the wire, not inferred from the task running.
    rabbit
        .send::<i64>(&RECORD, json!([1]), SendOptions::default())
        .await;
    let message = rabbit
        .raw
        .get(&rabbit.queue)
        .await
        .expect("routed to the queue");
    assert_eq!(
        (
            message.delivery.exchange.as_str(),
            message.delivery.routing_key.as_str()
        ),
        (format!("{}.topic", rabbit.queue).as_str(), "mail.send"),
        "published through the topic exchange with the queue's routing key"
    );
    let worker = rabbit.worker(2, 4).await;
    let sent = rabbit
        .send::<i64>(&RECORD, json!([3]), SendOptions::default())
        .await;
    assert_eq!(sent.get(WAIT).await.unwrap(), 3);
    worker.shutdown().await;
    let exchange = format!("{}.topic", rabbit.queue);
    let _ = rabbit
        .raw
        .channel
        .exchange_delete(&exchange, Default::default())
        .await;
    rabbit.finish().await;
}

#[tokio::test]
async fn the_worker_consumes_again_after_the_broker_cancels_its_consumer() {
    let Some(rabbit) = Rabbit::start(|_, options| options).await else {
        return;
    };
    let worker = rabbit.worker(2, 4).await;
    let first = rabbit
        .send::<i64>(&RECORD, json!([1]), SendOptions::default())
        .await;
    assert_eq!(first.get(WAIT).await.unwrap(), 1);
    // Deleting the queue makes RabbitMQ cancel the consumers on it (basic.cancel).
    rabbit
        .raw
        .channel
        .queue_delete(&rabbit.queue, Default::default())
        .await
        .unwrap();
    let redeclared = async {
        loop {
            let probe = RawAmqp::connect(&rabbit.url).await;
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = probe
                .channel
                .queue_declare(&rabbit.queue, passive, FieldTable::default())
                .await;
            if declared.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), redeclared)
        .await
        .expect("the worker declared its queue again");
    let second = rabbit
        .send::<i64>(&RECORD, json!([2]), SendOptions::default())
        .await;
    assert_eq!(second.get(WAIT).await.unwrap(), 2, "and consumes it");
    worker.shutdown().await;
    rabbit.finish().await;
}

#[tokio::test]
async fn connecting_to_a_server_that_never_answers_times_out() {
    // Accepts connections (the kernel does) but never speaks AMQP.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("amqp://127.0.0.1:{}//", silent.local_addr().unwrap().port());
    let options = AmqpOptions::default().connect_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let error = AmqpBroker::connect_with(&url, options).await.unwrap_err();
    assert_eq!(error.kind(), celerity::ErrorKind::Timeout, "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_closed_broker_fails_at_once_instead_of_reconnecting() {
    let Some(rabbit) = Rabbit::start(|_, options| options).await else {
        return;
    };
    rabbit.app.close().await;
    let started = Instant::now();
    let error = rabbit
        .app
        .client()
        .send_task::<i64>(&RECORD, vec![json!(1)])
        .with_options(to(&rabbit.queue))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), celerity::ErrorKind::Closed, "{error}");
    assert!(started.elapsed() < Duration::from_secs(1));
    rabbit.finish().await;
}

/// Runs `tests/python/control_amqp.py` with `args` (off the runtime's threads, so the
/// worker goes on answering); its JSON output.
async fn celery_control(python: &std::path::Path, args: &[&str]) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/control_amqp.py");
    let mut command = std::process::Command::new(python);
    command.arg(&script).args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celerys_remote_control_reaches_the_worker() {
    let Some(rabbit) = Rabbit::start(|_, options| options).await else {
        return;
    };
    let Some(python) = support::python_with_celery() else {
        return;
    };
    let node = format!(
        "amqp-{}@test",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut builder = rabbit.app.worker();
    builder
        .singleton(Runs::default())
        .register::<Probe, RecordArgs>(&RECORD)
        .queues([rabbit.queue.clone()])
        .hostname(&node);
    let worker = builder.start().await.unwrap();
    let url = rabbit.url.as_str();
    assert_eq!(
        celery_control(&python, &[url, &node, "ping"]).await,
        json!([{ node.as_str(): {"ok": "pong"} }]),
        "`celery inspect ping` sees the worker"
    );
    let options = SendOptions {
        countdown: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let sent = rabbit.send::<i64>(&RECORD, json!([1]), options).await;
    celery_control(&python, &[url, &node, "revoke", sent.id()]).await;
    match sent.get(WAIT).await {
        Err(ResultError::Revoked(failure)) => assert_eq!(failure.message, "revoked"),
        other => panic!("expected REVOKED by Python's revoke, got {other:?}"),
    }
    assert!(worker.singleton::<Runs>().unwrap().list().is_empty());
    worker.shutdown().await;
    rabbit.finish().await;
}

/// A node name takes an exclusive mailbox queue (`<node>.celery.pidbox`): a second
/// worker of the same name gets no mailbox, as Celery refuses a duplicate node name,
/// and the first keeps its own. RabbitMQ says so with `RESOURCE_LOCKED`.
#[tokio::test]
async fn a_node_name_in_use_gets_no_second_mailbox() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    let node = format!("celerity@{}", unique_queue());
    let first = AmqpBroker::connect(&url).await.unwrap();
    let second = AmqpBroker::connect(&url).await.unwrap();
    let held = first.mailbox(&node).await.unwrap();
    assert!(
        held.is_some(),
        "the first worker of a name gets its mailbox"
    );
    let refused = second.mailbox(&node).await.unwrap();
    assert!(
        refused.is_none(),
        "a second worker of the same name gets none"
    );
    drop(held);
    first.close().await;
    second.close().await;
}
