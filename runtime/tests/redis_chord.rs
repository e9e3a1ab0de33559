//! Chords and saved groups on the Redis result backend against a real Redis, in Celery
//! 5.7's keys (`celery-taskset-meta-<gid>` and its `.s .t .j .d .c`): a part counts once
//! however often it runs, exactly one of many concurrent callers gets the completed chord,
//! parts come back in header order, a finished chord leaves only its `done` marker. And
//! beside Python Celery: groups saved by one are restored by the other, and one chord's
//! parts recorded by both sides complete once, on whichever side records the last part.
#![cfg(feature = "redis")]

mod support;

use std::path::Path;

use celerity::TaskState;
use celerity::backend::{ChordJoin, ChordPart, ChordPartResult, RedisBackend, ResultBackend};
use redis::AsyncCommands;
use serde_json::{Value, json};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn key(gid: &str, suffix: &str) -> String {
    format!("celery-taskset-meta-{gid}{suffix}")
}

/// Records a part of chord `gid`.
async fn record(
    backend: &RedisBackend,
    gid: &str,
    tid: &str,
    index: Option<u64>,
    state: TaskState,
    result: Value,
) -> ChordJoin {
    let part = ChordPart {
        group_id: gid,
        task_id: tid,
        group_index: index,
        state,
        result: &result,
    };
    backend.chord_part_return(&part).await.unwrap()
}

/// Records a successful part of chord `gid`.
async fn succeed(
    backend: &RedisBackend,
    gid: &str,
    tid: &str,
    index: u64,
    result: Value,
) -> ChordJoin {
    record(backend, gid, tid, Some(index), TaskState::Success, result).await
}

fn success(tid: &str, result: Value) -> ChordPartResult {
    ChordPartResult {
        task_id: tid.to_owned(),
        state: TaskState::Success,
        result,
    }
}

/// The claim and parts of a completed chord; panics on [`ChordJoin::Waiting`].
fn complete(join: ChordJoin) -> (String, Vec<ChordPartResult>) {
    match join {
        ChordJoin::Complete { claim, parts } => (claim, parts),
        ChordJoin::Waiting => panic!("the chord should be complete"),
    }
}

/// Every key of chord `gid`, sorted.
async fn chord_keys(raw: &mut redis::aio::MultiplexedConnection, gid: &str) -> Vec<String> {
    let mut keys: Vec<String> = raw.keys(format!("{}*", key(gid, ""))).await.unwrap();
    keys.sort();
    keys
}

async fn ttl(raw: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    raw.ttl(key).await.unwrap()
}

#[tokio::test]
async fn a_part_run_twice_counts_once() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let gid = new_id();
    let tids: Vec<String> = (0..3).map(|_| new_id()).collect();
    backend.set_chord_size(&gid, 3).await.unwrap();
    assert_eq!(raw.get::<_, String>(key(&gid, ".s")).await.unwrap(), "3");
    assert!((86_390..=86_400).contains(&ttl(&mut raw, &key(&gid, ".s")).await));

    // The first part, then a redelivered copy of it that returned something else.
    assert_eq!(
        succeed(&backend, &gid, &tids[0], 0, json!(0)).await,
        ChordJoin::Waiting
    );
    assert_eq!(
        succeed(&backend, &gid, &tids[0], 0, json!(99)).await,
        ChordJoin::Waiting
    );
    assert_eq!(
        succeed(&backend, &gid, &tids[1], 1, json!("zoë")).await,
        ChordJoin::Waiting
    );

    let members: Vec<String> = raw.zrange(key(&gid, ".j"), 0, -1).await.unwrap();
    assert_eq!(
        members,
        [
            format!(r#"[1, "{}", "SUCCESS", 0]"#, tids[0]),
            format!(r#"[1, "{}", "SUCCESS", "zo\u00eb"]"#, tids[1]),
        ],
        "Celery's members, in Python's JSON"
    );
    let mut seen: Vec<String> = raw.smembers(key(&gid, ".d")).await.unwrap();
    seen.sort();
    let mut expected = vec![format!("{}:0", tids[0]), format!("{}:1", tids[1])];
    expected.sort();
    assert_eq!(seen, expected);
    for suffix in [".j", ".s", ".d"] {
        let left = ttl(&mut raw, &key(&gid, suffix)).await;
        assert!(
            (86_390..=86_400).contains(&left),
            "{suffix} expires with the results: {left}"
        );
    }
    assert!(
        !raw.exists::<_, bool>(key(&gid, ".c")).await.unwrap(),
        "no claim yet"
    );

    let (claim, parts) = complete(succeed(&backend, &gid, &tids[2], 2, json!(2)).await);
    assert_eq!(
        parts,
        [
            success(&tids[0], json!(0)),
            success(&tids[1], json!("zoë")),
            success(&tids[2], json!(2))
        ]
    );
    assert_eq!(
        claim.len(),
        32,
        "a uuid4 hex, as Celery's claim token: {claim}"
    );
    assert_eq!(raw.get::<_, String>(key(&gid, ".c")).await.unwrap(), claim);
    let left = ttl(&mut raw, &key(&gid, ".c")).await;
    assert!(
        (50..=60).contains(&left),
        "the claim was extended to send the body: {left}"
    );

    // Another copy of the last part, while the body is being sent: not complete again.
    assert_eq!(
        succeed(&backend, &gid, &tids[2], 2, json!(2)).await,
        ChordJoin::Waiting
    );
    backend.chord_finish(&gid, &claim, false).await.unwrap();
}

#[tokio::test]
async fn a_task_added_to_the_header_is_waited_for() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let gid = new_id();
    backend.set_chord_size(&gid, 1).await.unwrap();
    // Celery's `add_to_chord` (a task replaced by a group, say): INCR `.t`.
    let _: i64 = raw.incr(key(&gid, ".t"), 1).await.unwrap();
    assert_eq!(
        succeed(&backend, &gid, &new_id(), 0, json!(1)).await,
        ChordJoin::Waiting
    );
    let (claim, parts) = complete(succeed(&backend, &gid, &new_id(), 1, json!(2)).await);
    assert_eq!(parts.len(), 2);
    backend.chord_finish(&gid, &claim, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_many_concurrent_callers_gets_the_completed_chord() {
    let Some(url) = support::redis_url() else {
        return;
    };
    // Two workers, each with its own connection.
    let workers = [
        RedisBackend::connect(&url).await.unwrap(),
        RedisBackend::connect(&url).await.unwrap(),
    ];
    let gid = new_id();
    let tids: Vec<String> = (0..20).map(|_| new_id()).collect();
    workers[0].set_chord_size(&gid, tids.len()).await.unwrap();

    // Every part twice (a redelivery), each copy on the other worker.
    let mut calls = tokio::task::JoinSet::new();
    for (index, tid) in tids.iter().enumerate() {
        for copy in 0..2 {
            let backend = workers[(index + copy) % 2].clone();
            let (gid, tid) = (gid.clone(), tid.clone());
            calls.spawn(async move {
                succeed(&backend, &gid, &tid, index as u64, json!(index * 10)).await
            });
        }
    }
    let mut completions = Vec::new();
    while let Some(join) = calls.join_next().await {
        if let ChordJoin::Complete { claim, parts } = join.unwrap() {
            completions.push((claim, parts));
        }
    }
    assert_eq!(
        completions.len(),
        1,
        "exactly one caller completes the chord"
    );
    let (claim, parts) = completions.pop().unwrap();
    let expected: Vec<ChordPartResult> = tids
        .iter()
        .enumerate()
        .map(|(index, tid)| success(tid, json!(index * 10)))
        .collect();
    assert_eq!(parts, expected, "each part once, in header order");
    workers[1].chord_finish(&gid, &claim, false).await.unwrap();
}

#[tokio::test]
async fn parts_come_back_in_header_order_with_their_states_and_results() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let gid = new_id();
    let tids: Vec<String> = (0..5).map(|_| new_id()).collect();
    let failure =
        json!({"exc_type": "ValueError", "exc_message": ["no «gold»"], "exc_module": "builtins"});
    let revoked = json!({"exc_type": "TaskRevokedError", "exc_message": ["revoked"], "exc_module": "celery.exceptions"});
    let recorded = [
        (3, Some(3), TaskState::Revoked, revoked.clone()),
        (4, None, TaskState::Success, json!(null)),
        (1, Some(1), TaskState::Failure, failure.clone()),
        (2, Some(2), TaskState::Success, json!({"name": "Zoë"})),
    ];
    backend.set_chord_size(&gid, 5).await.unwrap();
    for (i, index, state, result) in recorded {
        let join = record(&backend, &gid, &tids[i], index, state, result).await;
        assert_eq!(join, ChordJoin::Waiting);
    }
    let (claim, parts) = complete(succeed(&backend, &gid, &tids[0], 0, json!([1, 2])).await);
    let part = |i: usize, state: TaskState, result: &Value| ChordPartResult {
        task_id: tids[i].clone(),
        state,
        result: result.clone(),
    };
    assert_eq!(
        parts,
        [
            part(0, TaskState::Success, &json!([1, 2])),
            part(1, TaskState::Failure, &failure),
            part(2, TaskState::Success, &json!({"name": "Zoë"})),
            part(3, TaskState::Revoked, &revoked),
            part(4, TaskState::Success, &json!(null)),
        ],
        "by group_index; a part without one (scored +inf) last"
    );
    assert!(
        raw.sismember::<_, _, bool>(key(&gid, ".d"), format!("{}:+inf", tids[4]))
            .await
            .unwrap()
    );
    // A failed chord is returned as Celery's `ChordError` path sees it: the claim is not
    // extended past its first 6 s.
    let left = ttl(&mut raw, &key(&gid, ".c")).await;
    assert!(
        (1..=6).contains(&left),
        "the claim is Celery's 6 s one: {left}"
    );
    backend.chord_finish(&gid, &claim, true).await.unwrap();
}

#[tokio::test]
async fn a_finished_chord_leaves_only_its_done_marker() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let gid = new_id();
    let tids = [new_id(), new_id()];
    backend.set_chord_size(&gid, 2).await.unwrap();
    let _: i64 = raw.incr(key(&gid, ".t"), 0).await.unwrap();
    assert_eq!(
        succeed(&backend, &gid, &tids[0], 0, json!(1)).await,
        ChordJoin::Waiting
    );
    let (claim, _) = complete(succeed(&backend, &gid, &tids[1], 1, json!(2)).await);
    let every = [".c", ".d", ".j", ".s", ".t"].map(|s| key(&gid, s));
    assert_eq!(chord_keys(&mut raw, &gid).await, every);

    // A finish under a claim that is not (or no longer) the caller's changes nothing.
    backend
        .chord_finish(&gid, "0123456789abcdef0123456789abcdef", false)
        .await
        .unwrap();
    assert_eq!(chord_keys(&mut raw, &gid).await, every);

    backend.chord_finish(&gid, &claim, false).await.unwrap();
    assert_eq!(chord_keys(&mut raw, &gid).await, [key(&gid, ".c")]);
    assert_eq!(raw.get::<_, String>(key(&gid, ".c")).await.unwrap(), "done");
    let left = ttl(&mut raw, &key(&gid, ".c")).await;
    assert!(
        (290..=300).contains(&left),
        "Celery keeps `done` for 300 s: {left}"
    );

    // A late copy of a header task neither completes the chord again nor brings it back.
    assert_eq!(
        succeed(&backend, &gid, &tids[1], 1, json!(2)).await,
        ChordJoin::Waiting
    );
    assert_eq!(chord_keys(&mut raw, &gid).await, [key(&gid, ".c")]);

    // Applying the chord again (a frozen chord reused) is a new run: `.c` goes.
    backend.set_chord_size(&gid, 1).await.unwrap();
    assert_eq!(chord_keys(&mut raw, &gid).await, [key(&gid, ".s")]);
    let (claim, _) = complete(succeed(&backend, &gid, &tids[0], 0, json!(3)).await);
    backend.chord_finish(&gid, &claim, false).await.unwrap();
    assert_eq!(chord_keys(&mut raw, &gid).await, [key(&gid, ".c")]);
}

#[tokio::test]
async fn a_failed_chord_s_finish_drops_only_its_size() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let gid = new_id();
    let tids = [new_id(), new_id()];
    let failure =
        json!({"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"});
    backend.set_chord_size(&gid, 2).await.unwrap();
    let join = record(
        &backend,
        &gid,
        &tids[0],
        Some(0),
        TaskState::Failure,
        failure,
    )
    .await;
    assert_eq!(join, ChordJoin::Waiting);
    let (claim, parts) = complete(succeed(&backend, &gid, &tids[1], 1, json!(2)).await);
    assert_eq!(parts[0].state, TaskState::Failure);

    backend.chord_finish(&gid, &claim, true).await.unwrap();
    assert_eq!(
        chord_keys(&mut raw, &gid).await,
        [".c", ".d", ".j"].map(|s| key(&gid, s)),
        "the size goes; the parts stay, to expire, as Celery leaves them"
    );
    // A late copy of a part cannot fail the chord again: without a size it never completes.
    assert_eq!(
        succeed(&backend, &gid, &tids[1], 1, json!(2)).await,
        ChordJoin::Waiting
    );
    let _: () = raw
        .del(&[key(&gid, ".c"), key(&gid, ".d"), key(&gid, ".j")])
        .await
        .unwrap();
}

/// Runs `script` with Python Celery and returns what it printed.
fn python(python: &Path, script: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(python)
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

/// Saves a group with Celery (`GroupResult.save`) and prints the value stored.
const PYTHON_SAVE_GROUP: &str = r#"
import sys, json, redis
from celery import Celery
url, gid, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
app = Celery('chord', broker=url, backend=url)
app.GroupResult(gid, [app.AsyncResult(i) for i in ids]).save()
print(redis.Redis.from_url(url).get('celery-taskset-meta-' + gid).decode())
"#;

/// Restores a group with Celery (`GroupResult.restore`) and prints its task ids, or null.
const PYTHON_RESTORE_GROUP: &str = r#"
import sys, json
from celery import Celery
from celery.result import GroupResult
url, gid = sys.argv[1:3]
app = Celery('chord', broker=url, backend=url)
group = GroupResult.restore(gid, app=app)
print(json.dumps(None if group is None else [r.id for r in group.results]))
"#;

#[tokio::test]
async fn groups_saved_by_either_side_are_restored_by_the_other() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let Some(interpreter) = support::python_with_celery() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    let ids_json = serde_json::to_string(&ids).unwrap();

    // Python saves, Celerity restores.
    let theirs_gid = new_id();
    let theirs = python(
        &interpreter,
        PYTHON_SAVE_GROUP,
        &[&url, &theirs_gid, &ids_json],
    );
    assert_eq!(
        backend.restore_group(&theirs_gid).await.unwrap(),
        Some(ids.clone())
    );

    // Celerity saves, byte for byte as Python did, and Python restores.
    let ours_gid = new_id();
    backend.save_group(&ours_gid, &ids).await.unwrap();
    let ours: String = raw.get(key(&ours_gid, "")).await.unwrap();
    assert_eq!(ours, theirs.replace(&theirs_gid, &ours_gid));
    let left = ttl(&mut raw, &key(&ours_gid, "")).await;
    assert!(
        (86_390..=86_400).contains(&left),
        "kept for result_expires: {left}"
    );
    let restored = python(&interpreter, PYTHON_RESTORE_GROUP, &[&url, &ours_gid]);
    assert_eq!(serde_json::from_str::<Vec<String>>(&restored).unwrap(), ids);

    // Deleted, by either side's reckoning.
    for gid in [&theirs_gid, &ours_gid] {
        backend.delete_group(gid).await.unwrap();
        assert_eq!(backend.restore_group(gid).await.unwrap(), None);
    }
    assert_eq!(
        python(&interpreter, PYTHON_RESTORE_GROUP, &[&url, &ours_gid]),
        "null"
    );

    // What is not a saved group is an error, not an empty group.
    let _: () = raw.set(key(&ours_gid, ""), "not json").await.unwrap();
    let error = backend.restore_group(&ours_gid).await.unwrap_err();
    assert_eq!(error.kind(), celerity::ErrorKind::Decode, "{error}");
    backend.delete_group(&ours_gid).await.unwrap();
}

/// Runs header tasks of chord `gid` through Celery's own `on_chord_part_return`, as a
/// Python worker does after each, with the body `t.body` sent to `queue`; first sets the
/// chord's size when it is not 0. Prints, for each part, whether that call sent the body.
const PYTHON_CHORD_PARTS: &str = r#"
import sys, json, redis
from celery import Celery, signature
from celery.app.task import Context
url, gid, queue, size, parts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
app = Celery('chord', broker=url, backend=url)
if size:
    app.backend.set_chord_size(gid, size)
body = signature('t.body', queue=queue, app=app)
r = redis.Redis.from_url(url)
for tid, index, result in parts:
    before = r.llen(queue)
    request = Context(id=tid, group=gid, group_index=index, chord=body)
    app.backend.on_chord_part_return(request, 'SUCCESS', result)
    print(json.dumps(r.llen(queue) - before))
"#;

/// The parts `[tid, index, result]` of `tids` at `indexes`, for [`PYTHON_CHORD_PARTS`].
fn python_parts(tids: &[String], indexes: std::ops::Range<usize>) -> String {
    let parts: Vec<Value> = indexes.map(|i| json!([tids[i], i, i * 2])).collect();
    serde_json::to_string(&parts).unwrap()
}

#[tokio::test]
async fn a_chord_shared_with_python_completes_once_on_the_side_with_the_last_part() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let Some(interpreter) = support::python_with_celery() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let queue = support::unique_queue();
    let tids: Vec<String> = (0..4).map(|_| new_id()).collect();

    // Celerity applies the chord and records the last parts; Python records the first.
    let gid = new_id();
    backend.set_chord_size(&gid, 4).await.unwrap();
    let printed = python(
        &interpreter,
        PYTHON_CHORD_PARTS,
        &[&url, &gid, &queue, "0", &python_parts(&tids, 0..2)],
    );
    assert_eq!(printed, "0\n0", "Python's parts do not complete the chord");
    assert_eq!(
        succeed(&backend, &gid, &tids[2], 2, json!(4)).await,
        ChordJoin::Waiting
    );
    let (claim, parts) = complete(succeed(&backend, &gid, &tids[3], 3, json!(6)).await);
    let expected: Vec<ChordPartResult> = (0..4).map(|i| success(&tids[i], json!(i * 2))).collect();
    assert_eq!(parts, expected, "Python's parts read as Celerity's");
    backend.chord_finish(&gid, &claim, false).await.unwrap();
    // A late copy on the Python side finds the chord done.
    let printed = python(
        &interpreter,
        PYTHON_CHORD_PARTS,
        &[&url, &gid, &queue, "0", &python_parts(&tids, 3..4)],
    );
    assert_eq!(printed, "0");
    assert_eq!(chord_keys(&mut raw, &gid).await, [key(&gid, ".c")]);
    assert_eq!(raw.get::<_, String>(key(&gid, ".c")).await.unwrap(), "done");

    // Python applies the chord and records the last part; Celerity records the first.
    let gid = new_id();
    let printed = python(
        &interpreter,
        PYTHON_CHORD_PARTS,
        &[&url, &gid, &queue, "4", "[]"],
    );
    assert_eq!(printed, "");
    for (i, tid) in tids.iter().enumerate().take(3) {
        let join = succeed(&backend, &gid, tid, i as u64, json!(i * 2)).await;
        assert_eq!(join, ChordJoin::Waiting);
    }
    let printed = python(
        &interpreter,
        PYTHON_CHORD_PARTS,
        &[&url, &gid, &queue, "0", &python_parts(&tids, 3..4)],
    );
    assert_eq!(
        printed, "1",
        "Python completes the chord and sends the body"
    );
    let sent: Vec<String> = raw.lrange(&queue, 0, -1).await.unwrap();
    let envelope: Value = serde_json::from_str(&sent[0]).unwrap();
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD
        .decode(envelope["body"].as_str().unwrap())
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body[0],
        json!([[0, 2, 4, 6]]),
        "Celerity's parts reach Python's body, in order"
    );
    assert_eq!(raw.get::<_, String>(key(&gid, ".c")).await.unwrap(), "done");
    // A late copy on the Celerity side finds the chord done.
    assert_eq!(
        succeed(&backend, &gid, &tids[0], 0, json!(0)).await,
        ChordJoin::Waiting
    );
    assert_eq!(chord_keys(&mut raw, &gid).await, [key(&gid, ".c")]);

    let _: () = raw
        .del(&[queue.clone(), format!("_kombu.binding.{queue}")])
        .await
        .unwrap();
}
