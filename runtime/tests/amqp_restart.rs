//! RabbitMQ restarted (`rabbitmqctl stop_app` / `start_app`) while a producer sends and a
//! worker runs tasks: both reconnect on their own and every task sent completes.
//!
//! A binary of its own: cargo runs test binaries one after another, so the restart
//! disturbs no other test. Needs RabbitMQ on this machine and `rabbitmqctl` (`RABBITMQCTL`
//! names another); skips without them unless `CELERITY_REQUIRE_BROKERS=1`.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use celerity::backend::RpcBackend;
use celerity::broker::{AmqpBroker, AmqpOptions};
use celerity::{App, ArgSpec, Invoke, SendOptions, TaskContext, TaskResult, TaskSpec};
use serde_json::json;
use support::Doubler;

const TASKS: usize = 60;

/// `t.slow_double(x)`: doubles `x` in 150 ms, acknowledged late, so that tasks are running
/// unacknowledged when the broker goes away.
static SLOW_DOUBLE: TaskSpec =
    TaskSpec::new("t.slow_double", &[ArgSpec::new("x", true)]).acks_late(true);

#[derive(serde::Deserialize)]
struct SlowDoubleArgs {
    x: i64,
}

impl Invoke<Doubler> for SlowDoubleArgs {
    type Output = i64;
    async fn invoke(self, _doubler: &Doubler, _ctx: &TaskContext) -> TaskResult<i64> {
        tokio::time::sleep(Duration::from_millis(150)).await;
        Ok(self.x * 2)
    }
}

fn rabbitmqctl() -> Option<String> {
    let program = std::env::var("RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let works = Command::new(&program)
        .args(["-q", "status"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(program);
    }
    support::skip(format_args!("`{program} status` fails (RABBITMQCTL)"))
}

fn run(program: &str, command: &str) {
    let output = Command::new(program)
        .args(["-q", command])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_worker_recover_from_a_rabbitmq_restart() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    let Some(ctl) = rabbitmqctl() else {
        return;
    };
    let options = AmqpOptions::default()
        .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
        .retry_for(Duration::from_secs(60));
    let broker = AmqpBroker::connect_with(&url, options).await.unwrap();
    let app = App::new(broker.clone(), RpcBackend::connect(&broker).await.unwrap());
    let queue = support::unique_queue();
    let mut builder = app.worker();
    builder
        .register::<Doubler, SlowDoubleArgs>(&SLOW_DOUBLE)
        .queues([queue.clone()])
        .concurrency(4);
    let worker = builder.start().await.unwrap();

    let sent_count = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn({
        let app = app.clone();
        let queue = queue.clone();
        let sent_count = sent_count.clone();
        async move {
            let client = app.client();
            let mut sent = Vec::new();
            let mut failures = 0;
            for x in 0..TASKS {
                // The same id on a retried send: a task is never sent twice under two ids.
                let options = SendOptions {
                    queue: Some(queue.clone()),
                    task_id: Some(uuid::Uuid::new_v4().to_string()),
                    ..Default::default()
                };
                loop {
                    let send = client
                        .send_task::<i64>(&SLOW_DOUBLE, vec![json!(x)])
                        .with_options(options.clone())
                        .send();
                    match send.await {
                        Ok(result) => {
                            sent.push(result);
                            sent_count.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            (sent, failures)
        }
    });

    while sent_count.load(Ordering::SeqCst) < TASKS / 6 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ctl_stop = ctl.clone();
    tokio::task::spawn_blocking(move || run(&ctl_stop, "stop_app"))
        .await
        .unwrap();
    let sent_while_stopped = sent_count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = sent_count.load(Ordering::SeqCst);
    tokio::task::spawn_blocking(move || run(&ctl, "start_app"))
        .await
        .unwrap();

    let (sent, failures) = tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .expect("the producer finishes")
        .unwrap();
    let lost = support::lost_doubles(&sent, Duration::from_secs(60)).await;
    for task in &lost {
        eprintln!("did not complete after the restart: {task}");
    }
    let completed = sent.len() - lost.len();
    println!(
        "sent {} ({} before the stop; none accepted while stopped: {}; failed sends retried {failures}), completed {completed}, lost {}",
        sent.len(),
        sent_while_stopped,
        still == sent_while_stopped,
        TASKS - completed,
    );
    assert_eq!(
        still, sent_while_stopped,
        "no send returned while the broker was down"
    );
    assert_eq!(completed, TASKS);
    worker.shutdown().await;
    let raw = support::RawAmqp::connect(&url).await;
    raw.delete(&queue).await;
}
