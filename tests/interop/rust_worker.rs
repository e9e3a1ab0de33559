//! Celerity's implementation of the interop tasks: the same behaviour as
//! `tests/python/interop_app.py`, task for task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use celerity::{
    App, BuildError, Component, Decimal, TaskContext, TaskError, TaskResult, Worker, WorkerBuilder,
};
use chrono::Utc;
use serde_json::Value;

use super::tasks::{self, Customer, Interop, Profile, Scheduled, Tagged, Tally, Timing};

/// How many times `interop.tally` ran on one Celerity worker, by key: a worker's
/// singleton, read with `Worker::singleton::<Tallies>()`.
#[derive(Debug, Default)]
pub struct Tallies(Mutex<BTreeMap<String, u32>>);

impl Tallies {
    /// The runs recorded under `key`.
    pub fn runs(&self, key: &str) -> u32 {
        let tallies = self.0.lock().unwrap_or_else(|p| p.into_inner());
        tallies.get(key).copied().unwrap_or(0)
    }

    fn record(&self, key: String) {
        let mut tallies = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *tallies.entry(key).or_default() += 1;
    }
}

/// Records a run under its key when dropped.
struct OnDrop(Arc<Tallies>, String);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.record(std::mem::take(&mut self.1));
    }
}

/// Runs every interop task.
pub struct RustInterop {
    tallies: Arc<Tallies>,
}

impl Component for RustInterop {
    type Deps = Arc<Tallies>;

    async fn build(tallies: Arc<Tallies>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(RustInterop { tallies })
    }
}

impl Interop for RustInterop {
    async fn add(&self, _ctx: &TaskContext, x: i64, y: i64) -> TaskResult<i64> {
        Ok(x + y)
    }

    async fn greet(
        &self,
        _ctx: &TaskContext,
        name: String,
        greeting: String,
        punctuation: String,
    ) -> TaskResult<String> {
        Ok(format!("{greeting}, {name}{punctuation}"))
    }

    async fn profile(&self, _ctx: &TaskContext, customer: Customer) -> TaskResult<Profile> {
        Ok(Profile {
            greeting: format!("Hello, {}!", customer.name),
            tag_count: u32::try_from(customer.tags.len()).unwrap_or(u32::MAX),
            city: customer.address.map(|address| address.city),
            total_score: customer.scores.values().sum(),
            member_for_days: (customer.last_seen.date_naive() - customer.joined).num_days(),
            next_visit: customer.last_seen + chrono::Duration::days(1),
        })
    }

    async fn charge(
        &self,
        _ctx: &TaskContext,
        card: String,
        amount_cents: i64,
    ) -> TaskResult<String> {
        if amount_cents < 1 {
            return Err(TaskError::python(
                "ValueError",
                "builtins",
                format!("amount must be positive, got {amount_cents}"),
            ));
        }
        if card.ends_with("0002") {
            return Err(TaskError::new(
                "PaymentDeclined",
                format!("card {card} was declined"),
            ));
        }
        let last_four = &card[card.len().saturating_sub(4)..];
        Ok(format!("charged {amount_cents} to card ending {last_four}"))
    }

    async fn total(&self, _ctx: &TaskContext, prices: Vec<Decimal>) -> TaskResult<Decimal> {
        Ok(Decimal(prices.iter().map(|price| price.0).sum()))
    }

    async fn quota(&self, _ctx: &TaskContext, account: String, used: i64) -> TaskResult<String> {
        let message = format!("account {account} over quota");
        Err(TaskError::python_args(
            "ValueError",
            "builtins",
            vec![message.into(), used.into()],
        ))
    }

    async fn crash(&self, _ctx: &TaskContext, reason: String) -> TaskResult<String> {
        panic!("{reason}")
    }

    async fn flaky(&self, ctx: &TaskContext, failures: u32) -> TaskResult<u32> {
        if ctx.retries < failures {
            let attempt = ctx.retries + 1;
            let cause = TaskError::new("GatewayTimeout", format!("attempt {attempt} timed out"));
            return Err(TaskError::retry(Some(Duration::from_millis(500))).because(cause));
        }
        Ok(ctx.retries)
    }

    /// Records `slow-ended:<id>` when its future is dropped, however it ends, and
    /// `slow-finished:<id>` when the sleep ran to its end: a task stopped by a revoke that
    /// terminates has the first and not the second.
    async fn slow(&self, ctx: &TaskContext, seconds: f64) -> TaskResult<String> {
        let _ended = OnDrop(self.tallies.clone(), format!("slow-ended:{}", ctx.id));
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        self.tallies.record(format!("slow-finished:{}", ctx.id));
        Ok("rust".into())
    }

    async fn tag(&self, _ctx: &TaskContext, n: i64) -> TaskResult<Tagged> {
        // As long as the Python task's, so a burst spreads over every worker on the queue.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Tagged {
            n,
            worker: "rust".into(),
        })
    }

    async fn timing(&self, ctx: &TaskContext) -> TaskResult<Timing> {
        Ok(Timing {
            eta: ctx.eta,
            ran_at: Utc::now(),
        })
    }

    async fn scheduled(&self, ctx: &TaskContext, label: String) -> TaskResult<Scheduled> {
        Ok(Scheduled {
            label,
            schedule: ctx.periodic_task_name.clone(),
            worker: "rust".into(),
        })
    }

    async fn tsum(&self, _ctx: &TaskContext, xs: Vec<i64>) -> TaskResult<i64> {
        Ok(xs.iter().sum())
    }

    async fn tally(&self, _ctx: &TaskContext, items: Vec<Value>, key: String) -> TaskResult<Tally> {
        self.tallies.record(key);
        Ok(Tally {
            items,
            worker: "rust".into(),
        })
    }
}

/// Starts a Celerity worker running the interop tasks from `queue`.
pub async fn start(app: &App, queue: &str) -> Worker {
    start_as(
        app,
        queue,
        &format!("celerity-{}@interop", uuid::Uuid::new_v4().simple()),
    )
    .await
}

/// Starts a Celerity worker named `node` running the interop tasks from `queue`.
pub async fn start_as(app: &App, queue: &str, node: &str) -> Worker {
    start_with(app, queue, node, |_| {}).await
}

/// Starts a Celerity worker named `node` running the interop tasks from `queue`, its
/// results extended as Celery's `result_extended` extends them.
pub async fn start_extended(app: &App, queue: &str, node: &str) -> Worker {
    start_with(app, queue, node, |builder| {
        builder.result_extended(true);
    })
    .await
}

/// Starts a Celerity worker named `node` running the interop tasks from `queue`, sending
/// task events as Celery's `-E` makes a worker send them.
pub async fn start_with_task_events(app: &App, queue: &str, node: &str) -> Worker {
    start_with(app, queue, node, |builder| {
        builder.task_events(true);
    })
    .await
}

async fn start_with(
    app: &App,
    queue: &str,
    node: &str,
    configure: impl FnOnce(&mut WorkerBuilder),
) -> Worker {
    let mut builder = app.worker();
    tasks::register_interop::<RustInterop>(&mut builder);
    builder
        .singleton(Tallies::default())
        .queues([queue])
        .concurrency(4)
        .hostname(node);
    configure(&mut builder);
    builder.start().await.expect("the Celerity worker starts")
}
