//! One schema, two languages: the Python module generated from `schemas/tasks.yaml`
//! (`celerity-codegen python`) sends every shop task to a Celerity worker and gets each
//! result back as the schema's type, workflows included; and a Python worker written with
//! the module's types runs every task the Celerity client sends, as the Celerity shop does.
//!
//! Needs Redis (`CELERITY_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/15`) and a
//! Python with Celery (`CELERITY_PYTHON`, default `.venv/bin/python`); skips without them
//! unless `CELERITY_REQUIRE_BROKERS=1`.

mod interop;
mod support;

#[path = "support/shop.rs"]
mod shop;

use std::path::Path;

use celerity_shop::tasks::TasksRegistry;
use interop::python::Python;
use interop::transport::Transport;
use serde_json::{Value, json};

fn redis_and_python() -> Option<(Transport, Python)> {
    Some((Transport::redis()?, Python::find()?))
}

/// A directory holding `shop_tasks.py`, generated from the shop's schema.
fn generated_module() -> tempfile::TempDir {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/tasks.yaml");
    let source = std::fs::read_to_string(&schema).expect("the shop schema");
    let module = celerity_codegen::generate_python_str(&source, "schemas/tasks.yaml")
        .expect("the shop schema generates Python");
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("shop_tasks.py"), module).expect("a writable directory");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_python_client_gets_typed_results_from_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    let modules = generated_module();
    let queue = interop::unique_queue("contract-client");
    let app = transport.app().await;
    let mut worker = app.worker();
    celerity_shop::register(&mut worker);
    worker.queues([queue.clone()]);
    let worker = worker.start().await.expect("the Celerity worker starts");

    let output = python
        .script("shop_client.py", modules.path(), &transport, &queue)
        .await;
    worker.shutdown().await;
    let seen: Value = serde_json::from_str(output.trim())
        .unwrap_or_else(|e| panic!("shop_client.py printed no JSON ({e}):\n{output}"));
    let outcome_total = 3 * 450 + 3000;
    assert_eq!(
        seen,
        json!({
            "ping": "pong",
            "send_email": {
                "accepted": ["ada@example.com", "ops@example.com"],
                "message_id_is_the_task_id": true,
            },
            "cleanup_sessions": 0,
            "create_user": {"email": "grace@example.com", "role": "admin"},
            "process_order": {
                "status": "backordered",
                "total_cents": outcome_total,
                "warnings": ["no shipping address: collection in store"],
            },
            "generate_report": {
                "rows": 3,
                "format": "json",
                "orders": 9.0,
                "content": "day,region,orders\n2026-01-01,eu,0\n2026-01-02,eu,3\n2026-01-03,eu,6\n",
            },
            "alert_ops": "#ops: task t-1 failed",
            "summarize_orders": {"orders": 2, "total_cents": 2 * outcome_total},
            "email_summary": ["ops@example.com"],
            "chain": ["ops@example.com"],
            "chord": {"orders": 3, "total_cents": 3 * outcome_total},
            "failure": {"type": "InvalidAddress", "message": "`nobody` is not an email address"},
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_written_with_the_generated_types_runs_what_celerity_sends() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    let modules = generated_module();
    let queue = interop::unique_queue("contract-worker");
    let _worker = python
        .worker_of("shop_worker", Some(modules.path()), &transport, &queue)
        .await;
    let app = transport.app().await;
    let tasks = TasksRegistry::new(app.client());
    shop::every_reference_task_round_trips(&tasks, &queue).await;
}
