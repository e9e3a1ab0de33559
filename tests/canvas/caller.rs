// Workflows built from the client generated for tests/canvas/workflows.yaml. Each step
// takes what the step before it returns, so every one of them compiles; the mistakes
// that do not are in tests/ui/canvas_*.rs.
use std::time::Duration;

use celerity::canvas::{chain, chord, group};

async fn workflows(tasks: &generated::TasksRegistry) -> Result<(), Box<dyn std::error::Error>> {
    let client = tasks.client();
    let wait = Duration::from_secs(5);

    // add(2, 2), then mul(result, 4), then describe(result): Celery's
    // `chain(add.s(2, 2), mul.s(4), describe.s())`.
    let arithmetic = chain(tasks.add(2, 2).s())
        .then(tasks.mul_s(4))
        .then(tasks.describe_s());
    let text: String = client.send(arithmetic).await?.get(wait).await?;

    // An immutable step (`.si()`) ignores the result before it, so it fits after any step.
    let then_ping = chain(tasks.add(1, 1).s()).then(tasks.ping().si());
    let pong: String = client.send(then_ping).await?.get(wait).await?;

    // A group of calls, and a group of chains: every result, in order.
    let sums = group((0..10).map(|i| tasks.add(i, i).s()));
    let each: Vec<i64> = client.send(sums).await?.get(wait).await?;
    let pipelines = group((0..3).map(|i| chain(tasks.add(i, 1).s()).then(tasks.mul_s(2))));
    let products: Vec<i64> = client.send(pipelines).await?.get(wait).await?;

    // A chord: the body receives the header's results as a `Vec<i64>`; a chain may go on
    // after it.
    let header = group((0..10).map(|i| tasks.add(i, i).s()));
    let total = chain(chord(header, tasks.xsum_s())).then(tasks.describe_s());
    let summary: String = client.send(total).await?.get(wait).await?;

    // A callback receives the result; an errback receives the failed task's id.
    let linked = tasks
        .add(2, 2)
        .s()
        .link(tasks.describe_s())?
        .link_error(tasks.record_failure_s())?;
    let sum: i64 = client.send(linked).await?.get(wait).await?;

    let _ = (text, pong, each, products, summary, sum);
    Ok(())
}
