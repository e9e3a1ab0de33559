//! The dispatch table: task name → decode arguments → build the component → call the
//! method → encode the result. Generated code supplies the typed pieces ([`Invoke`]
//! impls); everything else is written once, here.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::args::decode_args;
use crate::container::{Component, Container, Scope};
use crate::spec::TaskSpec;
use crate::task::{TaskContext, TaskError, TaskResult};

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
    fn run(
        &self,
        container: Arc<Container>,
        ctx: TaskContext,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
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
    ) -> BoxFuture<'static, TaskResult<Value>> {
        let spec = self.spec;
        Box::pin(async move {
            let args: A = decode_args(spec, args, kwargs)?;
            let scope = Scope {
                container: &container,
                context: &ctx,
            };
            let component = C::build(&scope)
                .await
                .map_err(|e| TaskError::new("ComponentBuildError", e.to_string()))?;
            let outcome = args.invoke(&component, &ctx).await;
            component.cleanup().await;
            let value = outcome?;
            serde_json::to_value(value).map_err(|e| {
                TaskError::new("EncodeError", format!("could not encode the result: {e}"))
            })
        })
    }
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
    pub fn insert<C, A>(&mut self, spec: &'static TaskSpec)
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

    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.tasks.get(name)
    }

    pub fn specs(&self) -> impl Iterator<Item = &'static TaskSpec> + '_ {
        self.tasks.values().map(|r| r.spec)
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
