//! The scheduler in-process, on the embedded broker: its record of runs survives a
//! restart, so a scheduler stopped and started again sends no run twice and misses none,
//! and the runs missed while it was down are sent once, not once each. With a state file,
//! and with the record in Redis (which skips without Redis unless
//! `CELERITY_REQUIRE_BROKERS=1`).

use std::future::Future;
use std::time::Duration;

use celerity::beat::{Beat, BeatSettings, RUN_HEADER, Recurrence, Schedule};
use celerity::{App, TaskSpec};
use chrono::{DateTime, Utc};
use serde_json::Value;

mod support;
#[cfg(feature = "redis")]
use support::redis_url;
use support::unique_queue;

static TICK: TaskSpec = TaskSpec::new("beat.tick", &[]);

fn no_args() -> celerity::Result<Vec<Value>> {
    Ok(Vec::new())
}

/// A schedule every second, to a queue of the test's own.
fn every_second() -> Schedule {
    let queue: &'static str = Box::leak(unique_queue().into_boxed_str());
    Schedule::new(
        "every-second",
        &TICK,
        no_args,
        Recurrence::Every(Duration::from_secs(1)),
    )
    .queue(queue)
}

/// The runs sent to the schedule's queue, in the order they were sent.
async fn sent(app: &App, schedule: &Schedule) -> Vec<DateTime<Utc>> {
    let queue = [schedule.queue_name().to_owned()];
    let mut consumer = app.broker().consume(&queue).await.unwrap();
    let mut runs = Vec::new();
    while let Ok(delivery) = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
    {
        let (message, _, _, acker) = delivery.unwrap().into_parts();
        assert_eq!(message.headers["periodic_task_name"], "every-second");
        assert_eq!(message.headers["celery_beat_task"], true);
        runs.push(
            message.headers[RUN_HEADER]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
        acker.ack().await.unwrap();
    }
    runs
}

/// Runs a scheduler made by `beat` for `phases` (how long it runs, then how long it stays
/// down), and checks what was sent: each run once; no run missed across an immediate
/// restart; one run, the latest, for all those missed during a downtime.
async fn restarts<F, Fut>(app: &App, schedule: Schedule, beat: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Beat>,
{
    let mut downtimes = Vec::new();
    for (running, down) in [(2_500, 0), (2_200, 3_200), (1_600, 0)] {
        let handle = beat().await.spawn();
        tokio::time::sleep(Duration::from_millis(running)).await;
        handle.stop().await;
        let stopped = Utc::now();
        tokio::time::sleep(Duration::from_millis(down)).await;
        downtimes.push((stopped, Utc::now()));
    }
    let runs = sent(app, &schedule).await;
    let mut sorted = runs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, runs, "each run sent once, in order: {runs:?}");
    let gaps: Vec<i64> = runs
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).num_seconds())
        .collect();
    // Every run while a scheduler ran, and across the immediate restart; across the
    // 3.2 s downtime, two or three runs were missed and the latest of them sent once, as
    // soon as the scheduler was back.
    let skipped: Vec<i64> = gaps.iter().copied().filter(|gap| *gap > 1).collect();
    assert_eq!(skipped.len(), 1, "one gap, the downtime's: {runs:?}");
    assert!((3..=4).contains(&skipped[0]), "{runs:?}");
    let (down_from, back_at) = downtimes[1];
    let caught_up = runs
        .iter()
        .find(|run| **run > down_from)
        .expect("runs after the downtime");
    assert!(
        *caught_up <= back_at,
        "the latest missed run ({caught_up}) is sent when the scheduler is back ({back_at})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_with_a_state_file_sends_no_run_twice() {
    let app = App::memory();
    let schedule = every_second();
    let state = std::env::temp_dir().join(format!("{}.json", schedule.queue_name()));
    restarts(&app, schedule, || async {
        let settings = BeatSettings::default().state_file(&state);
        Beat::local(app.client(), &[schedule], settings).unwrap()
    })
    .await;
    let record: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(record["every-second"].is_i64(), "{record:?}");
    std::fs::remove_file(&state).unwrap();
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_with_its_record_in_redis_sends_no_run_twice() {
    let Some(url) = redis_url() else { return };
    let app = App::memory();
    let schedule = every_second();
    let group = schedule.queue_name();
    restarts(&app, schedule, || async {
        let settings = BeatSettings::default()
            .group(group)
            .lease(Duration::from_secs(3));
        Beat::redis(app.client(), &[schedule], &url, settings)
            .await
            .unwrap()
    })
    .await;
    let mut redis = support::raw_redis(&url).await;
    let runs: i64 = redis::cmd("HGET")
        .arg(format!("celerity.beat.{group}.runs"))
        .arg("every-second")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(runs > 0);
    let () = redis::cmd("DEL")
        .arg(format!("celerity.beat.{group}.runs"))
        .arg(format!("celerity.beat.{group}.claimed_by"))
        .query_async(&mut redis)
        .await
        .unwrap();
}
