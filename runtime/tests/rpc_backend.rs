//! The AMQP RPC result backend (`rpc://`) against a real RabbitMQ: the URL and what it
//! needs, and results delivered to the sender's reply queue alone, forgotten on request,
//! and not sent without a `reply_to`. Tasks round-tripping through it are in
//! `round_trip.rs` (`amqp_rpc`).
//!
//! Needs RabbitMQ (`CELERITY_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! skips without it unless `CELERITY_REQUIRE_BROKERS=1`.

mod support;

use std::time::Duration;

use celerity::backend::{ResultBackend, RpcBackend};
use celerity::broker::AmqpBroker;
use celerity::{App, TaskState};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_rpc_url_is_described_as_such_and_needs_an_amqp_broker() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    let app = App::from_urls(&url, "rpc://").await.unwrap();
    assert_eq!(app.backend().describe(), "rpc://");
    assert!(
        !app.broker().describe().contains("guest:guest"),
        "no password in banners"
    );
    // A broker that connects at once, so the error is the rule, not a refused connection.
    let mismatch = App::from_urls("memory://", "rpc://")
        .await
        .expect_err("rpc:// needs an amqp:// broker");
    assert_eq!(mismatch.kind(), celerity::ErrorKind::Config);
    assert!(mismatch.to_string().contains("amqp://"), "{mismatch}");
}

#[tokio::test]
async fn results_are_delivered_to_the_sender_and_forgotten_on_request() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    let broker = AmqpBroker::connect(&url).await.unwrap();
    let backend = RpcBackend::connect(&broker).await.unwrap();
    let meta = celerity::protocol::ResultMeta::new("task-1", TaskState::Success, json!(42));
    // A worker's reply to a message that asked for this backend's queue.
    let request = celerity::protocol::Properties {
        reply_to: backend.reply_to(),
        correlation_id: Some("task-1".into()),
        ..Default::default()
    };
    let worker_side = RpcBackend::connect(&broker).await.unwrap();
    worker_side.store_for(&meta, &request).await.unwrap();
    let received = tokio::time::timeout(WAIT, backend.wait_ready("task-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.result, json!(42));
    assert_eq!(
        worker_side.get("task-1").await.unwrap(),
        None,
        "only the sender receives it"
    );
    backend.forget("task-1").await.unwrap();
    assert_eq!(backend.get("task-1").await.unwrap(), None);
    // No reply_to: nothing is sent, as in Celery.
    let unsent = celerity::protocol::ResultMeta::new("task-2", TaskState::Success, json!(7));
    worker_side
        .store_for(&unsent, &celerity::protocol::Properties::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend.get("task-2").await.unwrap(),
        None,
        "nothing arrived"
    );
    assert_eq!(
        worker_side.get("task-2").await.unwrap(),
        None,
        "not sent to its own reply queue either"
    );
}

/// Celery refuses chords on the rpc backend ("The "rpc" result backend does not support
/// chords!"); so does Celerity, when the chord is sent and before any header task is.
#[tokio::test]
async fn a_chord_on_the_rpc_backend_fails_at_send_time_and_publishes_nothing() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    use celerity::canvas::{Sig, Signature, Takes, chord, group};
    let app = App::from_urls(&url, "rpc://").await.unwrap();
    let queue = format!("rpc-chord-{}", uuid::Uuid::new_v4());
    let part: Sig<(), i64> =
        Sig::from_signature(Signature::new("t.add", vec![json!(1), json!(1)])).queue(&queue);
    let body: Sig<Takes<Vec<i64>>, i64> = Sig::from_signature(Signature::new("t.sum", vec![]));
    let error = app
        .client()
        .send(chord(group([part.clone(), part]), body))
        .await
        .expect_err("rpc:// cannot join a chord");
    assert_eq!(error.kind(), celerity::ErrorKind::Unsupported);
    assert!(error.to_string().contains("cannot join chords"), "{error}");
    let queues = [queue.clone()];
    let mut consumer = app.broker().consume(&queues).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), consumer.next())
            .await
            .is_err(),
        "no header task was published"
    );
}
