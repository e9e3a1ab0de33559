// Reading a task's result as another type does not compile.
async fn read(tasks: celerity_shop::tasks::TasksRegistry) -> celerity::Result<()> {
    let sent = tasks.ping().await?;
    let _count: u64 = sent.get(std::time::Duration::from_secs(1)).await.unwrap();
    Ok(())
}

fn main() {}
