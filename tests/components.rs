//! Unit tests of the shop's components, without a worker or a broker: build a component
//! from its dependencies and a `TaskContext::for_test`, call its task method, assert on
//! the typed outcome.

use std::sync::Arc;

use celerity::backend::MemoryBackend;
use celerity::broker::MemoryBroker;
use celerity::{App, Component, TaskContext};
use celerity_shop::Outbox;
use celerity_shop::components::{OrderDesk, SmtpMailer};
use celerity_shop::tasks::{
    EmailAddress, Mailer, Order, OrderLine, OrderStatus, Orders, TasksRegistry,
};

fn address(email: &str) -> EmailAddress {
    EmailAddress {
        email: email.into(),
        name: None,
    }
}

#[tokio::test]
async fn the_mailer_sends_to_every_recipient_and_names_the_message_after_the_task() {
    let outbox = Arc::new(Outbox::default());
    let ctx = TaskContext::for_test("tasks.send_email").with_id("4b1d");
    let mailer = SmtpMailer::build(outbox.clone(), &ctx).await.unwrap();

    let receipt = mailer
        .send_email(
            &ctx,
            address("ada@example.com"),
            "Hello".into(),
            "Body".into(),
            vec![address("ops@example.com")],
            Default::default(),
        )
        .await
        .unwrap();

    assert_eq!(receipt.message_id, "<4b1d@shop.example>");
    assert_eq!(receipt.accepted, ["ada@example.com", "ops@example.com"]);
    assert_eq!(
        outbox.sent(),
        [
            ("ada@example.com".to_owned(), "Hello".to_owned()),
            ("ops@example.com".to_owned(), "Hello".to_owned())
        ]
    );
    assert_eq!(outbox.connections_in_use(), 1, "checked out while built");
    mailer.cleanup().await;
    assert_eq!(outbox.connections_in_use(), 0, "returned by cleanup");
}

#[tokio::test]
async fn the_mailer_refuses_an_address_without_an_at_sign() {
    let outbox = Arc::new(Outbox::default());
    let ctx = TaskContext::for_test("tasks.send_email");
    let mailer = SmtpMailer::build(outbox.clone(), &ctx).await.unwrap();

    let error = mailer
        .send_email(
            &ctx,
            address("nobody"),
            "Hello".into(),
            String::new(),
            vec![],
            Default::default(),
        )
        .await
        .unwrap_err();

    assert_eq!(error.exc_type(), Some("InvalidAddress"));
    assert_eq!(
        error.to_string(),
        "InvalidAddress: `nobody` is not an email address"
    );
    assert!(outbox.sent().is_empty());
}

#[tokio::test]
async fn an_accepted_order_sends_its_confirmation_as_a_child_task() {
    // The context's client publishes to a broker the test can look into.
    let broker = MemoryBroker::new();
    let app = App::new(broker.clone(), MemoryBackend::new());
    let ctx = TaskContext::for_test("tasks.process_order").with_client(app.client());
    let desk = OrderDesk::build(TasksRegistry::new(ctx.client().clone()), &ctx)
        .await
        .unwrap();
    let order = Order {
        id: uuid::Uuid::new_v4(),
        customer_id: uuid::Uuid::new_v4(),
        lines: vec![OrderLine {
            sku: "TEA-01".into(),
            quantity: 2,
            unit_price_cents: 450,
        }],
        shipping: None,
        metadata: [("email".to_owned(), "buyer@example.com".to_owned())].into(),
    };

    let outcome = desk.process_order(&ctx, order, true).await.unwrap();

    assert_eq!(outcome.status, OrderStatus::Accepted);
    assert_eq!(outcome.total_cents, 900);
    assert_eq!(
        broker.len("email"),
        1,
        "one confirmation on the email queue"
    );
}
