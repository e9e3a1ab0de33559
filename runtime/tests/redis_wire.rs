//! What Celerity writes to Redis, byte for byte beside what Python Celery 5 writes for the
//! same call: the kombu envelope of a task message, and stored results (a success and a
//! failure). Only ids, times and the sender's identity may differ.

mod support;

use std::time::Duration;

use celerity::backend::{RedisBackend, ResultBackend};
use celerity::broker::RedisBroker;
use celerity::protocol::{ExceptionInfo, ResultMeta};
use celerity::{App, ArgSpec, SendOptions, TaskSpec, TaskState};
use redis::AsyncCommands;
use serde_json::{Map, Value, json};

static CREATE_USER: TaskSpec = TaskSpec::new(
    "tasks.create_user",
    &[
        ArgSpec::new("email", true),
        ArgSpec::new("role", true),
        ArgSpec::new("profile", false),
    ],
);

/// Makes a call with Python Celery (`apply_async` of a declared task, as
/// `create_user.delay(...)` would) and prints the envelope it wrote.
const PYTHON_SEND: &str = r#"
import sys, redis
from celery import Celery
url, queue, task_id = sys.argv[1:4]
app = Celery('wire', broker=url, backend=url)
@app.task(name='tasks.create_user')
def create_user(email, role, profile=None):
    pass
create_user.apply_async(
    args=('zoë@example.com', 'staff'),
    kwargs={'profile': {'tags': ['α', 'β'], 'age': 36, 'score': 0.5, 'active': True}},
    queue=queue, task_id=task_id, priority=5, countdown=60, expires=3600)
r = redis.Redis.from_url(url)
key = queue + '\x06\x16' + '3'
print(r.lrange(key, 0, -1)[0].decode())
r.delete(key)
"#;

/// Stores a success or a failure with Celery's Redis backend as a worker does (with the
/// task's request, whose children list is empty) and prints the stored value.
const PYTHON_STORE: &str = r#"
import sys, redis
from celery import Celery
from celery.app.task import Context
url, task_id, outcome = sys.argv[1:4]
app = Celery('wire', broker=url, backend=url)
if outcome == 'success':
    app.backend.store_result(task_id, {'id': 7, 'name': 'Zoë', 'roles': ['staff']}, 'SUCCESS',
                             request=Context(id=task_id))
else:
    app.backend.store_result(task_id, ValueError('no such plan: «gold»'), 'FAILURE',
                             traceback='Traceback (most recent call last):\n  ...\n',
                             request=Context(id=task_id))
r = redis.Redis.from_url(url)
key = 'celery-task-meta-' + task_id
print(r.get(key).decode())
r.delete(key)
"#;

fn python(python: &std::path::Path, script: &str, args: &[&str]) -> String {
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

/// Replaces what legitimately differs between two senders of the same call.
fn normalize(envelope: &mut Value) {
    let headers = &mut envelope["headers"];
    for key in ["eta", "expires"] {
        assert!(headers[key].is_string(), "{key} is set");
        headers[key] = json!("<time>");
    }
    headers["origin"] = json!("<origin>");
    // The sender's language: Celery writes "py", Celerity "rs"; no worker reads it.
    headers["lang"] = json!("<lang>");
    let properties = &mut envelope["properties"];
    properties["reply_to"] = json!("<reply_to>");
    properties["delivery_tag"] = json!("<delivery_tag>");
}

/// The envelope's text with the values [`normalize`] replaces masked in place, so the
/// rest can be compared byte for byte.
fn mask_varying(text: &str) -> String {
    let envelope: Value = serde_json::from_str(text).unwrap();
    let mut masked = text.to_owned();
    let varying = [
        ("headers", "eta"),
        ("headers", "expires"),
        ("headers", "origin"),
        ("headers", "lang"),
        ("properties", "reply_to"),
        ("properties", "delivery_tag"),
    ];
    for (section, key) in varying {
        let value = envelope[section][key].as_str().unwrap();
        let written = format!("\"{key}\": \"{value}\"");
        assert!(masked.contains(&written), "{written} is in the envelope");
        masked = masked.replace(&written, &format!("\"{key}\": \"<{key}>\""));
    }
    masked
}

#[tokio::test]
async fn a_task_message_is_what_celery_writes() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let Some(interpreter) = support::python_with_celery() else {
        return;
    };
    let queue = support::unique_queue();
    let task_id = uuid::Uuid::new_v4().to_string();
    let theirs = python(&interpreter, PYTHON_SEND, &[&url, &queue, &task_id]);

    let app = App::new(
        RedisBroker::connect(&url).await.unwrap(),
        RedisBackend::connect(&url).await.unwrap(),
    );
    let mut kwargs = Map::new();
    kwargs.insert(
        "profile".into(),
        json!({"tags": ["α", "β"], "age": 36, "score": 0.5, "active": true}),
    );
    let options = SendOptions {
        queue: Some(queue.clone()),
        task_id: Some(task_id.clone()),
        priority: Some(5),
        countdown: Some(Duration::from_secs(60)),
        expires: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    app.client()
        .send_task::<Value>(&CREATE_USER, vec![json!("zoë@example.com"), json!("staff")])
        .kwargs(kwargs)
        .with_options(options)
        .await
        .unwrap();
    let mut raw = support::raw_redis(&url).await;
    let key = format!("{queue}\x06\x163");
    let ours: Vec<String> = raw.lrange(&key, 0, -1).await.unwrap();
    let _: () = raw.del(&key).await.unwrap();

    let (theirs_text, ours_text) = (theirs, ours[0].clone());
    let mut theirs: Value = serde_json::from_str(&theirs_text).unwrap();
    let mut ours: Value = serde_json::from_str(&ours_text).unwrap();
    normalize(&mut theirs);
    normalize(&mut ours);
    // Key order included: serde_json keeps it, and kombu's JSON is ordered. The body is
    // compared as its base64 bytes.
    assert_eq!(
        serde_json::to_string_pretty(&ours).unwrap(),
        serde_json::to_string_pretty(&theirs).unwrap()
    );
    // And as written: Python's separators and `\uXXXX` escapes of non-ASCII text.
    assert_eq!(
        mask_varying(&ours_text),
        mask_varying(&theirs_text),
        "the envelope, byte for byte"
    );
}

#[tokio::test]
async fn stored_results_are_what_celery_writes() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let Some(interpreter) = support::python_with_celery() else {
        return;
    };
    let backend = RedisBackend::connect(&url).await.unwrap();
    let mut raw = support::raw_redis(&url).await;
    let failure = ExceptionInfo::new("ValueError", "builtins", "no such plan: «gold»");
    let cases = [
        (
            "success",
            ResultMeta::new(
                "",
                TaskState::Success,
                json!({"id": 7, "name": "Zoë", "roles": ["staff"]}),
            ),
        ),
        (
            "failure",
            ResultMeta::exception(
                "",
                TaskState::Failure,
                &failure,
                Some("Traceback (most recent call last):\n  ...\n".into()),
            ),
        ),
    ];
    for (outcome, mut meta) in cases {
        let their_id = uuid::Uuid::new_v4().to_string();
        let theirs = python(&interpreter, PYTHON_STORE, &[&url, &their_id, outcome]);
        meta.task_id = uuid::Uuid::new_v4().to_string();
        backend.store(&meta).await.unwrap();
        let key = format!("celery-task-meta-{}", meta.task_id);
        let ours: String = raw.get(&key).await.unwrap();
        let _: () = raw.del(&key).await.unwrap();
        let date = |s: &str| -> String {
            let v: Value = serde_json::from_str(s).unwrap();
            v["date_done"].as_str().unwrap().to_owned()
        };
        assert_eq!(
            ours.replace(&date(&ours), "<date_done>")
                .replace(&meta.task_id, "<id>"),
            theirs
                .replace(&date(&theirs), "<date_done>")
                .replace(&their_id, "<id>"),
            "the stored {outcome}, byte for byte"
        );
    }
}
