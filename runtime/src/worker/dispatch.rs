//! The dispatch table: task name → decode arguments → build the component → call the
//! method → clean up → encode the result. Generated code supplies the typed pieces
//! ([`Invoke`] impls); everything else is written once, here.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::args::decode_args;
use super::panics;
use crate::container::{BuildError, Component, Container, Dependencies};
use crate::protocol::ExceptionInfo;
use crate::spec::TaskSpec;
use crate::task::{TASK_ERROR_MODULE, TaskContext, TaskError, TaskResult};
use crate::traceback::Traceback;

/// Calls a component's task method with decoded arguments. Generated for each task's
/// argument struct.
pub trait Invoke<C>: Sized + Send + 'static {
    /// The task's result type.
    type Output: Serialize + Send + 'static;

    /// Runs the task on `component`.
    fn invoke<'a>(
        self,
        component: &'a C,
        ctx: &'a TaskContext,
    ) -> impl Future<Output = TaskResult<Self::Output>> + Send + 'a;
}

/// A type-erased task runner.
pub(crate) trait Handler: Send + Sync {
    /// Decodes, builds the component, runs the method (aborted after `time_limit`, a
    /// panic caught), cleans the component up whatever happened, encodes the result.
    fn run(
        &self,
        container: Arc<Container>,
        ctx: TaskContext,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        time_limit: Option<Duration>,
    ) -> BoxFuture<'static, TaskResult<Value>>;
}

struct TypedHandler<C, A> {
    spec: &'static TaskSpec,
    _types: PhantomData<fn() -> (C, A)>,
}

impl<C, A> Handler for TypedHandler<C, A>
where
    C: Component,
    A: Invoke<C> + DeserializeOwned,
{
    fn run(
        &self,
        container: Arc<Container>,
        ctx: TaskContext,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        time_limit: Option<Duration>,
    ) -> BoxFuture<'static, TaskResult<Value>> {
        let spec = self.spec;
        Box::pin(async move {
            let args: A = decode_args(spec, args, kwargs)?;
            let deps = C::Deps::resolve(&container, ctx.client()).map_err(build_failure)?;
            let component = C::build(deps, &ctx).await.map_err(build_failure)?;
            // A panic becomes a failure as soon as it is caught: the hook noted its place
            // for this thread, and the task may move to another at the next await.
            let call = AssertUnwindSafe(args.invoke(&component, &ctx))
                .catch_unwind()
                .map(|outcome| outcome.unwrap_or_else(|panic| Err(panic_failure(panic))));
            let outcome = match time_limit {
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(time_limit_exceeded(limit)),
                },
                None => call.await,
            };
            // Cleanup runs on every outcome, before the result is reported.
            component.cleanup().await;
            let value = outcome?;
            serde_json::to_value(value).map_err(|e| {
                TaskError::new("EncodeError", format!("could not encode the result: {e}"))
            })
        })
    }
}

fn build_failure(error: BuildError) -> TaskError {
    TaskError::new("ComponentBuildError", error.to_string())
}

/// Celery's hard time limit error (`billiard.exceptions.TimeLimitExceeded`, re-exported by
/// `celery.exceptions`), whose argument is the limit in seconds.
fn time_limit_exceeded(limit: Duration) -> TaskError {
    tracing::error!(limit = ?limit, "hard time limit exceeded; the task was aborted");
    TaskError::python(
        "TimeLimitExceeded",
        super::CELERY_EXCEPTIONS,
        format!("{}", limit.as_secs_f64()),
    )
}

/// The failure a caught panic is: `Panic` with its message, made where it panicked.
fn panic_failure(panic: Box<dyn std::any::Any + Send>) -> TaskError {
    let message = panics::message_of(&*panic);
    let place = panics::place_of(&message);
    let text = message.unwrap_or_else(|| "the task panicked".into());
    tracing::error!(panic = %text, "the task panicked");
    let exception = ExceptionInfo::new("Panic", TASK_ERROR_MODULE, text);
    TaskError::failure(exception, Traceback::at(place))
}

/// A registered task: its spec and its runner.
#[derive(Clone)]
pub(crate) struct Registered {
    pub spec: &'static TaskSpec,
    pub handler: Arc<dyn Handler>,
}

/// Task name → registered task.
#[derive(Clone, Default)]
pub(crate) struct TaskTable {
    tasks: HashMap<&'static str, Registered>,
}

impl TaskTable {
    pub(crate) fn insert<C, A>(&mut self, spec: &'static TaskSpec)
    where
        C: Component,
        A: Invoke<C> + DeserializeOwned,
    {
        let handler = Arc::new(TypedHandler::<C, A> {
            spec,
            _types: PhantomData,
        });
        self.tasks.insert(spec.name, Registered { spec, handler });
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Registered> {
        self.tasks.get(name)
    }

    pub(crate) fn specs(&self) -> impl Iterator<Item = &'static TaskSpec> + '_ {
        self.tasks.values().map(|r| r.spec)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
