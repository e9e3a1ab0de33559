// A caller written against tests/evolution/v1.yaml; it must compile against v2.yaml too.
async fn call_billing(tasks: &generated::TasksRegistry) -> celerity::Result<()> {
    let invoice = tasks
        .invoice("ACME".into(), 1_250)
        .countdown(::std::time::Duration::from_secs(5))
        .await?;
    let refund = tasks
        .refund(invoice.id().to_owned())
        .with_reason("duplicate".into())
        .priority(3)
        .await?;
    let _ = (invoice, refund);
    Ok(())
}

// A workflow step written against v1: `refund_s` takes the invoice id from the step
// before it, and still does once `refund` gains `notify` (its default travels).
fn invoice_then_refund(
    tasks: &generated::TasksRegistry,
) -> celerity::canvas::Chain<(), bool, celerity::AsyncResult<bool>> {
    celerity::canvas::chain(tasks.invoice("ACME".into(), 1_250).s()).then(tasks.refund_s())
}
