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
use super::terminate::Stop;
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

/// How a run ended.
pub(crate) enum Ran {
    /// The task returned (or failed, panicked, ran out of time).
    Finished(TaskResult<Value>),
    /// It was stopped on request (`revoke` with `terminate`) before it finished.
    Terminated,
}

/// A type-erased task runner.
pub(crate) trait Handler: Send + Sync {
    /// Decodes, builds the component, runs the method (aborted after `time_limit` or when
    /// `stop` is requested, a panic caught), cleans the component up whatever happened,
    /// encodes the result.
    fn run(
        &self,
        container: Arc<Container>,
        ctx: TaskContext,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        time_limit: Option<Duration>,
        stop: Stop,
    ) -> BoxFuture<'static, Ran>;
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
        stop: Stop,
    ) -> BoxFuture<'static, Ran> {
        let spec = self.spec;
        Box::pin(async move {
            let mut stopped = std::pin::pin!(stop.requested());
            let run = async {
                let args: A = decode_args(spec, args, kwargs)?;
                let deps = C::Deps::resolve(&container, ctx.client()).map_err(build_failure)?;
                let component = tokio::select! {
                    built = C::build(deps, &ctx) => built.map_err(build_failure)?,
                    () = &mut stopped => return Ok(Ran::Terminated),
                };
                // A panic becomes a failure as soon as it is caught: the hook noted its
                // place for this thread, and the task may move to another at the next await.
                let call = AssertUnwindSafe(args.invoke(&component, &ctx))
                    .catch_unwind()
                    .map(|outcome| outcome.unwrap_or_else(|panic| Err(panic_failure(panic))));
                let limited = async {
                    match time_limit {
                        Some(limit) => match tokio::time::timeout(limit, call).await {
                            Ok(outcome) => outcome,
                            Err(_) => Err(time_limit_exceeded(limit)),
                        },
                        None => call.await,
                    }
                };
                // Stopped, the call's future is dropped where it waits: what it holds is
                // dropped with it.
                let outcome = tokio::select! {
                    outcome = limited => Some(outcome),
                    () = &mut stopped => None,
                };
                // Cleanup runs on every outcome, before the result is reported.
                component.cleanup().await;
                let Some(outcome) = outcome else {
                    return Ok(Ran::Terminated);
                };
                let value = outcome?;
                let value = serde_json::to_value(value).map_err(|e| {
                    TaskError::new("EncodeError", format!("could not encode the result: {e}"))
                })?;
                Ok(Ran::Finished(Ok(value)))
            };
            run.await
                .unwrap_or_else(|error: TaskError| Ran::Finished(Err(error)))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::container::ContainerBuilder;
    use crate::worker::terminate::RunningTasks;

    /// What became of a napping task.
    #[derive(Default)]
    struct Seen {
        dropped: AtomicUsize,
        cleaned_up: AtomicUsize,
        woke: AtomicUsize,
    }

    struct Napper(Arc<Seen>);

    impl Component for Napper {
        type Deps = Arc<Seen>;
        async fn build(seen: Arc<Seen>, _ctx: &TaskContext) -> Result<Self, BuildError> {
            Ok(Napper(seen))
        }
        async fn cleanup(self) {
            self.0.cleaned_up.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct OnDrop(Arc<Seen>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(serde::Deserialize)]
    struct Nap {}

    impl Invoke<Napper> for Nap {
        type Output = ();
        async fn invoke(self, napper: &Napper, _ctx: &TaskContext) -> TaskResult<()> {
            let _guard = OnDrop(napper.0.clone());
            tokio::time::sleep(Duration::from_secs(3600)).await;
            napper.0.woke.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    static NAP: TaskSpec = TaskSpec::new("t.nap", &[]);

    #[tokio::test]
    async fn a_stopped_task_is_dropped_where_it_waits_then_cleaned_up() {
        let client = crate::App::memory().client();
        let mut container = ContainerBuilder::default();
        container.instance(Seen::default());
        container.component::<Napper>();
        let container = Arc::new(container.build(&client).await.unwrap());
        let mut table = TaskTable::default();
        table.insert::<Napper, Nap>(&NAP);
        let running = RunningTasks::default();
        let (registration, stop) = running.register("nap-1");
        let ctx = TaskContext::for_test(NAP.name);
        let handler = table.get(NAP.name).unwrap().handler.clone();
        let run = tokio::spawn(handler.run(container.clone(), ctx, vec![], Map::new(), None, stop));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(running.terminate("nap-1"));
        let ran = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("a stop ends the run at once")
            .unwrap();
        assert!(matches!(ran, Ran::Terminated));
        drop(registration);
        let seen = container.get::<Seen>().unwrap();
        assert_eq!(seen.dropped.load(Ordering::SeqCst), 1, "its guard dropped");
        assert_eq!(seen.woke.load(Ordering::SeqCst), 0, "the rest never ran");
        assert_eq!(
            seen.cleaned_up.load(Ordering::SeqCst),
            1,
            "the component cleaned up"
        );
    }
}
