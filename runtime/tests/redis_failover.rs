//! Failover lists: `redis://A;redis://B`, as Celery's `;`-separated broker URLs. Tasks
//! complete on A; A is killed; producer and worker move to B by themselves and the tasks
//! sent afterwards complete there.

mod support;

use std::time::{Duration, Instant};

use celerity::{App, AsyncResult};
use redis::AsyncCommands;
use serde_json::json;
use support::{DOUBLE, DoubleArgs, Doubler, RedisServer, to, unique_queue};

/// Sends `t.double(x)` for each `x` of `xs`.
async fn send(app: &App, queue: &str, xs: std::ops::Range<i64>) -> Vec<AsyncResult<i64>> {
    let mut sent = Vec::new();
    for x in xs {
        let result = app
            .client()
            .send_task::<i64>(&DOUBLE, vec![json!(x)])
            .with_options(to(queue))
            .await
            .expect("publishing moves to the next server");
        sent.push(result);
    }
    sent
}

/// The tasks of `sent` (doubling `first`, `first + 1`…) that did not complete in time.
async fn incomplete(sent: &[AsyncResult<i64>], first: i64) -> Vec<String> {
    let mut lost = Vec::new();
    for (x, result) in (first..).zip(sent) {
        match result.get(Duration::from_secs(20)).await {
            Ok(value) if value == 2 * x => {}
            other => lost.push(format!("task {x}: {other:?}")),
        }
    }
    lost
}

#[tokio::test]
async fn producer_and_worker_move_to_the_next_server_when_the_first_is_lost() {
    let (Some(mut a), Some(b)) = (RedisServer::start().await, RedisServer::start().await) else {
        return;
    };
    let url = format!("{};{}", a.url(), b.url());
    let worker_app = App::from_urls(&url, &url).await.unwrap();
    let producer_app = App::from_urls(&url, &url).await.unwrap();
    assert_eq!(producer_app.broker().describe(), url);
    let queue = unique_queue();
    let mut builder = worker_app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.clone()])
        .concurrency(4);
    let worker = builder.start().await.unwrap();

    let before = send(&producer_app, &queue, 0..20).await;
    assert_eq!(incomplete(&before, 0).await, Vec::<String>::new());
    let mut on_a = support::raw_redis(&a.url()).await;
    let key = format!("celery-task-meta-{}", before[0].id());
    assert!(on_a.exists::<_, bool>(&key).await.unwrap(), "results on A");

    a.kill();
    let killed = Instant::now();
    let after = send(&producer_app, &queue, 20..40).await;
    let lost = incomplete(&after, 20).await;
    let moved = killed.elapsed();
    worker.shutdown().await;
    eprintln!(
        "failover list: 20 tasks on A, A killed, 20 sent after: {} completed on B, {} lost, \
         all done {moved:.1?} after A was killed",
        20 - lost.len(),
        lost.len()
    );
    assert_eq!(
        lost,
        Vec::<String>::new(),
        "tasks sent after A is lost complete"
    );
    let mut on_b = support::raw_redis(&b.url()).await;
    let key = format!("celery-task-meta-{}", after[0].id());
    assert!(on_b.exists::<_, bool>(&key).await.unwrap(), "results on B");
}

#[tokio::test]
async fn a_list_whose_first_server_is_down_starts_on_the_next() {
    let Some(b) = RedisServer::start().await else {
        return;
    };
    let absent = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://:secret@127.0.0.1:{absent}/0;{}", b.url());
    let app = App::from_urls(&url, &url).await.unwrap();
    assert!(!app.broker().describe().contains("secret"));
    let queue = unique_queue();
    let worker = support::doubler(&app, &queue).await;
    let sent = send(&app, &queue, 0..3).await;
    assert_eq!(incomplete(&sent, 0).await, Vec::<String>::new());
    worker.shutdown().await;

    let mixed = format!("{};sentinel://127.0.0.1:26379/0", b.url());
    let error = App::from_urls(&mixed, "memory://")
        .await
        .expect_err("one kind of server a list");
    assert_eq!(error.kind(), celerity::ErrorKind::Config, "{error}");
}
