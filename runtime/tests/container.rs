//! The dependency-injection container as a worker starts and stops: singletons built in
//! dependency order and closed in reverse, and start-up refused, before anything is
//! consumed, for a missing registration (naming the path to it) or a dependency cycle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celerity::backend::MemoryBackend;
use celerity::broker::MemoryBroker;
use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, Singleton, TaskContext, TaskResult, TaskSpec,
};
use serde::Deserialize;
use serde_json::json;

static ECHO: TaskSpec = TaskSpec::new("t.echo", &[ArgSpec::new("value", true)]);

/// Arguments of `t.echo`, as generated code writes them.
#[derive(Deserialize)]
struct EchoArgs {
    value: i64,
}

/// A singleton registered as a value, as an application registers its settings.
struct Log;

/// A component that needs only [`Log`].
struct Probe;

impl Component for Probe {
    type Deps = Arc<Log>;
    async fn build(_log: Arc<Log>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Probe)
    }
}

impl Invoke<Probe> for EchoArgs {
    type Output = i64;
    async fn invoke(self, _c: &Probe, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.value)
    }
}

/// Order in which singletons were created and closed.
#[derive(Default)]
struct Lifecycle(Mutex<Vec<String>>);

struct Settings;
struct Cache;

impl Singleton for Settings {
    type Deps = Arc<Lifecycle>;
    async fn create(life: Arc<Lifecycle>) -> Result<Self, BuildError> {
        life.0.lock().unwrap().push("create Settings".into());
        Ok(Settings)
    }
}

struct PoolWithLog(Arc<Lifecycle>);

impl Singleton for PoolWithLog {
    type Deps = (Arc<Lifecycle>, Arc<Settings>);
    async fn create(
        (life, _settings): (Arc<Lifecycle>, Arc<Settings>),
    ) -> Result<Self, BuildError> {
        life.0.lock().unwrap().push("create Pool".into());
        Ok(PoolWithLog(life))
    }
    async fn close(&self) {
        self.0.0.lock().unwrap().push("close Pool".into());
    }
}

struct UsesPool;

impl Component for UsesPool {
    type Deps = Arc<PoolWithLog>;
    async fn build(_pool: Arc<PoolWithLog>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(UsesPool)
    }
}

impl Invoke<UsesPool> for EchoArgs {
    type Output = i64;
    async fn invoke(self, _c: &UsesPool, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.value)
    }
}

#[tokio::test]
async fn singletons_are_built_in_dependency_order_and_closed_in_reverse() {
    let app = App::memory();
    let mut builder = app.worker();
    // Registered out of order on purpose: the pool needs the settings.
    builder
        .singleton(Lifecycle::default())
        .singleton_factory::<PoolWithLog>()
        .singleton_factory::<Settings>();
    builder
        .register::<UsesPool, EchoArgs>(&ECHO)
        .queues(["celery"]);
    let worker = builder.start().await.unwrap();
    let life = worker.singleton::<Lifecycle>().unwrap();
    let sent = app
        .client()
        .send_task::<i64>(&ECHO, vec![json!(5)])
        .await
        .unwrap();
    assert_eq!(sent.get(Duration::from_secs(5)).await.unwrap(), 5);
    worker.shutdown().await;
    assert_eq!(
        *life.0.lock().unwrap(),
        ["create Settings", "create Pool", "close Pool"]
    );
}

struct NeedsCache;

impl Component for NeedsCache {
    type Deps = (Arc<Log>, Arc<Cache>);
    async fn build(_deps: (Arc<Log>, Arc<Cache>), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(NeedsCache)
    }
}

impl Invoke<NeedsCache> for EchoArgs {
    type Output = i64;
    async fn invoke(self, _c: &NeedsCache, _ctx: &TaskContext) -> TaskResult<i64> {
        Ok(self.value)
    }
}

async fn start_error(builder: celerity::WorkerBuilder) -> String {
    match builder.start().await {
        Ok(_) => panic!("start-up should fail"),
        Err(error) => {
            assert_eq!(error.kind(), celerity::ErrorKind::Container);
            error.to_string()
        }
    }
}

#[tokio::test]
async fn a_missing_dependency_fails_start_up_naming_the_path() {
    let broker = MemoryBroker::new();
    let app = App::new(broker.clone(), MemoryBackend::new());
    app.client()
        .send_task::<i64>(&ECHO, vec![json!(1)])
        .await
        .unwrap();
    let mut builder = app.worker();
    builder
        .singleton(Log)
        .register::<NeedsCache, EchoArgs>(&ECHO)
        .queues(["celery"]);
    assert_eq!(
        start_error(builder).await,
        "`NeedsCache` needs `Cache`, which is not registered (path: NeedsCache → Cache); register it with `singleton(…)` or `singleton_factory::<…>()`"
    );
    assert_eq!(broker.len("celery"), 1, "nothing was consumed");

    let mut builder = app.worker();
    builder
        .singleton_factory::<PoolWithLog>()
        .register::<UsesPool, EchoArgs>(&ECHO);
    assert_eq!(
        start_error(builder).await,
        "`UsesPool` needs `Lifecycle`, which is not registered (path: UsesPool → PoolWithLog → Lifecycle); register it with `singleton(…)` or `singleton_factory::<…>()`"
    );
}

struct CycleA;
struct CycleB;

impl Singleton for CycleA {
    type Deps = Arc<CycleB>;
    async fn create(_b: Arc<CycleB>) -> Result<Self, BuildError> {
        Ok(CycleA)
    }
}

impl Singleton for CycleB {
    type Deps = Arc<CycleA>;
    async fn create(_a: Arc<CycleA>) -> Result<Self, BuildError> {
        Ok(CycleB)
    }
}

#[tokio::test]
async fn a_dependency_cycle_fails_start_up() {
    let app = App::memory();
    let mut builder = app.worker();
    builder
        .singleton_factory::<CycleA>()
        .singleton_factory::<CycleB>()
        .singleton(Log);
    builder.register::<Probe, EchoArgs>(&ECHO);
    assert_eq!(
        start_error(builder).await,
        "dependency cycle: CycleA → CycleB → CycleA"
    );
}
