//! Workflows of the shop's tasks: a group, a chain and a chord, typed by the compiler.
//!
//! Runs a worker and the workflows in one process, on the embedded in-memory broker by
//! default: `cargo run --example workflows`. Set `CELERITY_BROKER_URL` and
//! `CELERITY_RESULT_BACKEND` (e.g. `redis://127.0.0.1:6379/0`) to run them through Redis,
//! where Python Celery workers could run any of the steps.

use std::time::Duration;

use celerity::App;
use celerity::canvas::{chain, chord, group};
use celerity_shop::tasks::{EmailAddress, Order, OrderLine, TasksRegistry};
use uuid::Uuid;

/// An order of `quantity` items at 2.50 each.
fn order(quantity: u32) -> Order {
    Order {
        id: Uuid::new_v4(),
        customer_id: Uuid::new_v4(),
        lines: vec![OrderLine {
            sku: "TEA-1".into(),
            quantity,
            unit_price_cents: 250,
        }],
        shipping: None,
        metadata: Default::default(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = App::from_env().await?;
    let mut worker = app.worker();
    celerity_shop::register(&mut worker);
    let worker = worker.start().await?;
    let tasks = TasksRegistry::new(app.client());
    let wait = Duration::from_secs(30);
    let ops = EmailAddress {
        email: "ops@shop.example".into(),
        name: Some("Operations".into()),
    };

    // A group: every order processed side by side; the results come back in order.
    let batch = group((1..=3).map(|n| tasks.process_order(order(n)).s()));
    let outcomes = tasks.client().send(batch).await?.get(wait).await?;
    let totals: Vec<i64> = outcomes.iter().map(|o| o.total_cents).collect();
    println!("group  -> totals {totals:?}");

    // A chain: each step receives the previous step's result as its first argument.
    // `summarize_orders(outcomes)` returns an `OrderSummary`, which `email_summary_s(to)`
    // takes first; a step that took anything else would not compile.
    let report =
        chain(tasks.summarize_orders(outcomes).s()).then(tasks.email_summary_s(ops.clone()));
    let receipt = tasks.client().send(report).await?;
    let summary = receipt
        .parent()
        .expect("the summary step")
        .get(wait)
        .await?;
    println!(
        "chain  -> summary {summary}, emailed as {}",
        receipt.get(wait).await?.message_id
    );

    // A chord: ten orders processed side by side, then one body with all ten outcomes,
    // here itself a chain (summarize, then email the summary).
    let header = group((1..=10).map(|n| tasks.process_order(order(n)).s()));
    let body = chain(tasks.summarize_orders_s()).then(tasks.email_summary_s(ops));
    let receipt = tasks
        .client()
        .send(chord(header, body))
        .await?
        .get(wait)
        .await?;
    println!("chord  -> emailed to {:?}", receipt.accepted);

    // Callbacks: on success the summary is emailed; on failure `alert_ops` gets the
    // failed task's id.
    let summarize = tasks
        .summarize_orders(Vec::new())
        .s()
        .link(tasks.email_summary_s(EmailAddress {
            email: "ops@shop.example".into(),
            name: None,
        }))?
        .link_error(tasks.alert_ops_s())?;
    let summary = tasks.client().send(summarize).await?.get(wait).await?;
    println!("link   -> summary of {} orders, emailed", summary.orders);

    worker.shutdown().await;
    Ok(())
}
