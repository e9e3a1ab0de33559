//! Sends the shop's tasks to a worker running elsewhere, and prints their typed results.
//!
//! Start `cargo run --example worker` in one terminal with the same broker and backend,
//! then, in another:
//!
//! ```sh
//! CELERITY_BROKER_URL=redis://127.0.0.1:6379/0 CELERITY_RESULT_BACKEND=redis://127.0.0.1:6379/0 \
//!   cargo run --example producer
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use celerity::{App, ResultError};
use celerity_shop::tasks::{EmailAddress, Order, OrderLine, TasksRegistry};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = App::from_env().await?;
    if app.broker().describe().starts_with("memory") {
        return Err(
            "set CELERITY_BROKER_URL and CELERITY_RESULT_BACKEND to the worker's \
                    (e.g. redis://127.0.0.1:6379/0): an in-memory broker reaches no other process"
                .into(),
        );
    }
    println!(
        "sending through {}, results from {}",
        app.broker().describe(),
        app.backend().describe()
    );
    let tasks = TasksRegistry::new(app.client());
    let wait = Duration::from_secs(30);

    let pong = tasks.ping().await?;
    println!(
        "tasks.ping           [{}] -> {:?}",
        pong.id(),
        pong.get(wait).await?
    );

    let order = Order {
        id: Uuid::new_v4(),
        customer_id: Uuid::new_v4(),
        lines: vec![OrderLine {
            sku: "TEA-01".into(),
            quantity: 3,
            unit_price_cents: 450,
        }],
        shipping: None,
        metadata: BTreeMap::new(),
    };
    let processed = tasks.process_order(order).with_notify(false).await?;
    let outcome = processed.get(wait).await?;
    println!(
        "tasks.process_order  [{}] -> {:?}, total {} cents, warnings {:?}",
        processed.id(),
        outcome.status,
        outcome.total_cents,
        outcome.warnings
    );

    // A task that fails: the error comes back typed, with the exception the task raised.
    let bad = EmailAddress {
        email: "not-an-address".into(),
        name: None,
    };
    let sent = tasks.send_email(bad, "Hello".into(), String::new()).await?;
    match sent.get(wait).await {
        Err(ResultError::Failed(failure)) => {
            println!("tasks.send_email     [{}] -> FAILURE {failure}", sent.id())
        }
        other => {
            return Err(format!(
                "tasks.send_email     [{}] should have failed; got {other:?}",
                sent.id()
            )
            .into());
        }
    }
    Ok(())
}
