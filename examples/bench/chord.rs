//! The chord row: one chord of N `bench.add(i, i)` header tasks and a `bench.tsum` body,
//! sent with the typed canvas to a worker of its own on Redis (broker and backend). It
//! measures the time from building and sending the chord to the body's stored result, and
//! counts the chord's `celery-taskset-meta-<gid>*` keys once the body's result is there.

use std::time::{Duration, Instant};

use celerity::canvas::{Canvas, Sig, Takes, chord, group};
use celerity::{App, SendOptions, TaskCall};
use chrono::Utc;

use crate::measure::BenchResult;
use crate::redis_admin::RedisAdmin;
use crate::worker::chord_tasks::{ADD, AddArgs, TSUM};

/// Celery's key prefix for groups and chords (`celery-taskset-meta-<gid>` and its
/// `.s .t .j .d .c`).
const GROUP_META_PREFIX: &str = "celery-taskset-meta-";

/// How long the keys may take to go after the body's result is stored: the worker that
/// sends the body cleans the chord up after publishing it, while the body may already run.
const CLEANUP_GRACE: Duration = Duration::from_secs(5);

/// What one chord measured.
pub struct ChordRun {
    /// From building the chord to the body's `date_done`.
    pub seconds: f64,
    /// The chord's keys left besides its `.c` done marker.
    pub keys_left: u64,
    /// `.c` done markers left (Celery keeps one for five minutes).
    pub done_markers: u64,
}

/// A warm-up chord of ten, then the measured one of `n`, on `queue`, which a worker of
/// the chord tasks consumes alone.
pub async fn measure(
    app: &App,
    admin: &mut RedisAdmin,
    queue: &str,
    n: usize,
) -> BenchResult<ChordRun> {
    run(app, admin, queue, 10).await?;
    let measured = run(app, admin, queue, n).await?;
    eprintln!(
        "  chord: {n} header tasks and the body in {:.2} s ({:.0} tasks/s); keys left: {} \
         besides {} done marker(s)",
        measured.seconds,
        n as f64 / measured.seconds,
        measured.keys_left,
        measured.done_markers
    );
    Ok(measured)
}

async fn run(app: &App, admin: &mut RedisAdmin, queue: &str, n: usize) -> BenchResult<ChordRun> {
    let client = app.client();
    let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let group_id = uuid::Uuid::new_v4().to_string();
    let to_queue = SendOptions {
        queue: Some(queue.to_owned()),
        ..SendOptions::default()
    };

    let started_at = Utc::now();
    let started = Instant::now();
    let header = group(ids.iter().enumerate().map(|(i, id)| {
        let (x, y) = (i as i64, i as i64);
        TaskCall::new(&client, &ADD, AddArgs { x, y })
            .queue(queue)
            .task_id(id)
            .s()
    }));
    let body: Sig<Takes<Vec<i64>>, i64> =
        Sig::of_task(&TSUM, std::iter::empty(), Default::default(), &to_queue);
    // A chord's id is its header's group id (`_chord.freeze`), under which its keys live:
    // chosen here so that they can be counted afterwards.
    let mut signature = chord(header, body).into_signature()?;
    signature
        .options
        .insert("task_id".into(), group_id.clone().into());
    let total = client
        .send(Sig::<(), i64>::from_signature(signature))
        .await?;
    let sent = started.elapsed();
    let value = total.get(Duration::from_secs(600)).await?;
    let observed = started.elapsed();
    let expected = (n as i64) * (n as i64 - 1);
    if value != expected {
        return Err(format!("the chord's body returned {value}, not {expected}").into());
    }
    let done = app
        .backend()
        .get(total.id())
        .await?
        .and_then(|meta| meta.date_done)
        .as_deref()
        .and_then(celerity::protocol::parse_celery_time);
    // The body's `date_done`, as the end-to-end rows time their last result; what this
    // process saw when its stored time is missing.
    let seconds = done
        .and_then(|done| (done - started_at).to_std().ok())
        .unwrap_or(observed)
        .as_secs_f64();
    if n > 10 {
        eprintln!(
            "  chord: {n} header tasks sent in {:.2} s; the body's result seen after {:.2} s",
            sent.as_secs_f64(),
            observed.as_secs_f64()
        );
    }

    let pattern = format!("{GROUP_META_PREFIX}{group_id}*");
    let waited = Instant::now();
    let keys = loop {
        let keys = admin.keys(&pattern)?;
        if keys.iter().all(|key| key.ends_with(".c")) || waited.elapsed() > CLEANUP_GRACE {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let done_markers = keys.iter().filter(|key| key.ends_with(".c")).count() as u64;
    let run = ChordRun {
        seconds,
        keys_left: keys.len() as u64 - done_markers,
        done_markers,
    };
    let mut leftovers: Vec<String> = ids
        .iter()
        .chain([total.id().to_owned()].iter())
        .map(|id| format!("{}{id}", celerity::backend::TASK_META_PREFIX))
        .collect();
    leftovers.extend(keys);
    admin.delete(&leftovers)?;
    Ok(run)
}
