//! Producer and worker in one process, on the embedded in-memory broker by default.
//!
//! Sends every task of `schemas/tasks.yaml` through the generated `TasksRegistry`, waits for
//! each typed result and prints it. Run with `cargo run --example quickstart`; set
//! `CELERITY_BROKER_URL` and `CELERITY_RESULT_BACKEND` (e.g. `redis://127.0.0.1:6379/0`) to
//! run the same flow through a real broker.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity::App;
use celerity_shop::tasks::{Address, EmailAddress, Order, OrderLine, Role, TasksRegistry};
use chrono::NaiveDate;
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    // One app, shared by worker and producer: the embedded broker and backend unless the
    // CELERITY_BROKER_URL / CELERITY_RESULT_BACKEND variables name others.
    let app = App::from_env().await?;
    println!(
        "broker {}, results {}",
        app.broker().describe(),
        app.backend().describe()
    );
    let mut worker = app.worker();
    celerity_shop::register(&mut worker);
    let worker = worker.start().await?;
    println!("worker consuming {:?}", worker.queues());

    let tasks = TasksRegistry::new(app.client());
    let wait = Duration::from_secs(10);

    let pong = tasks.ping().await?.get(wait).await?;
    println!("tasks.ping             -> {pong}");

    let receipt = tasks
        .send_email(
            EmailAddress {
                email: "ada@example.com".into(),
                name: Some("Ada".into()),
            },
            "Your order has shipped".into(),
            "It is on its way.".into(),
        )
        .with_cc(vec![EmailAddress {
            email: "ops@example.com".into(),
            name: None,
        }])
        .await?
        .get(wait)
        .await?;
    println!(
        "tasks.send_email       -> {} accepted for {:?}",
        receipt.message_id, receipt.accepted
    );

    let removed = tasks.cleanup_sessions().await?.get(wait).await?;
    println!("tasks.cleanup_sessions -> {removed} idle sessions removed");

    let user = tasks
        .create_user("grace@example.com".into())
        .with_role(Role::Staff)
        .await?
        .get(wait)
        .await?;
    println!(
        "tasks.create_user      -> {} ({:?}) created on {}",
        user.id, user.role, user.created_on
    );

    let order = Order {
        id: Uuid::new_v4(),
        customer_id: user.id,
        lines: vec![
            OrderLine {
                sku: "TEA-01".into(),
                quantity: 2,
                unit_price_cents: 450,
            },
            OrderLine {
                sku: "MUG-07".into(),
                quantity: 1,
                unit_price_cents: 1200,
            },
        ],
        shipping: Some(Address {
            street: "1 Analytical Row".into(),
            city: "London".into(),
            postcode: "N1 9GU".into(),
            country: "GB".into(),
        }),
        metadata: BTreeMap::new(),
    };
    let outcome = tasks.process_order(order).await?.get(wait).await?;
    println!(
        "tasks.process_order    -> {:?}, total {} cents",
        outcome.status, outcome.total_cents
    );

    let since = NaiveDate::from_ymd_opt(2026, 11, 1).expect("a valid date");
    let until = NaiveDate::from_ymd_opt(2026, 11, 7);
    let report = tasks
        .generate_report("weekly-sales".into(), since)
        .with_until(until)
        .with_filters(serde_json::json!({"region": "eu"}))
        .await?
        .get(wait)
        .await?;
    println!(
        "tasks.generate_report  -> {} rows, {} bytes of {:?}",
        report.rows,
        report.content.len(),
        report.format
    );

    // A failing task: the error arrives typed, with the exception name the task raised.
    let failed = tasks
        .send_email(
            EmailAddress {
                email: "not-an-address".into(),
                name: None,
            },
            "Hello".into(),
            String::new(),
        )
        .await?
        .get(wait)
        .await;
    match failed {
        Err(celerity::ResultError::Failed(failure)) => {
            println!("tasks.send_email (bad)  -> FAILURE {failure}")
        }
        other => {
            worker.shutdown().await;
            return Err(format!("tasks.send_email (bad) should have failed; got {other:?}").into());
        }
    }

    worker.shutdown().await;
    // Closes broker connections (RabbitMQ's) before the runtime stops.
    app.close().await;
    Ok(())
}
