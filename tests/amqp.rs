//! The reference application on RabbitMQ: every task of `schemas/tasks.yaml` sent through
//! the generated client, run by a worker, with its typed result back, once with results over
//! AMQP (`rpc://`) and once in Redis.
//!
//! Needs RabbitMQ (`CELERITY_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`)
//! and, for the Redis half, Redis (`CELERITY_TEST_REDIS_URL`); skips what is missing unless
//! `CELERITY_REQUIRE_BROKERS=1`.

#[path = "support/shop.rs"]
mod shop;
mod support;

use celerity::App;
use celerity::backend::{RedisBackend, RpcBackend};
use celerity::broker::AmqpBroker;
use celerity_shop::tasks::TasksRegistry;
use uuid::Uuid;

/// Runs every reference task through `app` on a queue of its own, so that tests running
/// at the same time do not take each other's messages.
async fn every_reference_task_round_trips(broker: &AmqpBroker, app: &App) {
    let queue = format!("shop-test-{}", Uuid::new_v4());
    let mut worker = app.worker();
    celerity_shop::register(&mut worker);
    worker.queues([queue.clone()]);
    let worker = worker.start().await.expect("the worker starts");
    let tasks = TasksRegistry::new(app.client());
    shop::every_reference_task_round_trips(&tasks, &queue).await;
    worker.shutdown().await;
    broker.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn every_reference_task_round_trips_with_results_over_amqp() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    let broker = AmqpBroker::connect(&url).await.unwrap();
    let backend = RpcBackend::connect(&broker).await.unwrap();
    let app = App::new(broker.clone(), backend);
    every_reference_task_round_trips(&broker, &app).await;
}

#[tokio::test]
async fn every_reference_task_round_trips_with_results_in_redis() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    let Some(redis) = support::redis_url() else {
        return;
    };
    let broker = AmqpBroker::connect(&url).await.unwrap();
    let backend = RedisBackend::connect(&redis).await.unwrap();
    let app = App::new(broker.clone(), backend);
    every_reference_task_round_trips(&broker, &app).await;
}
