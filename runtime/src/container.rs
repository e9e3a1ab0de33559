//! The dependency-injection container (pico-celery's model).
//!
//! - **Singletons** live as long as the worker: registered as values, or built once at
//!   start by async factories ([`Singleton`]) in dependency order, and closed in reverse
//!   order at shutdown.
//! - **Components** ([`Component`]) are built fresh for every task execution (prototype
//!   scope) from their dependencies, and cleaned up after it, whatever the outcome.
//!
//! Dependencies are declared as a type, `type Deps = (Arc<Pool>, TasksRegistry);`, and
//! `build` receives exactly that value: what a component uses and what the container
//! checks cannot drift apart. A missing registration or a cycle fails worker start-up
//! with the path that leads to it, before any message is consumed.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::client::Client;
use crate::task::TaskContext;

/// A component the container builds for each task execution.
///
/// ```
/// use std::sync::Arc;
/// use celerity::{BuildError, Component, TaskContext};
///
/// struct Settings { sender: String }
///
/// struct Mailer { settings: Arc<Settings> }
///
/// impl Component for Mailer {
///     type Deps = Arc<Settings>;
///
///     async fn build(settings: Arc<Settings>, _ctx: &TaskContext) -> Result<Self, BuildError> {
///         Ok(Mailer { settings })
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Celerity component",
    note = "implement `celerity::Component` for `{Self}` so the worker's container can build it for each task"
)]
pub trait Component: Send + Sync + Sized + 'static {
    /// What the component is built from: `()`, an `Arc<T>` singleton, a client such as
    /// the generated `TasksRegistry`, or a tuple of those.
    type Deps: Dependencies;

    /// Builds a fresh instance for one execution.
    fn build(
        deps: Self::Deps,
        ctx: &TaskContext,
    ) -> impl Future<Output = Result<Self, BuildError>> + Send;

    /// Runs after every execution that built this instance: on success, failure, retry,
    /// panic and time limit alike.
    fn cleanup(self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A singleton built once, at worker start, by an async factory.
///
/// ```
/// use std::sync::Arc;
/// use celerity::{BuildError, Singleton};
///
/// struct Settings { url: String }
/// struct Pool { url: String }
///
/// impl Singleton for Pool {
///     type Deps = Arc<Settings>;
///
///     async fn create(settings: Arc<Settings>) -> Result<Self, BuildError> {
///         Ok(Pool { url: settings.url.clone() })
///     }
///
///     async fn close(&self) {
///         // drain connections
///     }
/// }
/// ```
pub trait Singleton: Send + Sync + Sized + 'static {
    /// What the singleton is built from (other singletons).
    type Deps: Dependencies;

    /// Builds the singleton.
    fn create(deps: Self::Deps) -> impl Future<Output = Result<Self, BuildError>> + Send;

    /// Runs once at shutdown, in reverse order of creation.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Why a component or singleton could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not build `{component}`: {message}")]
pub struct BuildError {
    /// The component being built.
    pub component: String,
    /// What went wrong.
    pub message: String,
}

impl BuildError {
    /// A build failure of `C`.
    pub fn of<C>(message: impl Into<String>) -> Self {
        BuildError {
            component: short_name(type_name::<C>()),
            message: message.into(),
        }
    }
}

/// A wiring mistake found at worker start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WiringError {
    /// Something needs a singleton nobody registered.
    #[error(
        "`{component}` needs `{missing}`, which is not registered (path: {path}); register it with `singleton(…)` or `singleton_factory::<…>()`"
    )]
    Missing {
        /// The component or singleton at the start of the path.
        component: String,
        /// The type nobody provides.
        missing: String,
        /// How the component reaches it: `A → B → C`.
        path: String,
    },
    /// Singletons that depend on each other.
    #[error("dependency cycle: {cycle}")]
    Cycle {
        /// The cycle: `A → B → A`.
        cycle: String,
    },
    /// A singleton factory failed.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// One thing a component or singleton needs from the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The singleton's type.
    pub type_id: TypeId,
    /// Its name, for messages.
    pub type_name: &'static str,
}

impl Requirement {
    /// The requirement of a singleton `T`.
    pub fn singleton<T: 'static>() -> Self {
        Requirement {
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
        }
    }
}

/// What a [`Component`] or [`Singleton`] is built from.
pub trait Dependencies: Sized + Send + 'static {
    /// The singletons this needs.
    fn requirements() -> Vec<Requirement>;

    /// Resolves from the container; `client` is the execution's client (or the worker's,
    /// for singletons). Start-up has checked the requirements, so this fails only if a
    /// singleton was removed since.
    fn resolve(container: &Container, client: &Client) -> Result<Self, BuildError>;
}

impl Dependencies for () {
    fn requirements() -> Vec<Requirement> {
        Vec::new()
    }

    fn resolve(_: &Container, _: &Client) -> Result<Self, BuildError> {
        Ok(())
    }
}

impl<T: Send + Sync + 'static> Dependencies for Arc<T> {
    fn requirements() -> Vec<Requirement> {
        vec![Requirement::singleton::<T>()]
    }

    fn resolve(container: &Container, _: &Client) -> Result<Self, BuildError> {
        container.get::<T>().ok_or_else(|| BuildError {
            component: short_name(type_name::<T>()),
            message: "the singleton is not registered".into(),
        })
    }
}

impl Dependencies for Client {
    fn requirements() -> Vec<Requirement> {
        Vec::new()
    }

    fn resolve(_: &Container, client: &Client) -> Result<Self, BuildError> {
        Ok(client.clone())
    }
}

macro_rules! tuple_dependencies {
    ($($name:ident),+) => {
        impl<$($name: Dependencies),+> Dependencies for ($($name,)+) {
            fn requirements() -> Vec<Requirement> {
                let mut all = Vec::new();
                $(all.extend($name::requirements());)+
                all
            }

            fn resolve(container: &Container, client: &Client) -> Result<Self, BuildError> {
                Ok(($($name::resolve(container, client)?,)+))
            }
        }
    };
}

tuple_dependencies!(A);
tuple_dependencies!(A, B);
tuple_dependencies!(A, B, C);
tuple_dependencies!(A, B, C, D);
tuple_dependencies!(A, B, C, D, E);
tuple_dependencies!(A, B, C, D, E, F);
tuple_dependencies!(A, B, C, D, E, F, G);
tuple_dependencies!(A, B, C, D, E, F, G, H);

type Shared = Arc<dyn Any + Send + Sync>;
type Closer = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;
type FactoryFn = Box<
    dyn FnOnce(&Container, &Client) -> BoxFuture<'static, Result<(Shared, Closer), BuildError>>
        + Send,
>;

struct Factory {
    type_name: &'static str,
    requirements: Vec<Requirement>,
    build: FactoryFn,
}

/// Collects registrations; [`ContainerBuilder::build`] checks the wiring and builds the
/// singletons.
#[derive(Default)]
pub struct ContainerBuilder {
    instances: HashMap<TypeId, (&'static str, Shared)>,
    factories: Vec<(TypeId, Factory)>,
    roots: Vec<(&'static str, Vec<Requirement>)>,
}

impl std::fmt::Debug for ContainerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerBuilder")
            .field("instances", &self.instances.len())
            .field("factories", &self.factories.len())
            .finish_non_exhaustive()
    }
}

impl ContainerBuilder {
    /// Adds a singleton value.
    pub fn instance<T: Send + Sync + 'static>(&mut self, value: T) {
        self.instances
            .insert(TypeId::of::<T>(), (type_name::<T>(), Arc::new(value)));
    }

    /// Adds a singleton built at start by `T::create`.
    pub fn factory<T: Singleton>(&mut self) {
        let build: FactoryFn = Box::new(|container: &Container, client: &Client| {
            let deps = T::Deps::resolve(container, client);
            Box::pin(async move {
                let value = Arc::new(T::create(deps?).await?);
                let closing = value.clone();
                let closer: Closer =
                    Box::new(move || Box::pin(async move { closing.close().await }));
                Ok((value as Shared, closer))
            })
        });
        self.factories.retain(|(id, _)| *id != TypeId::of::<T>());
        self.factories.push((
            TypeId::of::<T>(),
            Factory {
                type_name: type_name::<T>(),
                requirements: T::Deps::requirements(),
                build,
            },
        ));
    }

    /// Records that component `C` will be built per execution, so its dependencies are
    /// checked at start.
    pub fn component<C: Component>(&mut self) {
        let name = type_name::<C>();
        if !self.roots.iter().any(|(n, _)| *n == name) {
            self.roots.push((name, C::Deps::requirements()));
        }
    }

    /// Checks every component's and factory's dependencies, then builds the factories'
    /// singletons in dependency order.
    pub async fn build(self, client: &Client) -> Result<Container, WiringError> {
        let factories: HashMap<TypeId, &Factory> =
            self.factories.iter().map(|(id, f)| (*id, f)).collect();
        let provided = |id: &TypeId| self.instances.contains_key(id) || factories.contains_key(id);
        // Creation order: depth-first over factory dependencies, detecting cycles
        // first, so the walk for missing dependencies below always ends.
        let mut order = Vec::new();
        let mut state: HashMap<TypeId, bool> = HashMap::new(); // false = visiting, true = done
        for (id, _) in &self.factories {
            visit(*id, &factories, &mut state, &mut order, &mut Vec::new())?;
        }
        // Missing dependencies, reported with the path from the component that needs them.
        for (root, requirements) in &self.roots {
            let mut trail = vec![short_name(root)];
            check_missing(requirements, &factories, &provided, &mut trail, root)?;
        }
        for (_, factory) in &self.factories {
            let mut trail = vec![short_name(factory.type_name)];
            check_missing(
                &factory.requirements,
                &factories,
                &provided,
                &mut trail,
                factory.type_name,
            )?;
        }
        let mut container = Container::default();
        for (id, (_, value)) in self.instances {
            container.singletons.insert(id, value);
        }
        let mut pending: HashMap<TypeId, Factory> = self.factories.into_iter().collect();
        for id in order {
            let Some(factory) = pending.remove(&id) else {
                continue;
            };
            let name = factory.type_name;
            match (factory.build)(&container, client).await {
                Ok((value, closer)) => {
                    tracing::debug!(singleton = short_name(name), "singleton created");
                    container.singletons.insert(id, value);
                    container.lock_closers().push((name, closer));
                }
                Err(error) => {
                    // Close what was already created before reporting.
                    container.close().await;
                    return Err(WiringError::Build(error));
                }
            }
        }
        Ok(container)
    }
}

fn check_missing(
    requirements: &[Requirement],
    factories: &HashMap<TypeId, &Factory>,
    provided: &dyn Fn(&TypeId) -> bool,
    trail: &mut Vec<String>,
    root: &str,
) -> Result<(), WiringError> {
    for requirement in requirements {
        trail.push(short_name(requirement.type_name));
        if !provided(&requirement.type_id) {
            return Err(WiringError::Missing {
                component: short_name(root),
                missing: short_name(requirement.type_name),
                path: trail.join(" → "),
            });
        }
        if let Some(factory) = factories.get(&requirement.type_id) {
            check_missing(&factory.requirements, factories, provided, trail, root)?;
        }
        trail.pop();
    }
    Ok(())
}

fn visit(
    id: TypeId,
    factories: &HashMap<TypeId, &Factory>,
    state: &mut HashMap<TypeId, bool>,
    order: &mut Vec<TypeId>,
    stack: &mut Vec<&'static str>,
) -> Result<(), WiringError> {
    let Some(factory) = factories.get(&id) else {
        return Ok(());
    };
    match state.get(&id) {
        Some(true) => return Ok(()),
        Some(false) => {
            let start = stack
                .iter()
                .position(|n| *n == factory.type_name)
                .unwrap_or(0);
            let mut cycle: Vec<String> = stack[start..].iter().map(|n| short_name(n)).collect();
            cycle.push(short_name(factory.type_name));
            return Err(WiringError::Cycle {
                cycle: cycle.join(" → "),
            });
        }
        None => {}
    }
    state.insert(id, false);
    stack.push(factory.type_name);
    for requirement in &factory.requirements {
        visit(requirement.type_id, factories, state, order, stack)?;
    }
    stack.pop();
    state.insert(id, true);
    order.push(id);
    Ok(())
}

/// `alloc::sync::Arc<my_app::Pool>` → `Arc<Pool>`: type names as a user writes them.
fn short_name(full: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(&word));
    out
}

/// The singletons of one running worker.
#[derive(Default)]
pub struct Container {
    singletons: HashMap<TypeId, Shared>,
    closers: std::sync::Mutex<Vec<(&'static str, Closer)>>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container")
            .field("singletons", &self.singletons.len())
            .finish_non_exhaustive()
    }
}

impl Container {
    /// The singleton of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.singletons
            .get(&TypeId::of::<T>())
            .cloned()
            .and_then(|any| any.downcast::<T>().ok())
    }

    /// Closes every factory-built singleton, in reverse order of creation. Closing twice
    /// closes nothing the second time.
    pub async fn close(&self) {
        loop {
            let next = self.lock_closers().pop();
            let Some((name, closer)) = next else { break };
            closer().await;
            tracing::debug!(singleton = short_name(name), "singleton closed");
        }
    }

    fn lock_closers(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Closer)>> {
        // Pushes and pops only: a poisoned list is still consistent.
        self.closers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(
            short_name("alloc::sync::Arc<my_app::db::Pool>"),
            "Arc<Pool>"
        );
        assert_eq!(short_name("(my::A, other::B)"), "(A, B)");
    }
}
