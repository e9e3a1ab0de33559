//! The interop cases, written once and run by each transport's suite.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity::beat::{Beat, BeatSettings, run_id};
use celerity::canvas::{Sig, Signature, Takes, chain, chord, group};
use celerity::{AsyncResult, Decimal, ResultError, TaskFailure, TaskState};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};

use super::python::{Call, Python};
use super::rust_worker;
use super::tasks::{self, Address, Customer, Profile, Scheduled, TasksRegistry};
use super::transport::Transport;
use super::unique_queue;

/// How long any one result may take: every case finishes in a few seconds when things
/// work, so this only bounds a failure.
const WAIT: Duration = Duration::from_secs(30);

/// A customer with nested structures, an optional struct, a map, dates and non-ASCII text.
pub fn customer() -> Customer {
    Customer {
        name: "Zoë Ødegård 東京 😀".into(),
        tags: vec!["vip".into(), "früh".into()],
        address: Some(Address {
            street: "1 Rue de l'Église".into(),
            city: "Zürich".into(),
            country: "CH".into(),
        }),
        scores: BTreeMap::from([("loyalty".into(), 1.5), ("spend".into(), 2.25)]),
        joined: NaiveDate::from_ymd_opt(2024, 1, 2).expect("a date"),
        last_seen: last_seen(),
    }
}

fn last_seen() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 10, 0, 0).unwrap() + chrono::Duration::microseconds(123_456)
}

/// What `interop.profile` answers for [`customer`], on either side.
pub fn expected_profile() -> Profile {
    Profile {
        greeting: "Hello, Zoë Ødegård 東京 😀!".into(),
        tag_count: 2,
        city: Some("Zürich".into()),
        total_score: 3.75,
        member_for_days: 59,
        next_visit: last_seen() + chrono::Duration::days(1),
    }
}

/// [`customer`] as Python code builds it: a dict with real `date` and `datetime` objects.
fn python_customer() -> Value {
    json!({
        "name": "Zoë Ødegård 東京 😀",
        "tags": ["vip", "früh"],
        "address": {"street": "1 Rue de l'Église", "city": "Zürich"},
        "scores": {"loyalty": 1.5, "spend": 2.25},
        "joined": {"$date": "2024-01-02"},
        "last_seen": {"$datetime": "2024-03-01T10:00:00.123456+00:00"},
    })
}

fn failure<T: std::fmt::Debug>(outcome: Result<T, ResultError>, what: &str) -> TaskFailure {
    match outcome {
        Err(ResultError::Failed(failure)) => failure,
        other => panic!("{what}: expected a failure, got {other:?}"),
    }
}

/// The distinct states of a result until it is ready, polled as a client would.
async fn states_until_ready(result: AsyncResult<Value>) -> Vec<TaskState> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen: Vec<TaskState> = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let state = result.state().await.expect("the result backend answers");
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// Whether `states` contains `expected` in that order (other states may come between).
fn went_through<S: std::fmt::Display>(states: &[S], expected: &[&str]) -> bool {
    let mut states = states.iter().map(ToString::to_string);
    expected
        .iter()
        .all(|want| states.any(|state| state == *want))
}

fn time(text: &Value) -> DateTime<Utc> {
    let text = match text {
        Value::String(text) => text,
        Value::Object(tagged) => tagged
            .get("$datetime")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{text} is not a datetime")),
        other => panic!("{other} is not a time"),
    };
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// Rust → Python: the generated client sends tasks that a Python Celery worker runs.
pub async fn rust_client_python_worker(transport: &Transport, python: &Python) {
    let queue = unique_queue("to-python");
    let worker = python.worker(transport, &queue).await;
    let app = transport.app().await;
    let tasks = TasksRegistry::new(app.client());
    let client = app.client();
    let two_seconds = Duration::from_secs(2);

    let add = tasks.add(2, 40).queue(&queue).await.unwrap();
    let unicode = tasks
        .greet("Zoë 東京 😀".into())
        .with_greeting("Grüß Gott".into())
        .with_punctuation("!".into())
        .queue(&queue)
        .await
        .unwrap();
    // Untyped sends leave arguments out, so Python's own defaults apply.
    let defaults = client
        .send_task::<String>(&tasks::GREET, vec![json!("Ada")])
        .queue(&queue)
        .await
        .unwrap();
    let kwargs = client
        .send_task::<String>(&tasks::GREET, vec![])
        .kwarg("punctuation", json!("?"))
        .kwarg("name", json!("Zoë"))
        .queue(&queue)
        .await
        .unwrap();
    let profile = tasks.profile(customer()).queue(&queue).await.unwrap();
    let declined = tasks
        .charge("4000000000000002".into(), 500)
        .queue(&queue)
        .await
        .unwrap();
    let invalid = tasks
        .charge("4242424242424242".into(), 0)
        .queue(&queue)
        .await
        .unwrap();
    let quota = tasks.quota("acme".into(), 5).queue(&queue).await.unwrap();
    let decimal = |text: &str| text.parse::<Decimal>().unwrap();
    let tenths = tasks
        .total(vec![decimal("0.1"), decimal("0.2")])
        .queue(&queue)
        .await
        .unwrap();
    let beyond_f64 = tasks
        .total(vec![decimal("12345678901234567890.12"), decimal("0.01")])
        .queue(&queue)
        .await
        .unwrap();
    let retried = tasks.flaky(2).queue(&queue).await.unwrap();
    let retry_states = tokio::spawn(states_until_ready(client.result(retried.id())));
    let exhausted = tasks.flaky(5).queue(&queue).await.unwrap();
    let expired = tasks
        .add(1, 1)
        .countdown(two_seconds)
        .expires(Duration::from_secs(1))
        .queue(&queue)
        .await
        .unwrap();
    let before = Utc::now();
    let delayed = tasks
        .timing()
        .countdown(two_seconds)
        .queue(&queue)
        .await
        .unwrap();
    let after = Utc::now();

    assert_eq!(add.get(WAIT).await.unwrap(), 42, "positional arguments");
    assert_eq!(unicode.get(WAIT).await.unwrap(), "Grüß Gott, Zoë 東京 😀!");
    assert_eq!(
        defaults.get(WAIT).await.unwrap(),
        "Hello, Ada!",
        "Python's defaults"
    );
    assert_eq!(
        kwargs.get(WAIT).await.unwrap(),
        "Hello, Zoë?",
        "keyword arguments"
    );
    assert_eq!(
        profile.get(WAIT).await.unwrap(),
        expected_profile(),
        "nested structures and dates, and Python's datetime result read back"
    );

    let declined = failure(declined.get(WAIT).await, "a declined card");
    assert_eq!(
        (declined.exc_type.as_str(), declined.message.as_str()),
        ("PaymentDeclined", "card 4000000000000002 was declined")
    );
    assert_eq!(declined.exc_module.as_deref(), Some("interop_app"));
    assert!(
        declined
            .traceback
            .as_deref()
            .is_some_and(|t| t.contains("raise PaymentDeclined")),
        "Python's traceback comes along: {:?}",
        declined.traceback
    );
    let invalid = failure(invalid.get(WAIT).await, "an invalid amount");
    assert_eq!(
        (
            invalid.exc_type.as_str(),
            invalid.exc_module.as_deref(),
            invalid.message.as_str()
        ),
        (
            "ValueError",
            Some("builtins"),
            "amount must be positive, got 0"
        )
    );

    let quota = failure(quota.get(WAIT).await, "an exception with two arguments");
    assert_eq!(
        quota.args,
        [json!("account acme over quota"), json!(5)],
        "Python's exc.args, as values"
    );
    assert_eq!(
        quota.message, "('account acme over quota', 5)",
        "str(ValueError('account acme over quota', 5))"
    );
    assert_eq!(
        tenths.get(WAIT).await.unwrap(),
        decimal("0.3"),
        "Decimal('0.1') + Decimal('0.2') == Decimal('0.3') in Python, read back exactly"
    );
    assert_eq!(
        beyond_f64.get(WAIT).await.unwrap().to_string(),
        "12345678901234567890.13",
        "more digits than a float holds"
    );

    assert_eq!(
        retried.get(WAIT).await.unwrap(),
        2,
        "retried twice, then succeeded"
    );
    let states = retry_states.await.unwrap();
    assert!(
        went_through(&states, &["RETRY", "SUCCESS"]),
        "RETRY is visible while Python waits to retry: {states:?}"
    );
    let exhausted = failure(exhausted.get(WAIT).await, "retries run out");
    assert_eq!(
        (exhausted.exc_type.as_str(), exhausted.message.as_str()),
        ("GatewayTimeout", "attempt 4 timed out"),
        "after max_retries (3) the last error is the failure"
    );

    match expired.get(WAIT).await {
        Err(ResultError::Revoked(revoked)) => assert_eq!(
            (revoked.exc_type.as_str(), revoked.message.as_str()),
            ("TaskRevokedError", "expired")
        ),
        other => panic!("a task past its expiry is revoked, got {other:?}"),
    }
    assert_eq!(expired.state().await.unwrap(), TaskState::Revoked);

    let timing = delayed.get(WAIT).await.unwrap();
    let eta = timing.eta.expect("the message's eta");
    assert!(
        eta >= before + two_seconds && eta <= after + two_seconds,
        "the countdown became an eta 2 s after sending: {eta} (sent {before}..{after})"
    );
    assert!(
        timing.ran_at >= eta - chrono::Duration::milliseconds(50),
        "ran at {} before its eta {eta}",
        timing.ran_at
    );
    drop(worker);
}

/// Python → Rust: Python code sends tasks that a Celerity worker runs.
pub async fn python_client_rust_worker(transport: &Transport, python: &Python) {
    let queue = unique_queue("to-rust");
    let app = transport.app().await;
    let worker = rust_worker::start(&app, &queue).await;
    let calls = [
        Call::send_task("add", "interop.add").args(json!([2, 3])),
        Call::apply_async("greet-kwargs", "interop.greet")
            .kwargs(json!({"name": "Zoë 東京 😀", "greeting": "Grüß Gott"})),
        Call::send_task("greet-defaults", "interop.greet").args(json!(["Ada"])),
        Call::apply_async("profile", "interop.profile").args(json!([python_customer()])),
        Call::send_task("priority", "interop.add")
            .args(json!([20, 22]))
            .option("priority", json!(9)),
        Call::send_task("countdown", "interop.timing").option("countdown", json!(2)),
        Call::send_task("expires", "interop.add")
            .args(json!([1, 1]))
            .option("countdown", json!(2))
            .option("expires", json!(1)),
        Call::send_task("declined", "interop.charge").args(json!(["4000000000000002", 500])),
        Call::apply_async("invalid", "interop.charge").args(json!(["4242424242424242", 0])),
        Call::send_task("started", "interop.slow").args(json!([1.0])),
        Call::send_task("total", "interop.total")
            .args(json!([[{"$decimal": "0.1"}, {"$decimal": "0.2"}]])),
        Call::send_task("total-beyond-f64", "interop.total").args(json!([[
            {"$decimal": "12345678901234567890.12"},
            {"$decimal": "0.01"}
        ]])),
        Call::send_task("decimal-as-f64", "interop.slow").args(json!([{"$decimal": "0.5"}])),
        Call::apply_async("retried", "interop.flaky").args(json!([2])),
        Call::send_task("unknown", "interop.missing").args(json!([1])),
    ];
    let seen = python.drive(transport, &queue, &calls, WAIT).await;

    assert_eq!(seen.result("add"), &json!(5), "send_task with args");
    assert_eq!(
        seen.result("greet-kwargs"),
        &json!("Grüß Gott, Zoë 東京 😀!"),
        "apply_async with kwargs; the schema's default fills `punctuation`"
    );
    assert_eq!(seen.result("greet-defaults"), &json!("Hello, Ada!"));
    assert_eq!(
        seen.result("profile"),
        &json!({
            "greeting": "Hello, Zoë Ødegård 東京 😀!",
            "tag_count": 2,
            "city": "Zürich",
            "total_score": 3.75,
            "member_for_days": 59,
            "next_visit": "2024-03-02T10:00:00.123456Z",
        }),
        "Python's date and datetime arguments decode; Celerity answers with ISO text"
    );
    assert_eq!(seen.result("priority"), &json!(42), "a priority 9 message");

    let countdown = seen.result("countdown");
    let sent = time(&json!(seen.get("countdown").sent_at));
    let eta = time(&countdown["eta"]);
    let held = (eta - sent).to_std().unwrap_or_default();
    assert!(
        held >= Duration::from_millis(1900) && held <= Duration::from_millis(2500),
        "the eta is the countdown after sending: {held:?}"
    );
    assert!(
        time(&countdown["ran_at"]) >= eta,
        "ran before its eta: {countdown}"
    );

    let expired = seen.exception("expires");
    assert_eq!(
        (
            expired.type_name.as_str(),
            expired.module.as_str(),
            expired.message.as_str()
        ),
        ("TaskRevokedError", "celery.exceptions", "expired")
    );
    assert_eq!(seen.get("expires").states.last().unwrap(), "REVOKED");

    let declined = seen.exception("declined");
    assert_eq!(
        (declined.type_name.as_str(), declined.message.as_str()),
        ("PaymentDeclined", "card 4000000000000002 was declined"),
        "the schema's error type and message, raised in Python"
    );
    let invalid = seen.exception("invalid");
    assert!(
        invalid.is_value_error,
        "TaskError::python(\"ValueError\", \"builtins\", …) raises a real ValueError: {invalid:?}"
    );
    assert_eq!(invalid.message, "amount must be positive, got 0");
    assert_eq!(seen.get("invalid").states.last().unwrap(), "FAILURE");

    assert_eq!(
        seen.result("total"),
        &json!({"$decimal": "0.3"}),
        "Python's Decimals arrive exact, and Python reads a Decimal back"
    );
    assert_eq!(
        seen.result("total-beyond-f64"),
        &json!({"$decimal": "12345678901234567890.13"})
    );
    assert_eq!(
        seen.result("decimal-as-f64"),
        &json!("rust"),
        "a Decimal sent to an f64 argument arrives as the nearest float"
    );
    let started = seen.get("started");
    assert_eq!(seen.result("started"), &json!("rust"));
    assert!(
        went_through(&started.states, &["STARTED", "SUCCESS"]),
        "STARTED is visible from Python: {:?}",
        started.states
    );
    let retried = seen.get("retried");
    assert_eq!(seen.result("retried"), &json!(2));
    assert!(
        went_through(&retried.states, &["RETRY", "SUCCESS"]),
        "RETRY is visible from Python: {:?}",
        retried.states
    );

    let unknown = seen.exception("unknown");
    assert_eq!(
        (unknown.type_name.as_str(), unknown.module.as_str()),
        ("NotRegistered", "celery.exceptions"),
        "a task the worker does not know fails as in Celery"
    );
    assert_eq!(unknown.args, [json!("interop.missing")]);
    worker.shutdown().await;
}

/// Python reads what a Celerity worker with extended results stored, as it reads a
/// Celery worker's: `AsyncResult.name`, `.args`, `.kwargs`, `.worker`, `.retries` and
/// `.queue`, the parent of a chain step, and a traceback for every failure (an error, a
/// panic) whose last line is the exception. A `ValueError` with two arguments made in
/// Rust is raised in Python with both.
pub async fn python_reads_celerity_results(transport: &Transport, python: &Python) {
    let queue = unique_queue("extended");
    let app = transport.app().await;
    let node = format!("celerity-{}@interop", uuid::Uuid::new_v4().simple());
    let worker = rust_worker::start_extended(&app, &queue, &node).await;
    let step = |args: Value| json!({"task": "interop.add", "args": args});
    let calls = [
        Call::apply_async("greet", "interop.greet")
            .args(json!(["Zoë"]))
            .kwargs(json!({"greeting": "Grüß Gott"})),
        Call::send_task("retried", "interop.flaky").args(json!([1])),
        // Each step names the queue: the Celerity worker does not know Python's routing.
        Call::chain("chain", json!([step(json!([1, 2])), step(json!([10]))]))
            .option("queue", json!(queue)),
        Call::send_task("declined", "interop.charge").args(json!(["4000000000000002", 500])),
        Call::send_task("crash", "interop.crash").args(json!(["ledger 7 is locked"])),
        Call::send_task("quota", "interop.quota").args(json!(["acme", 5])),
    ];
    let seen = python.drive(transport, &queue, &calls, WAIT).await;

    assert_eq!(seen.result("greet"), &json!("Grüß Gott, Zoë!"));
    let greet = &seen.get("greet").meta;
    assert_eq!(
        (
            &greet["name"],
            &greet["args"],
            &greet["kwargs"],
            &greet["worker"],
            &greet["retries"],
            &greet["queue"],
            &greet["traceback"],
        ),
        (
            &json!("interop.greet"),
            &json!(["Zoë"]),
            &json!({"greeting": "Grüß Gott"}),
            &json!(node),
            &json!(0),
            &json!(queue),
            &Value::Null,
        ),
        "AsyncResult.name, .args, .kwargs, .worker, .retries, .queue and .traceback"
    );

    assert_eq!(seen.result("retried"), &json!(1));
    let retried = seen.get("retried");
    assert_eq!(retried.meta["retries"], json!(1), "the run that succeeded");
    assert_eq!(
        retried.meta["parent_id"],
        json!(retried.id),
        "a retry is sent by the task itself, as in Celery"
    );

    assert_eq!(seen.result("chain"), &json!(13));
    let chain = &seen.get("chain").meta;
    assert!(chain["parent"].is_string(), "{chain}");
    assert_eq!(
        chain["parent_id"], chain["parent"],
        "the second step records the first as its parent"
    );
    assert_eq!(
        chain["args"],
        json!([3, 10]),
        "the first step's result prepended"
    );

    for (name, task, last_line) in [
        (
            "declined",
            "interop.charge",
            "celerity.exceptions.PaymentDeclined: card 4000000000000002 was declined",
        ),
        (
            "crash",
            "interop.crash",
            "celerity.exceptions.Panic: ledger 7 is locked",
        ),
    ] {
        let meta = &seen.get(name).meta;
        assert_eq!(meta["name"], json!(task), "a failure is extended too");
        let traceback = meta["traceback"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: AsyncResult.traceback is None"));
        assert!(
            traceback.starts_with("Traceback (most recent call last):\n  File \"")
                && traceback.contains("tests/interop/rust_worker.rs\", line ")
                && traceback.ends_with(&format!(", in {task}\n{last_line}\n")),
            "{name}: a Python-shaped traceback naming where the error was made:\n{traceback}"
        );
    }

    let quota = seen.exception("quota");
    assert!(quota.is_value_error, "{quota:?}");
    assert_eq!(quota.args, [json!("account acme over quota"), json!(5)]);
    assert_eq!(quota.message, "('account acme over quota', 5)");
    worker.shutdown().await;
}

/// Python's canvas run by a Celerity worker: a chain's steps follow one another with the
/// previous result prepended (not to an immutable step), and a failing step stops the
/// chain, whose result then raises the step's error in Python (Celery's `_fail_chain`).
/// A `link_error` runs with the failed task's id. Every step names the test's queue: the
/// Celerity worker does not know Python's routing.
pub async fn python_canvas_rust_worker(transport: &Transport, python: &Python) {
    let queue = unique_queue("canvas");
    let app = transport.app().await;
    let worker = rust_worker::start(&app, &queue).await;
    let add = |args: Value| json!({"task": "interop.add", "args": args});
    let errback_id = uuid::Uuid::new_v4().to_string();
    let calls = [
        Call::chain(
            "chain",
            json!([add(json!([1, 2])), add(json!([3])), add(json!([4]))]),
        )
        .option("queue", json!(queue)),
        Call::chain(
            "immutable",
            json!([
                add(json!([1, 2])),
                {"task": "interop.add", "args": [20, 22], "immutable": true},
                add(json!([1])),
            ]),
        )
        .option("queue", json!(queue)),
        Call::chain(
            "failing",
            json!([
                add(json!([1, 2])),
                {"task": "interop.charge", "args": ["4000000000000002", 500], "immutable": true},
                add(json!([4])),
            ]),
        )
        .option("queue", json!(queue)),
        Call::apply_async("errback", "interop.charge")
            .args(json!(["4000000000000002", 500]))
            .option("queue", json!(queue))
            .option(
                "link_error",
                json!({"$signature": {"task": "interop.greet", "args": [], "kwargs": {},
                    "options": {"task_id": errback_id, "queue": queue},
                    "subtask_type": null, "immutable": false}}),
            ),
    ];
    let seen = python.drive(transport, &queue, &calls, WAIT).await;
    assert_eq!(seen.result("chain"), &json!(10), "(1 + 2) + 3 + 4");
    assert_eq!(seen.result("immutable"), &json!(43), "20 + 22, then + 1");
    let failed = seen.exception("failing");
    assert_eq!(
        (failed.type_name.as_str(), failed.message.as_str()),
        ("PaymentDeclined", "card 4000000000000002 was declined"),
        "the chain's last step never ran and carries the failure"
    );
    // The errback gets the failed task's id first (`interop.greet(task_id)`). Its result
    // is read here from a shared backend: rpc:// sends it to no one waiting.
    if transport.backend.starts_with("redis") {
        let failed = &seen.get("errback").id;
        let greeting = app
            .client()
            .result::<String>(errback_id.clone())
            .get(WAIT)
            .await
            .expect("the errback ran");
        assert_eq!(greeting, format!("Hello, {failed}!"));
    }
    worker.shutdown().await;
}

/// One chain whose steps alternate between a Celerity worker and a Python worker, each on a
/// queue only it consumes: each worker sends the next step, with the rest of the chain, to
/// the other.
pub async fn chain_across_python_and_celerity(transport: &Transport, python: &Python) {
    let to_python = unique_queue("chain-py");
    let to_rust = unique_queue("chain-rs");
    let python_worker = python.worker(transport, &to_python).await;
    let app = transport.app().await;
    let rust = rust_worker::start(&app, &to_rust).await;
    let on = |task: &str, args: Value, queue: &str| json!({"task": task, "args": args, "options": {"queue": queue}});
    let calls = [Call::chain(
        "across",
        json!([
            on("interop.add", json!([1, 2]), &to_rust),
            on("interop.add", json!([3]), &to_python),
            on("interop.add", json!([4]), &to_rust),
            on("interop.tag", json!([]), &to_python),
        ]),
    )];
    let seen = python.drive(transport, &to_python, &calls, WAIT).await;
    assert_eq!(
        seen.result("across"),
        &json!({"n": 10, "worker": "python"}),
        "1 + 2 in Rust, + 3 in Python, + 4 in Rust, tagged in Python\n{}",
        python_worker.log()
    );
    rust.shutdown().await;
    drop(python_worker);
}

/// A Python worker and a Celerity worker on one queue: every task completes as sent,
/// whichever worker takes it.
pub async fn mixed_fleet(transport: &Transport, python: &Python) {
    let queue = unique_queue("mixed");
    let python_worker = python.worker(transport, &queue).await;
    let app = transport.app().await;
    let rust = rust_worker::start(&app, &queue).await;
    let tasks = TasksRegistry::new(app.client());

    let python_calls: Vec<Call> = (100..124)
        .map(|n| Call::apply_async(&format!("tag-{n}"), "interop.tag").args(json!([n])))
        .chain((0..4).map(|i| {
            Call::send_task(&format!("greet-{i}"), "interop.greet")
                .kwargs(json!({"name": format!("Zoë {i}"), "punctuation": "?"}))
        }))
        // A retry is a new message on the queue: the other worker may take it.
        .chain(
            (0..4)
                .map(|i| Call::send_task(&format!("flaky-{i}"), "interop.flaky").args(json!([1]))),
        )
        .collect();
    let from_python = python.drive(transport, &queue, &python_calls, WAIT);
    let from_rust = async {
        let mut tags = Vec::new();
        let mut profiles = Vec::new();
        let mut retried = Vec::new();
        for n in 0..24 {
            tags.push((n, tasks.tag(n).queue(&queue).await.unwrap()));
            if n % 6 == 0 {
                profiles.push(tasks.profile(customer()).queue(&queue).await.unwrap());
                retried.push(tasks.flaky(2).queue(&queue).await.unwrap());
            }
        }
        let mut tagged = Vec::new();
        for (n, result) in tags {
            tagged.push((n, result.get(WAIT).await.unwrap()));
        }
        for result in profiles {
            assert_eq!(
                result.get(WAIT).await.unwrap(),
                expected_profile(),
                "the same typed result from either worker"
            );
        }
        for result in retried {
            assert_eq!(
                result.get(WAIT).await.unwrap(),
                2,
                "retried twice, then succeeded"
            );
        }
        tagged
    };
    let (seen, tagged) = tokio::join!(from_python, from_rust);

    let mut ran_by: BTreeMap<String, usize> = BTreeMap::new();
    for (n, tagged) in &tagged {
        assert_eq!(tagged.n, *n, "a Celerity client's task came back as sent");
        *ran_by.entry(tagged.worker.clone()).or_default() += 1;
    }
    for n in 100..124 {
        let result = seen.result(&format!("tag-{n}"));
        assert_eq!(
            result["n"],
            json!(n),
            "a Python client's task came back as sent"
        );
        let worker = result["worker"].as_str().expect("the worker's kind");
        *ran_by.entry(worker.to_owned()).or_default() += 1;
    }
    for i in 0..4 {
        assert_eq!(
            seen.result(&format!("greet-{i}")),
            &json!(format!("Hello, Zoë {i}?"))
        );
    }
    for i in 0..4 {
        assert_eq!(seen.result(&format!("flaky-{i}")), &json!(1));
    }
    assert!(
        ran_by.get("python").is_some_and(|n| *n > 0) && ran_by.get("rust").is_some_and(|n| *n > 0),
        "both workers took tasks from the queue: {ran_by:?}"
    );
    rust.shutdown().await;
    drop(python_worker);
}

/// Celery's remote control reaches a Celerity worker: `celery inspect ping` and
/// `celery inspect registered` answer, and Python's `AsyncResult.revoke()` stops a task
/// the worker holds for its countdown.
pub async fn celery_control_reaches_celerity(transport: &Transport, python: &Python) {
    let queue = unique_queue("control");
    let node = format!(
        "celerity-{}@interop",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let app = transport.app().await;
    let worker = rust_worker::start_as(&app, &queue, &node).await;

    let ping = python
        .celery(
            transport,
            &["inspect", "ping", "--destination", &node, "--timeout", "5"],
        )
        .await;
    assert!(
        ping.contains(&format!(" {node}: OK")) && ping.contains("pong"),
        "`celery inspect ping` reaches the Celerity worker:\n{ping}"
    );
    assert!(ping.contains("1 node online."), "{ping}");

    let registered = python
        .celery(
            transport,
            &[
                "inspect",
                "registered",
                "--destination",
                &node,
                "--timeout",
                "5",
                "--json",
            ],
        )
        .await;
    let registered: Value = serde_json::from_str(registered.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {registered}"));
    let names: Vec<&str> = tasks::TASKS.iter().map(|spec| spec.name).collect();
    let mut names = names;
    names.sort_unstable();
    assert_eq!(registered, json!({ node.clone(): names }));

    let calls = [Call::send_task("revoked", "interop.add")
        .args(json!([1, 2]))
        .option("countdown", json!(2))
        .revoke()];
    let seen = python.drive(transport, &queue, &calls, WAIT).await;
    let revoked = seen.exception("revoked");
    assert_eq!(
        (revoked.type_name.as_str(), revoked.message.as_str()),
        ("TaskRevokedError", "revoked"),
        "a revoke from Python stops the task on the Celerity worker"
    );
    worker.shutdown().await;
}

/// A node name no other test uses.
fn unique_node() -> String {
    format!(
        "celerity-{}@interop",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Waits until the task `id` is STARTED.
async fn until_started(app: &celerity::App, id: &str) {
    let states = app.client().result::<Value>(id);
    let deadline = tokio::time::Instant::now() + WAIT;
    while states.state().await.expect("the result backend answers") != TaskState::Started {
        assert!(tokio::time::Instant::now() < deadline, "{id} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Every inspect command Celery's tools and Flower send (`celery inspect …`,
/// `app.control.inspect()`), answered by a Celerity worker with the values it holds and in
/// the shapes a Python Celery worker answers with: each reply is compared, key for key,
/// with the reply of a Python worker holding the same kinds of tasks (one running, one
/// waiting for its countdown).
pub async fn celery_inspects_celerity(transport: &Transport, python: &Python) {
    let queue = unique_queue("inspect");
    let node = unique_node();
    let app = transport.app().await;
    let worker = rust_worker::start_as(&app, &queue, &node).await;
    let python_queue = unique_queue("inspect-py");
    let python_worker = python.worker(transport, &python_queue).await;
    let py = python_worker.node.as_str();
    let tasks = TasksRegistry::new(app.client());
    for n in 0..3 {
        assert_eq!(
            tasks
                .add(n, 1)
                .queue(&queue)
                .await
                .unwrap()
                .get(WAIT)
                .await
                .unwrap(),
            n + 1
        );
    }
    // On each worker: a task running, and one waiting for its countdown.
    let mut running = Vec::new();
    let mut waiting = Vec::new();
    for on in [&queue, &python_queue] {
        running.push(tasks.slow(5.0).queue(on).await.unwrap());
        let held = tasks.add(1, 1).countdown(Duration::from_secs(60)).queue(on);
        waiting.push(held.await.unwrap());
    }
    for started in &running {
        until_started(&app, started.id()).await;
    }
    let steps = json!([
        {"name": "stats", "inspect": "stats"},
        {"name": "active", "inspect": "active"},
        {"name": "active_safe", "inspect": "active", "kwargs": {"safe": true}},
        {"name": "reserved", "inspect": "reserved"},
        {"name": "scheduled", "inspect": "scheduled"},
        {"name": "revoked", "inspect": "revoked"},
        {"name": "active_queues", "inspect": "active_queues"},
        {"name": "registered", "inspect": "registered"},
        {"name": "registered_items", "inspect": "registered", "args": ["rate_limit", "track_started"]},
        {"name": "conf", "inspect": "conf"},
        {"name": "clock", "inspect": "clock"},
        {"name": "report", "inspect": "report"},
        {"name": "query_task", "inspect": "query_task",
            "args": [running[0].id(), waiting[0].id(), "unknown-id"]},
    ]);
    let seen = python.control(transport, &[&node, py], steps).await;
    let ours = |step: &str| &seen[step][&node];
    let theirs = |step: &str| &seen[step][py];

    let stats = ours("stats");
    assert_eq!(keys(stats), keys(theirs("stats")), "stats: {stats}");
    assert_eq!(
        stats["total"],
        json!({"interop.add": 3, "interop.slow": 1}),
        "the tasks run, by name"
    );
    assert_eq!(stats["pool"]["max-concurrency"], 4);
    assert_eq!(
        stats["prefetch_count"],
        16 + 1,
        "4 × 4, and one held for its ETA"
    );
    assert_eq!(keys(&stats["broker"]), keys(&theirs("stats")["broker"]));
    for key in ["transport", "hostname", "port", "virtual_host", "userid"] {
        assert_eq!(
            stats["broker"][key],
            theirs("stats")["broker"][key],
            "broker {key}"
        );
    }
    assert_eq!(keys(&stats["rusage"]), keys(&theirs("stats")["rusage"]));
    assert_eq!(stats["pid"], std::process::id());

    for step in ["active", "active_safe"] {
        let (active, python_active) = (ours(step), theirs(step));
        assert_eq!(active.as_array().map(Vec::len), Some(1), "{step}: {active}");
        assert_eq!(keys(&active[0]), keys(&python_active[0]), "{step}");
        assert_eq!(active[0]["id"], running[0].id());
        assert_eq!(active[0]["name"], "interop.slow");
        assert_eq!(active[0]["hostname"], node);
    }
    assert_eq!(ours("active")[0]["args"], json!([5.0]));
    assert_eq!(
        ours("active_safe")[0]["args"],
        theirs("active_safe")[0]["args"],
        "with `safe`, the arguments as Python's repr"
    );
    assert_eq!(ours("reserved"), &json!([]));
    let scheduled = ours("scheduled");
    assert_eq!(scheduled.as_array().map(Vec::len), Some(1), "{scheduled}");
    assert_eq!(keys(&scheduled[0]), keys(&theirs("scheduled")[0]));
    assert_eq!(
        keys(&scheduled[0]["request"]),
        keys(&theirs("scheduled")[0]["request"])
    );
    assert_eq!(scheduled[0]["request"]["id"], waiting[0].id());
    assert_eq!(
        scheduled[0]["request"]["worker_pid"],
        Value::Null,
        "no process runs it yet"
    );
    assert!(ours("revoked").is_array() && theirs("revoked").is_array());

    let queues = ours("active_queues");
    assert_eq!(queues.as_array().map(Vec::len), Some(1), "{queues}");
    let python_queue_dict = &theirs("active_queues")[0];
    assert_eq!(keys(&queues[0]), keys(python_queue_dict));
    assert_eq!(
        keys(&queues[0]["exchange"]),
        keys(&python_queue_dict["exchange"])
    );
    assert_eq!(queues[0]["name"], queue);
    assert_eq!(queues[0]["routing_key"], queue);

    let mut names: Vec<&str> = tasks::TASKS.iter().map(|spec| spec.name).collect();
    names.sort_unstable();
    assert_eq!(ours("registered"), &json!(names));
    assert!(
        ours("registered_items")
            .as_array()
            .unwrap()
            .contains(&json!("interop.slow [track_started=True]")),
        "{}",
        ours("registered_items")
    );
    let conf = ours("conf");
    let scheme = transport.broker.split("://").next().unwrap();
    assert!(
        conf["broker_url"]
            .as_str()
            .is_some_and(|url| url.starts_with(scheme)),
        "{conf}"
    );
    assert!(
        !conf["broker_url"].as_str().unwrap().contains("guest:guest"),
        "no password: {conf}"
    );
    assert_eq!(conf["worker_concurrency"], 4);
    assert!(theirs("conf").is_object());
    assert!(ours("clock")["clock"].is_u64() && theirs("clock")["clock"].is_u64());
    assert!(
        ours("report")["ok"]
            .as_str()
            .is_some_and(|text| text.contains("celerity")),
        "{}",
        ours("report")
    );
    assert!(theirs("report")["ok"].is_string());

    let found = ours("query_task");
    assert_eq!(
        keys(found),
        {
            let mut ids = vec![running[0].id().to_owned(), waiting[0].id().to_owned()];
            ids.sort();
            ids
        },
        "the ids held, no other: {found}"
    );
    assert_eq!(found[running[0].id()][0], "active");
    assert_eq!(found[waiting[0].id()][0], "scheduled");

    for held in &waiting {
        held.revoke().await.unwrap();
    }
    worker.shutdown().await;
    drop(python_worker);
}

/// Every control command Celery's tools and Flower send to change a worker
/// (`app.control.…`), carried out by a Celerity worker and answered as Celery answers:
/// rate and time limits per task, consuming another queue and no queue at all, growing
/// and shrinking the pool, and a shutdown.
pub async fn celery_controls_celerity(transport: &Transport, python: &Python) {
    let queue = unique_queue("controlled");
    let extra = unique_queue("controlled-extra");
    let node = unique_node();
    let app = transport.app().await;
    let worker = rust_worker::start_as(&app, &queue, &node).await;
    let tasks = TasksRegistry::new(app.client());
    let to = [node.as_str()];
    let steps = json!([
        {"name": "rate", "control": "rate_limit", "args": ["interop.add", "1/s"]},
        {"name": "bad_rate", "control": "rate_limit", "args": ["interop.add", "x/y"]},
        {"name": "unknown_task", "control": "rate_limit", "args": ["interop.nope", "1/s"]},
        {"name": "registered", "inspect": "registered"},
        {"name": "time", "control": "time_limit", "args": ["interop.slow"], "kwargs": {"hard": 0.5}},
        {"name": "grow", "control": "pool_grow", "kwargs": {"n": 2}},
        {"name": "grown", "inspect": "stats"},
        {"name": "shrink", "control": "pool_shrink", "kwargs": {"n": 3}},
        {"name": "shrunk", "inspect": "stats"},
        {"name": "add", "control": "add_consumer", "args": [extra]},
        {"sleep": 0.5},
        {"name": "queues", "inspect": "active_queues"},
    ]);
    let seen = python.control(transport, &to, steps).await;
    let answer = |step: &str| seen[step][&node].clone();
    assert_eq!(
        answer("rate"),
        json!({"ok": "new rate limit set successfully"})
    );
    assert_eq!(answer("bad_rate"), json!({"error": "KeyError('y')"}));
    assert_eq!(answer("unknown_task"), json!({"error": "unknown task"}));
    assert!(
        answer("registered")
            .as_array()
            .unwrap()
            .contains(&json!("interop.add [rate_limit=1/s]")),
        "{}",
        answer("registered")
    );
    assert_eq!(
        answer("time"),
        json!({"ok": "time limits set successfully"})
    );
    assert_eq!(answer("grow"), json!({"ok": "pool will grow"}));
    assert_eq!(answer("grown")["pool"]["max-concurrency"], 6);
    assert_eq!(answer("grown")["prefetch_count"], 24);
    assert_eq!(answer("shrink"), json!({"ok": "pool will shrink"}));
    assert_eq!(answer("shrunk")["pool"]["max-concurrency"], 3);
    assert_eq!(answer("shrunk")["prefetch_count"], 12);
    assert_eq!(
        answer("add"),
        json!({"ok": format!("add consumer {extra}")})
    );
    let consumed: Vec<Value> = answer("queues")
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].clone())
        .collect();
    assert_eq!(consumed, [json!(queue), json!(extra)]);

    // One start a second under the new rate limit.
    let started = tokio::time::Instant::now();
    let mut sums = Vec::new();
    for n in 0..3 {
        sums.push(tasks.add(n, n).queue(&queue).await.unwrap());
    }
    for sum in sums {
        sum.get(WAIT).await.unwrap();
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "three starts 1 s apart took {took:?}"
    );
    // The new hard time limit.
    let limited = tasks.slow(3.0).queue(&queue).await.unwrap();
    let limited = failure(limited.get(WAIT).await, "a task past its new time limit");
    assert_eq!(limited.exc_type, "TimeLimitExceeded");
    // The queue added is consumed.
    let on_extra = tasks.add(20, 22).queue(&extra).await.unwrap();
    assert_eq!(
        on_extra.get(WAIT).await.unwrap(),
        42,
        "run from the queue added"
    );

    let steps = json!([
        {"name": "unlimited", "control": "rate_limit", "args": ["interop.add", ""]},
        {"name": "cancel", "control": "cancel_consumer", "args": [queue]},
        {"name": "cancel_extra", "control": "cancel_consumer", "args": [extra]},
        {"sleep": 0.5},
        {"name": "queues", "inspect": "active_queues"},
    ]);
    let seen = python.control(transport, &to, steps).await;
    let answer = |step: &str| seen[step][&node].clone();
    assert_eq!(
        answer("unlimited"),
        json!({"ok": "rate limit disabled successfully"})
    );
    assert_eq!(
        answer("cancel"),
        json!({"ok": format!("no longer consuming from {queue}")})
    );
    assert_eq!(answer("queues"), json!([]), "the worker consumes nothing");
    let waiting = tasks.add(1, 2).queue(&queue).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        waiting.state().await.unwrap(),
        TaskState::Pending,
        "nothing is taken from a queue no longer consumed"
    );
    let seen = python
        .control(
            transport,
            &to,
            json!([{"name": "add", "control": "add_consumer", "args": [queue]}]),
        )
        .await;
    assert_eq!(
        seen["add"][&node],
        json!({"ok": format!("add consumer {queue}")})
    );
    assert_eq!(waiting.get(WAIT).await.unwrap(), 3, "consumed again");

    let requested = worker.shutdown_requested();
    python
        .control(
            transport,
            &to,
            json!([{"name": "shutdown", "control": "shutdown", "reply": false}]),
        )
        .await;
    tokio::time::timeout(WAIT, requested)
        .await
        .expect("`shutdown` reaches the worker, which stops as on SIGTERM");
    worker.shutdown().await;
}

/// `AsyncResult.revoke(terminate=True)` from Python stops a task running on a Celerity
/// worker: its future is dropped where it waits (its `Drop` guards run, and the rest of
/// it never does), Python sees REVOKED with `TaskRevokedError('terminated')`, and the
/// worker runs the next task as usual.
pub async fn celery_terminates_a_celerity_task(transport: &Transport, python: &Python) {
    let queue = unique_queue("terminate");
    let app = transport.app().await;
    let worker = rust_worker::start(&app, &queue).await;
    let calls = [Call::send_task("long", "interop.slow")
        .args(json!([30.0]))
        .terminate_when_started()];
    let started = tokio::time::Instant::now();
    let seen = python.drive(transport, &queue, &calls, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped long before its 30 s"
    );
    let long = seen.get("long");
    assert_eq!(
        long.states.last().map(String::as_str),
        Some("REVOKED"),
        "{long:?}"
    );
    assert!(
        went_through(&long.states, &["STARTED", "REVOKED"]),
        "{long:?}"
    );
    let revoked = seen.exception("long");
    assert_eq!(
        (revoked.type_name.as_str(), revoked.module.as_str()),
        ("TaskRevokedError", "celery.exceptions")
    );
    assert_eq!(revoked.args, [json!("terminated")]);
    let tallies = worker
        .singleton::<rust_worker::Tallies>()
        .expect("the Celerity worker's tallies");
    assert_eq!(
        (
            tallies.runs(&format!("slow-ended:{}", long.id)),
            tallies.runs(&format!("slow-finished:{}", long.id))
        ),
        (1, 0),
        "the task's future was dropped mid-sleep"
    );
    let next = TasksRegistry::new(app.client())
        .add(2, 2)
        .queue(&queue)
        .await
        .unwrap();
    assert_eq!(next.get(WAIT).await.unwrap(), 4, "the next task runs");
    worker.shutdown().await;
}

/// `AsyncResult::revoke` reaches Python workers: a task held for its countdown by a
/// Python worker is discarded and recorded REVOKED.
pub async fn celerity_revoke_reaches_python(transport: &Transport, python: &Python) {
    let queue = unique_queue("revoke");
    let worker = python.worker(transport, &queue).await;
    let app = transport.app().await;
    let tasks = TasksRegistry::new(app.client());
    let held = tasks
        .add(1, 2)
        .countdown(Duration::from_secs(2))
        .queue(&queue)
        .await
        .unwrap();
    held.revoke().await.unwrap();
    match held.get(WAIT).await {
        Err(ResultError::Revoked(revoked)) => assert_eq!(
            (revoked.exc_type.as_str(), revoked.message.as_str()),
            ("TaskRevokedError", "revoked")
        ),
        other => panic!("the Python worker discards a revoked task, got {other:?}"),
    }
    drop(worker);
}

/// A task signature for `drive.py`'s canvas: `task(*args)`, sent to `queue`.
fn on_queue(task: &str, args: Value, queue: &str) -> Value {
    json!({"task": task, "args": args, "options": {"queue": queue}})
}

/// Python's canvas over Celerity tasks: a group, a chord (header and body Celerity tasks),
/// a chain ending in a group and a chord whose body is a chain, all run by a Celerity
/// worker, each read back in Python with `get()`. Chords need a result backend that joins
/// them (Redis).
pub async fn python_builds_canvas_over_celerity_tasks(transport: &Transport, python: &Python) {
    let queue = unique_queue("py-canvas");
    let app = transport.app().await;
    let worker = rust_worker::start(&app, &queue).await;
    let add = |args: Value| json!({"task": "interop.add", "args": args});
    let tsum = json!({"task": "interop.tsum"});
    let calls = [
        Call::canvas(
            "group",
            json!({"group": [add(json!([1, 1])), add(json!([2, 2])), add(json!([3, 3]))]}),
        ),
        Call::canvas(
            "chord",
            json!({"chord": [add(json!([1, 2])), add(json!([3, 4])), add(json!([5, 6]))],
                "body": tsum}),
        ),
        Call::canvas(
            "chain-then-group",
            json!({"chain": [add(json!([1, 2])), {"group": [add(json!([10])), add(json!([20]))]}]}),
        ),
        Call::canvas(
            "chord-chain-body",
            json!({"chord": [add(json!([1, 1])), add(json!([2, 2]))],
                "body": {"chain": [tsum, add(json!([10]))]}}),
        ),
    ]
    .map(|call| call.option("queue", json!(queue)));
    let seen = python.drive(transport, &queue, &calls, WAIT).await;
    assert_eq!(
        seen.result("group"),
        &json!([2, 4, 6]),
        "group(...)().get() in order"
    );
    assert_eq!(seen.result("chord"), &json!(21), "tsum([3, 7, 11])");
    assert_eq!(
        seen.result("chain-then-group"),
        &json!([13, 23]),
        "1 + 2, then each of + 10 and + 20"
    );
    assert_eq!(
        seen.result("chord-chain-body"),
        &json!(16),
        "tsum([2, 4]) + 10"
    );
    worker.shutdown().await;
}

/// Python chains that continue into a chord, run by a Celerity worker:
/// `chain(add(1, 2), group(add(10), add(20)), tsum, add(100))`, whose group and the step
/// after it Celery makes a chord (`_chain.prepare_steps`), and
/// `chain(add(1, 2), chord([add(10), add(20)], tsum))`. Celery freezes the chord, which
/// turns its header into a group signature (`_chord.freeze`): the chord travels in the
/// first task's embed `chain` with `kwargs.header` a `celery.group` dict, not a list.
pub async fn python_chain_continuing_into_a_chord(transport: &Transport, python: &Python) {
    let queue = unique_queue("py-chain-chord");
    let app = transport.app().await;
    let worker = rust_worker::start(&app, &queue).await;
    let add = |args: Value| json!({"task": "interop.add", "args": args});
    let tsum = json!({"task": "interop.tsum"});
    let calls = [
        Call::canvas(
            "chain-with-group",
            json!({"chain": [
                add(json!([1, 2])),
                {"group": [add(json!([10])), add(json!([20]))]},
                tsum,
                add(json!([100])),
            ]}),
        ),
        Call::canvas(
            "chain-then-chord",
            json!({"chain": [
                add(json!([1, 2])),
                {"chord": [add(json!([10])), add(json!([20]))], "body": tsum},
            ]}),
        ),
    ]
    .map(|call| call.option("queue", json!(queue)));
    let seen = python.drive(transport, &queue, &calls, WAIT).await;
    assert_eq!(
        seen.result("chain-with-group"),
        &json!(136),
        "1 + 2, then + 10 and + 20, summed, + 100"
    );
    assert_eq!(
        seen.result("chain-then-chord"),
        &json!(36),
        "1 + 2, then + 10 and + 20, summed"
    );
    worker.shutdown().await;
}

/// Celerity's typed canvas over a Python service's tasks: a chain, a group and chords (one
/// with a chain as body) sent with `Client::send`, run by a Python worker, and read back
/// typed. `pyonly.mul` is not in the schema: its signatures are typed by the caller
/// (`Sig::from_signature`).
pub async fn rust_builds_canvas_over_python_tasks(transport: &Transport, python: &Python) {
    let queue = unique_queue("rs-canvas");
    let python_worker = python.worker(transport, &queue).await;
    let app = transport.app().await;
    let tasks = TasksRegistry::new(app.client());
    let client = app.client();
    // `<task>.s(*args)` of a Python task, on the test's queue.
    let python_task =
        |task: &str, args: Vec<Value>| Signature::new(task, args).option("queue", json!(queue));
    let mul = |x: i64, y: i64| -> Sig<(), i64> {
        Sig::from_signature(python_task("pyonly.mul", vec![json!(x), json!(y)]))
    };
    let mul_by = |y: i64| -> Sig<Takes<i64>, i64> {
        Sig::from_signature(python_task("pyonly.mul", vec![json!(y)]))
    };
    let add_to = |y: i64| -> Sig<Takes<i64>, i64> {
        Sig::from_signature(python_task("interop.add", vec![json!(y)]))
    };
    let tsum = || -> Sig<Takes<Vec<i64>>, i64> {
        Sig::from_signature(python_task("interop.tsum", Vec::new()))
    };

    let chained = client
        .send(
            chain(tasks.add(1, 2).queue(&queue).s())
                .then(mul_by(10))
                .then(add_to(4)),
        )
        .await
        .expect("the chain is sent");
    let grouped = client
        .send(group((1..=5).map(|i| mul(i, i))))
        .await
        .expect("the group is sent");
    let chorded = client
        .send(chord(group([mul(1, 2), mul(3, 4), mul(5, 6)]), tsum()))
        .await
        .expect("the chord is sent");
    let chain_body = client
        .send(chord(
            group((1..=4).map(|i| tasks.add(i, 0).queue(&queue).s())),
            chain(tsum()).then(mul_by(10)),
        ))
        .await
        .expect("the chord is sent");

    assert_eq!(chained.get(WAIT).await.unwrap(), 34, "(1 + 2) * 10 + 4");
    assert_eq!(
        chained
            .parent()
            .expect("the chain's middle step")
            .get(WAIT)
            .await
            .unwrap(),
        json!(30),
        "the handle's parent is the previous step, as Python stored it"
    );
    assert_eq!(grouped.get(WAIT).await.unwrap(), [1, 4, 9, 16, 25]);
    assert_eq!(chorded.get(WAIT).await.unwrap(), 44, "2 + 12 + 30");
    assert_eq!(
        chain_body.get(WAIT).await.unwrap(),
        100,
        "(1 + 2 + 3 + 4) * 10"
    );
    drop(python_worker);
}

/// One chord whose header is split between a Python worker and a Celerity worker (each
/// consuming a queue only it reads), its body on either: the body runs exactly once, with
/// every part's result in header order. Chords are sent from both sides, bodies on both
/// workers; `interop.tally` counts its runs (Python in Redis, Celerity in the worker), and
/// the counts are read after a pause in which a second run would show.
pub async fn chord_split_across_python_and_celerity(transport: &Transport, python: &Python) {
    let to_python = unique_queue("chord-py");
    let to_rust = unique_queue("chord-rs");
    let python_worker = python.worker(transport, &to_python).await;
    let app = transport.app().await;
    let rust = rust_worker::start(&app, &to_rust).await;
    let tasks = TasksRegistry::new(app.client());
    let client = app.client();
    const PARTS: i64 = 8;
    let queue_of = |n: i64| if n % 2 == 0 { &to_python } else { &to_rust };
    // Even parts run in Python, odd ones in Rust: what the body must receive, in order.
    let expected_items: Vec<Value> = (0..PARTS)
        .map(|n| json!({"n": n, "worker": if n % 2 == 0 { "python" } else { "rust" }}))
        .collect();
    let key = |what: &str| format!("{}-{what}", unique_queue("tally"));

    // From Rust: two chords with the body in Python, two with it in Rust.
    let mut from_rust = Vec::new();
    for (i, body_queue) in [&to_python, &to_rust, &to_python, &to_rust]
        .into_iter()
        .enumerate()
    {
        let key = key(&format!("rs{i}"));
        let tally: Sig<Takes<Vec<tasks::Tagged>>, tasks::Tally> = Sig::from_signature(
            Signature::new("interop.tally", vec![json!(key)]).option("queue", json!(body_queue)),
        );
        let header = group((0..PARTS).map(|n| tasks.tag(n).queue(queue_of(n)).s()));
        let sent = client
            .send(chord(header, tally))
            .await
            .expect("the chord is sent");
        let body_worker = if body_queue == &to_python {
            "python"
        } else {
            "rust"
        };
        from_rust.push((key, body_worker, sent));
    }

    // From Python: one chord with the body in Rust, one with it in Python.
    let tag = |n: i64| on_queue("interop.tag", json!([n]), queue_of(n));
    let python_chords = [(&to_rust, "rust"), (&to_python, "python")].map(|(queue, worker)| {
        let key = key(&format!("py-{worker}"));
        let call = Call::canvas(
            &key,
            json!({"chord": (0..PARTS).map(tag).collect::<Vec<_>>(),
                "body": on_queue("interop.tally", json!([key]), queue)}),
        );
        (key, worker, call)
    });
    let calls: Vec<Call> = python_chords
        .iter()
        .map(|(_, _, call)| call.clone())
        .collect();
    let seen = python.drive(transport, &to_python, &calls, WAIT).await;

    let mut bodies: Vec<(String, &str, Value)> = Vec::new();
    for (key, worker, sent) in from_rust {
        let tally = sent
            .get(WAIT)
            .await
            .unwrap_or_else(|e| panic!("the chord {key} completes: {e}\n{}", python_worker.log()));
        bodies.push((key, worker, serde_json::to_value(tally).unwrap()));
    }
    for (key, worker, _) in &python_chords {
        bodies.push((key.clone(), worker, seen.result(key).clone()));
    }
    // A second run of a body would come within moments of the first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tallies = rust
        .singleton::<rust_worker::Tallies>()
        .expect("the Celerity worker's tallies");
    let redis = redis::Client::open(transport.backend.as_str()).expect("the Redis URL");
    let mut redis = redis
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    for (key, worker, body) in &bodies {
        assert_eq!(
            body,
            &json!({"items": expected_items, "worker": worker}),
            "chord {key}: the body got every part's result in header order"
        );
        let in_python: Option<u32> = redis::AsyncCommands::get(&mut redis, key)
            .await
            .expect("Redis answers");
        let runs = (in_python.unwrap_or(0), tallies.runs(key));
        let expected = if *worker == "python" { (1, 0) } else { (0, 1) };
        assert_eq!(
            runs, expected,
            "chord {key}: the body ran exactly once, in {worker} (runs in Python, in Rust)"
        );
    }
    rust.shutdown().await;
    drop(python_worker);
}

/// A group that Celerity sent and saved (`GroupResult::save`) is read by Python's
/// `GroupResult.restore(id)`, whose `get()` returns every value in order.
pub async fn python_restores_a_celerity_group(transport: &Transport, python: &Python) {
    let queue = unique_queue("saved-group");
    let app = transport.app().await;
    let worker = rust_worker::start(&app, &queue).await;
    let tasks = TasksRegistry::new(app.client());
    let sent = app
        .client()
        .send(group(
            (1..=5).map(|i| tasks.add(i, 10 * i).queue(&queue).s()),
        ))
        .await
        .expect("the group is sent");
    sent.save().await.expect("the group is saved");
    let calls = [Call::restore_group("restored", sent.id())];
    let seen = python.drive(transport, &queue, &calls, WAIT).await;
    assert_eq!(seen.get("restored").id, sent.id(), "the group's own id");
    assert_eq!(seen.result("restored"), &json!([11, 22, 33, 44, 55]));
    assert_eq!(sent.get(WAIT).await.unwrap(), [11, 22, 33, 44, 55]);
    sent.delete().await.expect("the saved group is deleted");
    worker.shutdown().await;
}

/// A Celerity scheduler's runs (the interop schema's `SCHEDULES`, sent to a queue of this
/// case's own) are run by a Python Celery worker, which reads the schedule's name and
/// Celery beat's mark from its request, then by a Celerity worker, which reads the name
/// from its context. Each run's result is found by the id made from the run.
pub async fn scheduled_runs_on_python_and_celerity(transport: &Transport, python: &Python) {
    let queue: &'static str = Box::leak(unique_queue("beat").into_boxed_str());
    let schedule = tasks::SCHEDULES[0].queue(queue);
    assert_eq!(schedule.name, "interop-every-second");
    let app = transport.app().await;
    for kind in ["python", "rust"] {
        let group = format!("{queue}-{kind}");
        let (python_worker, rust) = match kind {
            "python" => (Some(python.worker(transport, queue).await), None),
            _ => (None, Some(rust_worker::start(&app, queue).await)),
        };
        let settings = BeatSettings::default()
            .group(&group)
            .lease(Duration::from_secs(3));
        let beat = Beat::redis(app.client(), &[schedule], &transport.broker, settings)
            .await
            .unwrap();
        let started = Utc::now();
        let handle = beat.spawn();
        tokio::time::sleep(Duration::from_millis(4500)).await;
        handle.stop().await;
        let stopped = Utc::now();

        // The runs surely sent: from a second after the scheduler started (it starts with
        // the next run) to the last due a second before it stopped.
        let mut ran = Vec::new();
        let mut second = started.timestamp() + 2;
        while second < stopped.timestamp() {
            let run = DateTime::from_timestamp(second, 0).unwrap();
            let result = app
                .client()
                .result::<Scheduled>(run_id(&group, schedule.name, run));
            let scheduled = result
                .get(Duration::from_secs(10))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "the run at {run} on the {kind} worker: {e}\n{}",
                        python_worker.as_ref().map(|w| w.log()).unwrap_or_default()
                    )
                });
            ran.push(scheduled);
            second += 1;
        }
        assert!(ran.len() >= 2, "{kind}: {ran:?}");
        for scheduled in &ran {
            assert_eq!(scheduled.label, "tick");
            assert_eq!(scheduled.schedule.as_deref(), Some("interop-every-second"));
            assert_eq!(scheduled.worker, kind);
        }
        if let Some(rust) = rust {
            rust.shutdown().await;
        }
        drop(python_worker);
    }
}
