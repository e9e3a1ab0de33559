//! The tasks of the benchmark's chord row, declared by hand as generated code declares a
//! schema's (the shop's schema has no arithmetic): `bench.add(x, y) -> x + y` for the
//! header and `bench.tsum(xs) -> sum(xs)` for the body. `bench/celery_bench.py` declares
//! the same two for Python's side.

use celerity::{
    ArgSpec, BuildError, Component, Invoke, TaskContext, TaskResult, TaskSpec, WorkerBuilder,
};
use serde::{Deserialize, Serialize};

/// `bench.add(x, y) -> x + y`.
pub static ADD: TaskSpec = TaskSpec::new(
    "bench.add",
    &[ArgSpec::new("x", true), ArgSpec::new("y", true)],
);

/// `bench.tsum(xs) -> sum(xs)`.
pub static TSUM: TaskSpec = TaskSpec::new("bench.tsum", &[ArgSpec::new("xs", true)]);

/// Runs both.
pub struct Arithmetic;

impl Component for Arithmetic {
    type Deps = ();

    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Arithmetic)
    }
}

/// The arguments of `bench.add`, as sent and as run.
#[derive(Serialize, Deserialize)]
pub struct AddArgs {
    pub x: i64,
    pub y: i64,
}

impl Invoke<Arithmetic> for AddArgs {
    type Output = i64;

    async fn invoke(self, _tasks: &Arithmetic, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.x + self.y)
    }
}

/// The arguments of `bench.tsum`: the header's results, in order.
#[derive(Deserialize)]
pub struct TsumArgs {
    xs: Vec<i64>,
}

impl Invoke<Arithmetic> for TsumArgs {
    type Output = i64;

    async fn invoke(self, _tasks: &Arithmetic, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.xs.iter().sum())
    }
}

/// Adds both to a worker.
pub fn register(builder: &mut WorkerBuilder) {
    builder
        .register::<Arithmetic, AddArgs>(&ADD)
        .register::<Arithmetic, TsumArgs>(&TSUM);
}
