//! What every transport does alike, written once and run against each: the embedded
//! broker, Redis (broker and results), and RabbitMQ with results over AMQP (`rpc://`) and
//! in Redis. A task sent comes back with its typed result; a batch is published in order
//! and each of its tasks runs once; a retry runs again after its delay; a revoke reaches
//! the worker before the task runs; tasks held for their countdown do not block the
//! prefetch window; a graceful stop returns held countdown tasks and pending retries to
//! the queue, and a new worker runs each once; a consumer takes up and gives up queues
//! as it consumes. What only one transport has (its wire
//! format, its queue declarations, priorities) is tested in that transport's file.
//!
//! Needs Redis (`CELERITY_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/15`) and
//! RabbitMQ (`CELERITY_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`)
//! for their runs; skips those without them unless `CELERITY_REQUIRE_BROKERS=1`. Every
//! test uses a queue of its own.

mod support;

use std::time::{Duration, Instant};

use celerity::backend::MemoryBackend;
use celerity::broker::MemoryBroker;
use celerity::{App, ResultError, SendOptions, TaskState};
use serde_json::json;
use support::{
    DOUBLE, DoubleArgs, Doubler, RECORD, RETRY_DOUBLE, RETRY_ONCE, RecordCall, Runs, TestQueue, to,
};

const WAIT: Duration = Duration::from_secs(20);

/// How a test looks at its queue on the broker.
enum Queues {
    Memory(MemoryBroker),
    #[cfg(feature = "redis")]
    Redis(::redis::aio::MultiplexedConnection),
    #[cfg(feature = "amqp")]
    Amqp(Box<support::RawAmqp>),
}

/// One test's share of a transport: an app, a queue of its own (deleted by `finish`), and
/// a plain connection to look at it.
struct Transport {
    on: TestQueue,
    queues: Queues,
}

impl std::ops::Deref for Transport {
    type Target = TestQueue;
    fn deref(&self) -> &TestQueue {
        &self.on
    }
}

impl Transport {
    fn new(app: App, queues: Queues) -> Transport {
        Transport {
            on: TestQueue::new(app),
            queues,
        }
    }

    /// The embedded broker and backend.
    async fn memory() -> Option<Transport> {
        let broker = MemoryBroker::new();
        let app = App::new(broker.clone(), MemoryBackend::new());
        Some(Transport::new(app, Queues::Memory(broker)))
    }

    /// Redis as broker and result backend; `None` after a skip without Redis.
    #[cfg(feature = "redis")]
    async fn redis() -> Option<Transport> {
        use celerity::backend::RedisBackend;
        use celerity::broker::RedisBroker;
        let url = support::redis_url()?;
        let app = App::new(
            RedisBroker::connect(&url).await.unwrap(),
            RedisBackend::connect(&url).await.unwrap(),
        );
        let raw = support::raw_redis(&url).await;
        Some(Transport::new(app, Queues::Redis(raw)))
    }

    /// RabbitMQ as broker, results over AMQP (`rpc://`); `None` after a skip without it.
    #[cfg(feature = "amqp")]
    async fn amqp_rpc() -> Option<Transport> {
        let url = support::amqp_url()?;
        let app = App::from_urls(&url, "rpc://").await.unwrap();
        let raw = support::RawAmqp::connect(&url).await;
        Some(Transport::new(app, Queues::Amqp(Box::new(raw))))
    }

    /// RabbitMQ as broker, Redis as result backend; `None` after a skip without either.
    #[cfg(all(feature = "amqp", feature = "redis"))]
    async fn amqp_redis() -> Option<Transport> {
        let (url, redis) = (support::amqp_url()?, support::redis_url()?);
        let app = App::from_urls(&url, &redis).await.unwrap();
        let raw = support::RawAmqp::connect(&url).await;
        Some(Transport::new(app, Queues::Amqp(Box::new(raw))))
    }

    /// How many messages wait in the test's queue.
    async fn queued(&self) -> usize {
        match &self.queues {
            Queues::Memory(broker) => broker.len(&self.queue),
            #[cfg(feature = "redis")]
            Queues::Redis(raw) => {
                let length: i64 = ::redis::AsyncCommands::llen(&mut raw.clone(), &self.queue)
                    .await
                    .unwrap();
                length as usize
            }
            #[cfg(feature = "amqp")]
            Queues::Amqp(raw) => raw.count(&self.queue).await as usize,
        }
    }

    /// Waits until `expected` messages wait in the test's queue, or `within` has passed;
    /// how many wait then.
    async fn queued_within(&self, expected: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let queued = self.queued().await;
            if queued == expected || Instant::now() >= deadline {
                return queued;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How long the messages a worker held may take to be back on the queue after its
    /// shutdown returns: RabbitMQ requeues a moment later (`basic.reject` has no reply);
    /// the others have them back by then.
    fn requeue_delay(&self) -> Duration {
        match &self.queues {
            #[cfg(feature = "amqp")]
            Queues::Amqp(_) => Duration::from_secs(2),
            _ => Duration::ZERO,
        }
    }

    async fn finish(self) {
        self.delete(&self.queue).await;
    }

    /// Deletes `queue` with what waits in it.
    async fn delete(&self, queue: &str) {
        match &self.queues {
            // The embedded broker's queues go with it.
            Queues::Memory(_) => {
                let _ = queue;
            }
            #[cfg(feature = "redis")]
            Queues::Redis(raw) => {
                let _: () = ::redis::AsyncCommands::del(&mut raw.clone(), queue)
                    .await
                    .unwrap();
            }
            #[cfg(feature = "amqp")]
            Queues::Amqp(raw) => raw.delete(queue).await,
        }
    }
}

async fn tasks_round_trip_with_typed_results(t: Transport) {
    let mut builder = t.app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([t.queue.clone()])
        .concurrency(8);
    let worker = builder.start().await.unwrap();
    let mut sent = Vec::new();
    for x in 0..200 {
        sent.push(
            t.app
                .client()
                .send_task::<i64>(&DOUBLE, vec![json!(x)])
                .with_options(to(&t.queue))
                .await
                .unwrap(),
        );
    }
    for (x, result) in sent.iter().enumerate() {
        assert_eq!(result.get(WAIT).await.unwrap(), 2 * x as i64);
        assert_eq!(result.state().await.unwrap(), TaskState::Success);
    }
    assert_eq!(t.queued().await, 0, "every message was taken");
    worker.shutdown().await;
    assert_eq!(t.queued().await, 0, "every message was acknowledged");
    t.finish().await;
}

async fn a_batch_is_published_in_order_and_every_task_runs(t: Transport) {
    let client = t.app.client();
    let calls = (0..600).map(|n| {
        celerity::TaskCall::<_, i64>::new(&client, &RECORD, RecordCall { n }).queue(&t.queue)
    });
    let sent = client.send_batch(calls).await.unwrap();
    assert_eq!(sent.len(), 600);
    assert_eq!(t.queued().await, 600, "confirmed: all on the broker");
    let worker = t.worker(1, 1).await;
    for (n, result) in sent.iter().enumerate() {
        assert_eq!(result.get(WAIT).await.unwrap(), n as i64);
    }
    let runs = worker.singleton::<Runs>().unwrap().list();
    assert_eq!(runs, (0..600).collect::<Vec<i64>>(), "in publishing order");
    worker.shutdown().await;
    t.finish().await;
}

async fn a_retry_is_republished_and_runs_after_its_delay(t: Transport) {
    let worker = t.worker(2, 4).await;
    let started = Instant::now();
    let sent = t
        .send::<u32>(&RETRY_ONCE, json!([]), SendOptions::default())
        .await;
    assert_eq!(sent.get(WAIT).await.unwrap(), 1, "ran again as retry 1");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "after its countdown"
    );
    worker.shutdown().await;
    t.finish().await;
}

async fn a_revoke_reaches_the_worker_before_the_task_runs(t: Transport) {
    let worker = t.worker(2, 4).await;
    let options = SendOptions {
        countdown: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let sent = t.send::<i64>(&RECORD, json!([1]), options).await;
    sent.revoke().await.unwrap();
    match sent.get(WAIT).await {
        Err(ResultError::Revoked(failure)) => assert_eq!(failure.message, "revoked"),
        other => panic!("expected REVOKED, got {other:?}"),
    }
    assert!(worker.singleton::<Runs>().unwrap().list().is_empty());
    worker.shutdown().await;
    t.finish().await;
}

async fn tasks_held_for_their_eta_do_not_starve_the_prefetch_window(t: Transport) {
    let later = SendOptions {
        countdown: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(
            t.send::<i64>(&RECORD, json!([100 + n]), later.clone())
                .await,
        );
    }
    let now = t
        .send::<i64>(&RECORD, json!([7]), SendOptions::default())
        .await;
    // A window of one: without raising the prefetch for held tasks, the first ETA task
    // would block everything behind it for a minute.
    let worker = t.worker(1, 1).await;
    assert_eq!(now.get(Duration::from_secs(10)).await.unwrap(), 7);
    assert_eq!(
        t.queued().await,
        0,
        "all three ETA tasks are held by the worker"
    );
    for result in &held {
        assert_eq!(result.state().await.unwrap(), TaskState::Pending);
    }
    worker.shutdown().await;
    // Shut down before their ETA: the held messages go back to the queue.
    assert_eq!(
        t.queued_within(3, Duration::from_secs(5)).await,
        3,
        "held messages returned at shutdown"
    );
    t.finish().await;
}

async fn a_graceful_stop_returns_held_eta_tasks_and_pending_retries_to_the_queue(t: Transport) {
    let worker = t.worker(4, 4).await;
    let first_runs = worker.singleton::<Runs>().unwrap();
    let client = t.app.client();
    let soon = SendOptions {
        countdown: Some(Duration::from_secs(4)),
        ..to(&t.queue)
    };
    let mut sent = Vec::new();
    for x in 0..20 {
        let options = soon.clone();
        sent.push(
            client
                .send_task::<i64>(&DOUBLE, vec![json!(x)])
                .with_options(options)
                .send(),
        );
    }
    let mut sent = futures::future::try_join_all(sent).await.unwrap();
    // Five more that run at once and ask for a retry in 3 s: each pending retry is a new
    // message the worker holds.
    for x in 20..25 {
        let retried = client
            .send_task::<i64>(&RETRY_DOUBLE, vec![json!(x)])
            .with_options(to(&t.queue))
            .await
            .unwrap();
        sent.push(retried);
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut retrying = 0;
        for result in &sent[20..] {
            if result.state().await.unwrap() == TaskState::Retry {
                retrying += 1;
            }
        }
        if retrying == 5 && t.queued().await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker took every message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    assert_eq!(
        t.queued_within(25, t.requeue_delay()).await,
        25,
        "every held message is back on the queue when shutdown returns"
    );
    assert!(first_runs.list().is_empty());

    let replacement = t.worker(4, 4).await;
    // Due 3 to 4 s after they were sent: well within this, not after a visibility timeout.
    let lost = support::lost_doubles(&sent, Duration::from_secs(8)).await;
    assert!(lost.is_empty(), "sent 25, lost {}: {lost:?}", lost.len());
    let mut ran = replacement.singleton::<Runs>().unwrap().list();
    ran.sort_unstable();
    assert_eq!(
        ran,
        (0..25).collect::<Vec<_>>(),
        "each completed exactly once"
    );
    replacement.shutdown().await;
    assert_eq!(t.queued().await, 0, "nothing left behind");
    t.finish().await;
}

/// The next delivery within `within`, acknowledged; its queue. `None` if none came.
async fn next_queue(
    consumer: &mut Box<dyn celerity::broker::Consumer>,
    within: Duration,
) -> Option<String> {
    let delivery = tokio::time::timeout(within, consumer.next()).await.ok()?;
    let (_, queue, _, acker) = delivery.unwrap().into_parts();
    acker.ack().await.unwrap();
    Some(queue)
}

/// What Celery's `add_consumer` and `cancel_consumer` ask of a consumer: it takes up a
/// queue while it consumes, gives up one, then all, delivering nothing, and takes one up
/// again.
async fn a_consumer_takes_up_and_gives_up_queues_as_it_consumes(t: Transport) {
    let other = support::unique_queue();
    let broker = t.app.client().broker().clone();
    let mut consumer = broker
        .consume(std::slice::from_ref(&t.queue))
        .await
        .unwrap();
    consumer.set_prefetch(10).await.unwrap();
    let _: celerity::AsyncResult<i64> = t.send(&DOUBLE, json!([1]), SendOptions::default()).await;
    let to_other = t.app.client().send_task::<i64>(&DOUBLE, vec![json!(2)]);
    to_other.with_options(to(&other)).await.unwrap();
    assert_eq!(next_queue(&mut consumer, WAIT).await, Some(t.queue.clone()));
    let short = Duration::from_millis(500);
    assert_eq!(
        next_queue(&mut consumer, short).await,
        None,
        "not consumed yet"
    );

    consumer.add_queue(&other).await.unwrap();
    assert_eq!(next_queue(&mut consumer, WAIT).await, Some(other.clone()));
    consumer.cancel_queue(&t.queue).await.unwrap();
    consumer.cancel_queue(&other).await.unwrap();
    let _: celerity::AsyncResult<i64> = t.send(&DOUBLE, json!([3]), SendOptions::default()).await;
    assert_eq!(
        next_queue(&mut consumer, Duration::from_secs(1)).await,
        None,
        "no queue consumed"
    );
    assert_eq!(t.queued().await, 1, "the message waits on its queue");

    consumer.add_queue(&t.queue).await.unwrap();
    assert_eq!(next_queue(&mut consumer, WAIT).await, Some(t.queue.clone()));
    consumer.cancel().await.unwrap();
    drop(consumer);
    t.delete(&other).await;
    t.finish().await;
}

/// Runs each of `cases` on the transport `Transport::$transport` makes, as the tests
/// `$transport::<case>` (skipped when the transport is missing).
macro_rules! run_on {
    ($transport:ident: $($case:ident),* $(,)?) => {
        mod $transport {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(transport) = super::Transport::$transport().await {
                        super::$case(transport).await;
                    }
                }
            )*
        }
    };
}

/// Runs every case on the transport `Transport::$transport` makes.
macro_rules! every_case_on {
    ($transport:ident) => {
        run_on!(
            $transport: tasks_round_trip_with_typed_results,
            a_batch_is_published_in_order_and_every_task_runs,
            a_retry_is_republished_and_runs_after_its_delay,
            a_revoke_reaches_the_worker_before_the_task_runs,
            tasks_held_for_their_eta_do_not_starve_the_prefetch_window,
            a_graceful_stop_returns_held_eta_tasks_and_pending_retries_to_the_queue,
            a_consumer_takes_up_and_gives_up_queues_as_it_consumes,
        );
    };
}

every_case_on!(memory);
#[cfg(feature = "redis")]
every_case_on!(redis);
#[cfg(feature = "amqp")]
every_case_on!(amqp_rpc);
// The broker's share is the same as with `rpc://`: only results travel differently.
#[cfg(all(feature = "amqp", feature = "redis"))]
run_on!(amqp_redis: tasks_round_trip_with_typed_results);
