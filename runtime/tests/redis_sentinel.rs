//! Redis Sentinel: a master, its replica and a sentinel of the test's own. The master is
//! killed under a running producer and worker, both configured with a `sentinel://` URL
//! alone; once the sentinel has promoted the replica, every task the producer was told was
//! sent must complete, with its result readable. The test counts them, and the
//! duplicates a failover may cause.

mod support;

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use celerity::{App, ArgSpec, TaskSpec};
use serde_json::json;
use support::{RedisServer, to, unique_queue};

const MASTER_NAME: &str = "mymaster";

/// `t.counted(x) -> 2x`, counting its runs.
static COUNTED: TaskSpec = TaskSpec::new("t.counted", &[ArgSpec::new("x", true)]);

/// How many times each `x` ran in this process.
static RUNS: LazyLock<Mutex<HashMap<i64, usize>>> = LazyLock::new(Default::default);

/// Runs `t.counted`.
struct Counter;

impl celerity::Component for Counter {
    type Deps = ();
    async fn build(_deps: (), _ctx: &celerity::TaskContext) -> Result<Self, celerity::BuildError> {
        Ok(Counter)
    }
}

#[derive(serde::Deserialize)]
struct CountedArgs {
    x: i64,
}

impl celerity::Invoke<Counter> for CountedArgs {
    type Output = i64;
    async fn invoke(self, _c: &Counter, _ctx: &celerity::TaskContext) -> celerity::TaskResult<i64> {
        *RUNS.lock().unwrap().entry(self.x).or_default() += 1;
        Ok(self.x * 2)
    }
}

/// Asks `server` a question until `ready` accepts the answer, for at most `within`.
async fn until<T: redis::FromRedisValue>(
    server: &RedisServer,
    command: &redis::Cmd,
    within: Duration,
    ready: impl Fn(&T) -> bool,
) -> T {
    let mut raw = support::raw_redis(&server.url()).await;
    let started = Instant::now();
    loop {
        if let Ok(answer) = command.query_async::<T>(&mut raw).await
            && ready(&answer)
        {
            return answer;
        }
        assert!(
            started.elapsed() < within,
            "port {} did not answer {command:?} as expected within {within:?}",
            server.port()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ROLE`'s first element: `master`, `slave` or `sentinel`.
fn role_is(role: &'static str) -> impl Fn(&Vec<redis::Value>) -> bool {
    move |reply| {
        reply
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
            .is_some_and(|name| name == role)
    }
}

/// A master, a replica in sync with it, and a sentinel that knows both.
struct Group {
    master: RedisServer,
    replica: RedisServer,
    sentinel: RedisServer,
}

impl Group {
    /// Starts one, or `None` after saying why the test skips.
    async fn start() -> Option<Group> {
        let master = RedisServer::start_with(&["--repl-diskless-sync-delay", "0"]).await?;
        let master_port = master.port().to_string();
        let replica = RedisServer::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &master_port,
            "--repl-diskless-sync-delay",
            "0",
        ])
        .await?;
        let role = redis::cmd("ROLE");
        // In sync: the master lists the replica, and the replica's link is up.
        until(&master, &role, Duration::from_secs(15), |reply: &Vec<redis::Value>| {
            matches!(reply.get(2), Some(redis::Value::Array(replicas)) if !replicas.is_empty())
        })
        .await;
        until(
            &replica,
            &role,
            Duration::from_secs(15),
            |reply: &Vec<redis::Value>| {
                reply
                    .get(3)
                    .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
                    .is_some_and(|state| state == "connected")
            },
        )
        .await;
        let sentinel =
            RedisServer::start_sentinel(MASTER_NAME, master.port(), Duration::from_secs(1)).await?;
        // The sentinel must know the replica, or it has nothing to promote.
        let mut replicas = redis::cmd("SENTINEL");
        replicas.arg("replicas").arg(MASTER_NAME);
        until(
            &sentinel,
            &replicas,
            Duration::from_secs(15),
            |found: &Vec<redis::Value>| !found.is_empty(),
        )
        .await;
        Some(Group {
            master,
            replica,
            sentinel,
        })
    }

    /// The sentinel's URL, naming the master.
    fn url(&self) -> String {
        format!(
            "sentinel://127.0.0.1:{}/0?master_name={MASTER_NAME}",
            self.sentinel.port()
        )
    }
}

#[tokio::test]
async fn producer_and_worker_follow_a_sentinel_failover_and_lose_no_task() {
    let Some(Group {
        mut master,
        replica,
        sentinel,
    }) = Group::start().await
    else {
        return;
    };
    let role = redis::cmd("ROLE");
    // The first sentinel listed is down: the connection asks the next one.
    let absent = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!(
        "sentinel://127.0.0.1:{absent}/0;sentinel://127.0.0.1:{}/0?master_name={MASTER_NAME}",
        sentinel.port()
    );
    // Worker and producer each on connections of their own, so each follows by itself.
    let worker_app = App::from_urls(&url, &url).await.unwrap();
    let producer_app = App::from_urls(&url, &url).await.unwrap();
    assert_eq!(
        worker_app.broker().describe(),
        format!(
            "sentinel://127.0.0.1:{absent}/0;sentinel://127.0.0.1:{}/0?master_name={MASTER_NAME} \
             (master {MASTER_NAME})",
            sentinel.port()
        )
    );
    let queue = unique_queue();
    let mut builder = worker_app.worker();
    builder
        .register::<Counter, CountedArgs>(&COUNTED)
        .queues([queue.clone()])
        .concurrency(4);
    let worker = builder.start().await.unwrap();

    const TASKS: i64 = 400;
    let producer = {
        let client = producer_app.client();
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut slowest = Duration::ZERO;
            for x in 0..TASKS {
                let started = Instant::now();
                let result = client
                    .send_task::<i64>(&COUNTED, vec![json!(x)])
                    .with_options(to(&queue))
                    .await
                    .expect("publishing follows the failover");
                slowest = slowest.max(started.elapsed());
                sent.push(result);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (sent, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let killed = Instant::now();
    master.kill(); // SIGKILL: what it had not replicated is gone.

    let (sent, slowest) = producer.await.unwrap();
    let lost = support::lost_doubles(&sent, Duration::from_secs(25)).await;
    let recovered = killed.elapsed();
    worker.shutdown().await;
    // The failover happened: the replica is the master now.
    until(&replica, &role, Duration::from_secs(1), role_is("master")).await;

    let runs = RUNS.lock().unwrap().clone();
    let duplicates: usize = runs.values().map(|n| n.saturating_sub(1)).sum();
    eprintln!(
        "sentinel failover: {TASKS} sent (slowest send {slowest:.1?}), {} completed with \
         their results, {} lost, {duplicates} run twice; all done {recovered:.1?} after the \
         master was killed",
        TASKS as usize - lost.len(),
        lost.len()
    );
    assert_eq!(
        lost,
        Vec::<String>::new(),
        "every task sent completes with its result"
    );
    assert!(
        (0..TASKS).all(|x| runs.contains_key(&x)),
        "every task ran in this worker"
    );
}

#[tokio::test]
async fn a_task_is_sent_only_once_a_replica_has_it() {
    let Some(group) = Group::start().await else {
        return;
    };
    let app = App::from_urls(&group.url(), "memory://").await.unwrap();
    let queue = unique_queue();
    let send = |x: i64| {
        let client = app.client();
        let queue = queue.clone();
        async move {
            client
                .send_task::<i64>(&COUNTED, vec![json!(x)])
                .with_options(to(&queue))
                .await
                .unwrap()
        }
    };
    send(0).await;

    // A replica that stops acknowledging holds the next send back, not the task.
    group.replica.signal("STOP");
    let held = tokio::spawn(send(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waited = !held.is_finished();
    group.replica.signal("CONT");
    let sent = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("sent once the replica is back")
        .unwrap();
    assert!(waited, "the send returned before any replica had the task");
    let mut on_replica = support::raw_redis(&group.replica.url()).await;
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(&queue)
        .arg(0)
        .arg(-1)
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert!(
        queued.iter().any(|envelope| envelope.contains(sent.id())),
        "the replica holds the task"
    );
}

#[tokio::test]
async fn a_sentinel_url_naming_an_unknown_master_fails_clearly() {
    let Some(master) = RedisServer::start().await else {
        return;
    };
    let Some(sentinel) =
        RedisServer::start_sentinel(MASTER_NAME, master.port(), Duration::from_secs(5)).await
    else {
        return;
    };
    let url = format!(
        "sentinel://:secret@127.0.0.1:{}/0?master_name=elsewhere",
        sentinel.port()
    );
    let error = App::from_urls(&url, "memory://")
        .await
        .expect_err("no sentinel watches `elsewhere`");
    let message = error.to_string();
    assert!(
        message.contains("`elsewhere` is not a master these sentinels watch"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");

    // The same sentinel, asked for the master it watches, gives it.
    let url = format!("sentinel://127.0.0.1:{}/0", sentinel.port());
    let settings_free = App::from_urls(&url, "memory://")
        .await
        .expect_err("no master name");
    assert!(
        settings_free.to_string().contains("master_name"),
        "{settings_free}"
    );
    let url = format!("{url}?master_name={MASTER_NAME}");
    let app = App::from_urls(&url, &url).await.unwrap();
    assert!(app.backend().describe().ends_with("(master mymaster)"));
}
