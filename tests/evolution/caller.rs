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
