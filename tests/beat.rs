//! The scheduler of periodic tasks as the worker program runs it: replicas on one Redis,
//! each a process of the `worker` example, sending the shop's `canary` schedule (a ping
//! every second) to the `shop` queue, which nothing consumes here: the test takes each
//! message off the queue as it arrives and reads which run it is (the `celerity_beat_run`
//! header).
//!
//! - two replicas (one alone, `beat`; one inside a worker, `--beat`) for 30 s: 29 to 31
//!   runs, none sent twice;
//! - the leader SIGKILLed at 10 s: the other takes over within the lease and sends the
//!   latest missed run once, then every run; none sent twice. The takeover time and the
//!   runs lost and doubled are printed;
//! - the leader paused (SIGSTOP) past its lease, as a partition from Redis would cut it
//!   off, then resumed: the other took over meanwhile, and the resumed one sends nothing
//!   more (its claims are fenced by the lease token). None sent twice.
//!
//! Each test has a Redis database of its own, since they share the `shop` queue's name.
//! Needs Redis; skips without it unless `CELERITY_REQUIRE_BROKERS=1`.
//!
//! On RabbitMQ alone (an `amqp://` broker, `rpc://` results) the replicas share a
//! single-active-consumer queue instead: the leader SIGKILLed, the other takes over at
//! once and no run is logged as sent twice. Needs RabbitMQ; skips likewise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

mod support;
use support::worker::{WorkerProcess, signal, wait_until};
use support::{amqp_url, redis_url};

/// The worker program's default lease.
const LEASE: Duration = Duration::from_secs(10);

/// How long each scenario runs.
const RUN_FOR: Duration = Duration::from_secs(30);

/// A run of `canary` taken off the queue.
#[derive(Debug, Clone)]
struct Sent {
    /// When the test saw it arrive.
    at: Instant,
    /// Which run it is.
    run: DateTime<Utc>,
    id: String,
    /// The process that sent it (Celery's `origin` header, `gen<pid>@<host>`).
    origin: String,
}

/// Takes every message off the `shop` queue of `url` as it arrives, until stopped.
struct QueueWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sent>>,
}

impl QueueWatch {
    fn start(url: &str) -> Self {
        let client = redis::Client::open(url).expect("a Redis URL");
        let mut connection = client.get_connection().expect("Redis answers");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sent = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let popped: Option<(String, String)> = redis::cmd("BRPOP")
                    .arg("shop")
                    .arg(0.2)
                    .query(&mut connection)
                    .expect("BRPOP");
                let Some((_, envelope)) = popped else {
                    continue;
                };
                let envelope: serde_json::Value = serde_json::from_str(&envelope).unwrap();
                let headers = &envelope["headers"];
                if headers["periodic_task_name"] != "canary" {
                    continue;
                }
                assert_eq!(headers["celery_beat_task"], true, "{headers}");
                assert_eq!(headers["task"], "tasks.ping");
                sent.push(Sent {
                    at: Instant::now(),
                    run: headers["celerity_beat_run"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                    id: headers["id"].as_str().unwrap().to_owned(),
                    origin: headers["origin"].as_str().unwrap().to_owned(),
                });
            }
            sent
        });
        QueueWatch { stop, thread }
    }

    fn finish(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the queue watch")
    }
}

/// Database `db` of the test Redis, emptied; `None` (after skipping) without Redis.
fn database(db: u8) -> Option<String> {
    let url = redis_url()?;
    let url = url
        .rsplit_once('/')
        .map_or(url.clone(), |(base, _)| format!("{base}/{db}"));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let () = redis::cmd("FLUSHDB").query(&mut connection).unwrap();
    Some(url)
}

/// A replica: the worker program's `beat` command, or a worker with `--beat` (consuming
/// a queue nothing is sent to, so the `shop` queue is left to the test).
fn replica(url: &str, name: &str, embedded: bool) -> WorkerProcess {
    replica_of(url, url, "default", name, embedded)
}

/// A replica of scheduler group `group` on broker `url` and result backend `backend`.
fn replica_of(url: &str, backend: &str, group: &str, name: &str, embedded: bool) -> WorkerProcess {
    let hostname = format!("{name}@%h");
    let idle_queue = format!("celerity-beat-idle-{}", uuid::Uuid::new_v4());
    let mut args = vec![
        "--broker-url",
        url,
        "--result-backend",
        backend,
        "--hostname",
        &hostname,
        "--beat-group",
        group,
    ];
    if embedded {
        args.extend(["--beat", "--queues", &idle_queue]);
    } else {
        args.insert(0, "beat");
    }
    let mut process = WorkerProcess::start(&args);
    process.stdout_line_containing("canary");
    process
}

const HOLDS: &str = "holds the lease";

/// The replica that took the lease first, once one has.
fn leader<'a>(
    a: &'a WorkerProcess,
    b: &'a WorkerProcess,
) -> (&'a WorkerProcess, &'a WorkerProcess) {
    wait_until(
        || a.stderr_seen(HOLDS).is_some() || b.stderr_seen(HOLDS).is_some(),
        "a replica holds the lease",
    );
    match (a.stderr_seen(HOLDS), b.stderr_seen(HOLDS)) {
        (Some(_), None) => (a, b),
        (None, Some(_)) => (b, a),
        (Some(x), Some(y)) if x <= y => (a, b),
        _ => (b, a),
    }
}

/// Two replicas (the `beat` command) on database `db`, its queue watched, from `start`,
/// once one of them, `leader`, leads.
struct Pair {
    watch: QueueWatch,
    a: WorkerProcess,
    b: WorkerProcess,
    start: Instant,
    leader: u32,
}

fn pair(db: u8) -> Option<Pair> {
    let url = database(db)?;
    let watch = QueueWatch::start(&url);
    let a = replica(&url, "beat-a", false);
    let b = replica(&url, "beat-b", false);
    let start = Instant::now();
    let leader = leader(&a, &b).0.id();
    Some(Pair {
        watch,
        a,
        b,
        start,
        leader,
    })
}

/// Sends signal `name` to process `pid` at `at`; returns when it was sent.
fn signal_at(pid: u32, name: &str, at: Instant) -> Instant {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    signal(pid, name);
    Instant::now()
}

/// How many times each run was sent.
fn runs(sent: &[Sent]) -> BTreeMap<DateTime<Utc>, usize> {
    let mut runs = BTreeMap::new();
    for send in sent {
        *runs.entry(send.run).or_default() += 1;
    }
    runs
}

fn doubled(sent: &[Sent]) -> usize {
    let ids: std::collections::BTreeSet<&str> = sent.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), runs(sent).len(), "one id per run");
    sent.len() - ids.len()
}

fn stop(process: &mut WorkerProcess) {
    signal(process.id(), "TERM");
    assert_eq!(
        process.wait(Duration::from_secs(20)),
        Some(0),
        "a graceful stop"
    );
}

#[test]
fn two_replicas_send_each_run_once() {
    let Some(url) = database(7) else { return };
    let watch = QueueWatch::start(&url);
    let mut alone = replica(&url, "beat-a", false);
    let mut embedded = replica(&url, "beat-b", true);
    leader(&alone, &embedded);
    let start = Instant::now();
    std::thread::sleep(RUN_FOR);
    let end = Instant::now();
    stop(&mut alone);
    stop(&mut embedded);
    let sent = watch.finish();

    let in_window = sent.iter().filter(|s| s.at >= start && s.at <= end).count();
    let doubled = doubled(&sent);
    println!(
        "beat, two replicas for {} s: {in_window} runs sent, {doubled} sent twice",
        RUN_FOR.as_secs()
    );
    assert!(
        (29..=31).contains(&in_window),
        "{in_window} runs in 30 s: {sent:?}"
    );
    assert_eq!(doubled, 0, "{sent:?}");
    let senders = [&alone, &embedded]
        .iter()
        .filter(|p| {
            p.stderr_so_far()
                .contains("Scheduler: Sending due task canary")
        })
        .count();
    assert_eq!(senders, 1, "one replica sends");
}

#[test]
fn a_replica_takes_over_from_a_killed_leader_within_the_lease_and_sends_no_run_twice() {
    let Some(Pair {
        watch,
        mut a,
        mut b,
        start,
        leader: killed_id,
    }) = pair(8)
    else {
        return;
    };
    let killed_at = signal_at(killed_id, "KILL", start + Duration::from_secs(10));
    std::thread::sleep(RUN_FOR.saturating_sub(start.elapsed()));
    let survivor = if a.id() == killed_id { &mut b } else { &mut a };
    stop(survivor);
    let survivor_log = survivor.stderr();
    let sent = watch.finish();

    let (before, after): (Vec<&Sent>, Vec<&Sent>) = sent.iter().partition(|s| s.at < killed_at);
    let first_after = after.first().expect("the survivor sends");
    let takeover = first_after.at - killed_at;
    let last_before = before.iter().map(|s| s.run).max().expect("the leader sent");
    let gap = (first_after.run - last_before).num_seconds();
    let lost = usize::try_from(gap - 1).unwrap_or(0);
    let doubled = doubled(&sent);
    println!(
        "beat failover (lease {} s): takeover {:.1} s after SIGKILL, {lost} runs lost, {doubled} sent twice, {} runs sent in {} s",
        LEASE.as_secs(),
        takeover.as_secs_f64(),
        sent.len(),
        RUN_FOR.as_secs(),
    );
    assert_eq!(doubled, 0, "{sent:?}");
    assert!(
        takeover <= LEASE + Duration::from_millis(1500),
        "took over after {takeover:?}"
    );
    assert!(
        survivor_log.contains("were missed while no scheduler sent; the latest is sent once"),
        "{survivor_log}"
    );
    // After the takeover, every run is sent.
    let after_runs: Vec<DateTime<Utc>> = after.iter().map(|s| s.run).collect();
    for pair in after_runs.windows(2) {
        assert_eq!((pair[1] - pair[0]).num_seconds(), 1, "{after_runs:?}");
    }
    assert!(lost as f64 <= LEASE.as_secs_f64(), "{lost} lost");
}

#[test]
fn a_paused_leader_resumes_fenced_and_sends_no_run_twice() {
    let Some(Pair {
        watch,
        mut a,
        mut b,
        start,
        leader: paused_id,
    }) = pair(9)
    else {
        return;
    };
    // Cut off from Redis for longer than its lease: its renewals stop, as they would
    // across a partition, and the other replica takes over.
    let paused_at = signal_at(paused_id, "STOP", start + Duration::from_secs(5));
    let resumed_at = signal_at(
        paused_id,
        "CONT",
        paused_at + LEASE + Duration::from_secs(5),
    );
    std::thread::sleep(RUN_FOR.saturating_sub(start.elapsed()));
    stop(&mut a);
    stop(&mut b);
    let sent = watch.finish();
    let (paused, other) = if a.id() == paused_id {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let paused_log = paused.stderr();
    let other_log = other.stderr();

    let doubled = doubled(&sent);
    let during = sent
        .iter()
        .filter(|s| s.at > paused_at && s.at < resumed_at)
        .count();
    println!(
        "beat pause: {} runs sent in {} s, {during} by the other replica while the leader was paused, {doubled} sent twice",
        sent.len(),
        RUN_FOR.as_secs()
    );
    assert_eq!(doubled, 0, "{sent:?}");
    assert!(during > 0, "the other replica took over: {other_log}");
    assert!(other_log.contains(HOLDS), "{other_log}");
    assert!(
        paused_log.contains("no longer holds the lease")
            || paused_log.contains("the lease was lost")
            || paused_log.contains("could not be renewed in time"),
        "{paused_log}"
    );
    // Resumed, it sends nothing: whatever it tried to claim was fenced off.
    let paused_origin = format!("gen{paused_id}@");
    let resumed_sends: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.at > resumed_at && s.origin.starts_with(&paused_origin))
        .collect();
    assert!(resumed_sends.is_empty(), "{resumed_sends:?}\n{paused_log}");
}

/// The runs of `canary` a replica logged as sent.
fn logged_runs(log: &str) -> Vec<DateTime<Utc>> {
    log.lines()
        .filter(|line| line.contains("Scheduler: Sending due task canary"))
        .filter_map(|line| line.rsplit(" for ").next()?.trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn on_rabbitmq_alone_a_replica_takes_over_from_a_killed_leader_at_once() {
    let Some(url) = amqp_url() else { return };
    let group = format!("test-{}", uuid::Uuid::new_v4().simple());
    let mut a = replica_of(&url, "rpc://", &group, "beat-a", false);
    let mut b = replica_of(&url, "rpc://", &group, "beat-b", false);
    let start = Instant::now();
    let killed_id = leader(&a, &b).0.id();
    std::thread::sleep(Duration::from_secs(5).saturating_sub(start.elapsed()));
    signal(killed_id, "KILL");
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(12).saturating_sub(start.elapsed()));
    let (killed, survivor) = if a.id() == killed_id {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    stop(survivor);
    let killed_log = killed.stderr();
    let survivor_log = survivor.stderr();
    let took_over = survivor.stderr_seen(HOLDS).expect("the survivor leads");

    let mut runs = logged_runs(&killed_log);
    let before = runs.len();
    runs.extend(logged_runs(&survivor_log));
    let distinct: std::collections::BTreeSet<_> = runs.iter().collect();
    let doubled = runs.len() - distinct.len();
    let takeover = took_over.saturating_duration_since(killed_at);
    println!(
        "beat failover on RabbitMQ: takeover {:.1} s after SIGKILL, {} runs sent ({before} before), {doubled} sent twice",
        takeover.as_secs_f64(),
        runs.len()
    );
    assert!(before > 0, "{killed_log}");
    assert!(logged_runs(&survivor_log).len() > 3, "{survivor_log}");
    assert_eq!(doubled, 0, "{killed_log}\n{survivor_log}");
    assert!(
        takeover < Duration::from_secs(3),
        "took over after {takeover:?}"
    );

    let broker = celerity::broker::AmqpBroker::connect(&url).await.unwrap();
    for queue in ["lease", "runs"] {
        broker
            .delete_queue(&format!("celerity.beat.{group}.{queue}"))
            .await
            .unwrap();
    }
    broker.close().await;
}
