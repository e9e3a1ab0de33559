//! The dependency-injection container.
//!
//! Worker components are built fresh for every task execution (prototype scope), from
//! singletons the worker holds for its whole life (pools, clients, settings). After each
//! execution the component's `cleanup` runs.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::client::FromClient;
use crate::task::TaskContext;

/// A component the container builds for each task execution.
///
/// ```
/// use std::sync::Arc;
/// use celerity::{BuildError, Component, Scope};
///
/// struct Settings { sender: String }
///
/// struct Mailer { settings: Arc<Settings> }
///
/// impl Component for Mailer {
///     async fn build(scope: &Scope<'_>) -> Result<Self, BuildError> {
///         Ok(Mailer { settings: scope.singleton::<Settings>()? })
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Celerity component",
    note = "implement `celerity::Component` for `{Self}` so the worker's container can build it for each task"
)]
pub trait Component: Send + Sync + Sized + 'static {
    /// Builds a fresh instance for one execution.
    fn build(scope: &Scope<'_>) -> impl Future<Output = Result<Self, BuildError>> + Send;

    /// Runs after every execution that built this instance.
    fn cleanup(self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Why a component could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not build `{component}`: {message}")]
pub struct BuildError {
    /// The component being built.
    pub component: String,
    /// What went wrong.
    pub message: String,
}

impl BuildError {
    /// A build failure of component `C`.
    pub fn of<C>(message: impl Into<String>) -> Self {
        BuildError {
            component: type_name::<C>().to_owned(),
            message: message.into(),
        }
    }
}

/// The singletons of one worker.
#[derive(Default)]
pub struct Container {
    singletons: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("singletons", &self.singletons.len())
            .finish()
    }
}

impl Container {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a singleton, replacing any earlier one of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.singletons.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The singleton of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.singletons
            .get(&TypeId::of::<T>())
            .cloned()
            .and_then(|any| any.downcast::<T>().ok())
    }
}

/// What a component's `build` can resolve: singletons, the task context and clients.
pub struct Scope<'a> {
    pub(crate) container: &'a Container,
    pub(crate) context: &'a TaskContext,
}

impl Scope<'_> {
    /// The singleton of type `T`, or an error naming the missing type.
    pub fn singleton<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, BuildError> {
        self.container.get::<T>().ok_or_else(|| BuildError {
            component: "component".into(),
            message: format!("no singleton of type `{}` is registered", type_name::<T>()),
        })
    }

    /// The context of the execution the component is built for.
    pub fn context(&self) -> &TaskContext {
        self.context
    }

    /// A client (such as a generated `TasksRegistry`) whose tasks are children of the
    /// current one.
    pub fn client<T: FromClient>(&self) -> T {
        T::from_client(self.context.client().clone())
    }
}
