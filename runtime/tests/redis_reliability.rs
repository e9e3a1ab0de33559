//! What a Redis deployment must not lose, on servers of the test's own: a killed
//! consumer's task comes back after the visibility timeout its URL sets, and a result
//! stored while Redis is away for longer than an operation's retry window still arrives.
#![cfg(feature = "redis")]

mod support;

use std::time::{Duration, Instant};

use celerity::App;
use serde_json::{Map, json};
use support::{DOUBLE, DoubleArgs, Doubler, to, unique_queue};

const CONSUMER_URL: &str = "CELERITY_KILLED_CONSUMER_URL";
const CONSUMER_QUEUE: &str = "CELERITY_KILLED_CONSUMER_QUEUE";

/// The consumer the visibility test kills: takes one message, says so, and waits.
#[tokio::test]
#[ignore = "run as a child process by a_killed_consumers_task_returns_after_the_urls_visibility_timeout"]
async fn consumer_to_kill() {
    let url = std::env::var(CONSUMER_URL).expect("started by the visibility test");
    let queue = std::env::var(CONSUMER_QUEUE).expect("started by the visibility test");
    let app = App::from_urls(&url, "memory://").await.unwrap();
    let mut consumer = app.broker().consume(&[queue]).await.unwrap();
    let delivery = consumer.next().await.unwrap();
    println!("taken");
    std::future::pending::<()>().await;
    drop(delivery);
}

#[tokio::test]
async fn a_killed_consumers_task_returns_after_the_urls_visibility_timeout() {
    let Some(server) = support::RedisServer::start().await else {
        return;
    };
    let queue = unique_queue();
    let app = App::from_urls(&server.url(), &server.url()).await.unwrap();
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(21)], Map::new(), to(&queue))
        .await
        .unwrap();

    // A consumer on the default visibility timeout (an hour) takes it and is SIGKILLed.
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "consumer_to_kill", "--nocapture"])
        .env(CONSUMER_URL, server.url())
        .env(CONSUMER_QUEUE, &queue)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let taken = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .any(|line| line == "taken");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(taken, "the consumer took the task");
    let killed = Instant::now();

    // A worker whose URL sets a 2 s visibility timeout gives it back and runs it.
    let url = format!("{}?visibility_timeout=2", server.url());
    let rescuer = App::from_urls(&url, &url).await.unwrap();
    let mut builder = rescuer.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.clone()]);
    let worker = builder.start().await.unwrap();
    let value = sent.get(Duration::from_secs(20)).await;
    let waited = killed.elapsed();
    worker.shutdown().await;
    assert_eq!(
        value.unwrap(),
        42,
        "the task returned within 20 s, not after an hour"
    );
    assert!(
        waited >= Duration::from_secs(1),
        "it came back by the timeout, not at once ({waited:?})"
    );
}
