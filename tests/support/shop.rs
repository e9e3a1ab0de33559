//! The reference application's round trip, shared by the tests of every transport: each
//! task of `schemas/tasks.yaml` sent through the generated client, its typed result back.

use std::collections::BTreeMap;
use std::time::Duration;

use celerity::ResultError;
use celerity_shop::tasks::{
    EmailAddress, Order, OrderLine, OrderStatus, ReportFormat, Role, TasksRegistry,
};
use chrono::NaiveDate;
use serde_json::json;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// An email address without a display name.
pub fn address(email: &str) -> EmailAddress {
    EmailAddress {
        email: email.into(),
        name: None,
    }
}

/// Sends every reference task to queue `q` (which a worker of the shop consumes) and
/// checks each typed result, and a failure's exception type and message.
pub async fn every_reference_task_round_trips(tasks: &TasksRegistry, q: &str) {
    assert_eq!(
        tasks
            .ping()
            .queue(q)
            .await
            .unwrap()
            .get(WAIT)
            .await
            .unwrap(),
        "pong"
    );

    let receipt = tasks
        .send_email(address("ada@example.com"), "Hi".into(), "Body".into())
        .with_cc(vec![address("ops@example.com")])
        .queue(q)
        .await
        .unwrap();
    let receipt_id = receipt.id().to_owned();
    let receipt = receipt.get(WAIT).await.unwrap();
    assert_eq!(receipt.accepted, ["ada@example.com", "ops@example.com"]);
    assert_eq!(receipt.message_id, format!("<{receipt_id}@shop.example>"));

    let removed = tasks
        .cleanup_sessions()
        .with_max_idle_minutes(30)
        .with_dry_run(true)
        .queue(q)
        .await
        .unwrap();
    assert_eq!(removed.get(WAIT).await.unwrap(), 0);

    let user = tasks
        .create_user("grace@example.com".into())
        .with_role(Role::Admin)
        .with_display_name(Some("Grace".into()))
        .queue(q)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(
        (user.email.as_str(), user.role),
        ("grace@example.com", Role::Admin)
    );

    let order = Order {
        id: Uuid::new_v4(),
        customer_id: user.id,
        lines: vec![
            OrderLine {
                sku: "TEA-01".into(),
                quantity: 3,
                unit_price_cents: 450,
            },
            OrderLine {
                sku: "BO-KETTLE".into(),
                quantity: 1,
                unit_price_cents: 3000,
            },
        ],
        shipping: None,
        metadata: BTreeMap::from([("channel".into(), "web".into())]),
    };
    let outcome = tasks
        .process_order(order.clone())
        .with_notify(false)
        .queue(q)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!(outcome.order_id, order.id);
    assert_eq!(outcome.status, OrderStatus::Backordered);
    assert_eq!(outcome.total_cents, 3 * 450 + 3000);
    assert_eq!(
        outcome.warnings,
        ["no shipping address: collection in store"]
    );

    let since = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let report = tasks
        .generate_report("r".into(), since)
        .with_format(ReportFormat::Json)
        .with_until(NaiveDate::from_ymd_opt(2026, 1, 3))
        .with_filters(json!({"region": "eu"}))
        .queue(q)
        .await
        .unwrap()
        .get(WAIT)
        .await
        .unwrap();
    assert_eq!((report.rows, report.format), (3, ReportFormat::Json));
    assert_eq!(report.totals["orders"], 9.0);
    assert_eq!(
        String::from_utf8(report.content.0).unwrap(),
        "day,region,orders\n2026-01-01,eu,0\n2026-01-02,eu,3\n2026-01-03,eu,6\n"
    );

    let failed = tasks
        .send_email(address("nobody"), "Hi".into(), String::new())
        .queue(q)
        .await
        .unwrap();
    match failed.get(WAIT).await {
        Err(ResultError::Failed(failure)) => {
            assert_eq!(failure.exc_type, "InvalidAddress");
            assert_eq!(failure.message, "`nobody` is not an email address");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}
