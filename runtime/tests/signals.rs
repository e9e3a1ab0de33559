//! SIGTERM stops a worker gracefully: running tasks finish, then `run_until_signal`
//! returns. In its own test binary because it signals the whole process.

#![cfg(unix)]

use std::time::Duration;

use celerity::{
    App, ArgSpec, BuildError, Component, Invoke, TaskContext, TaskResult, TaskSpec, TaskState,
};
use serde::Deserialize;
use serde_json::json;

static NAP: TaskSpec = TaskSpec::new("t.nap", &[ArgSpec::new("millis", true)]);

struct Napper;

impl Component for Napper {
    type Deps = ();
    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(Napper)
    }
}

#[derive(Deserialize)]
struct NapArgs {
    millis: u64,
}

impl Invoke<Napper> for NapArgs {
    type Output = u64;
    async fn invoke(self, _c: &Napper, _ctx: &TaskContext) -> TaskResult<u64> {
        tokio::time::sleep(Duration::from_millis(self.millis)).await;
        Ok(self.millis)
    }
}

#[tokio::test]
async fn sigterm_drains_running_tasks_then_stops() {
    let app = App::memory();
    let mut builder = app.worker();
    builder.register::<Napper, NapArgs>(&NAP).queues(["celery"]);
    let worker = builder.start().await.unwrap();
    let nap = app
        .client()
        .send_task::<u64>(&NAP, vec![json!(500)])
        .await
        .unwrap();
    let running = tokio::spawn(worker.run_until_signal());
    // Let the task start and the signal handler be installed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops after the signal")
        .expect("the worker task did not panic")
        .expect("no signal error");
    assert_eq!(
        nap.state().await.unwrap(),
        TaskState::Success,
        "the running task finished before the worker stopped"
    );
    // The worker no longer consumes: a new task stays pending.
    let later = app
        .client()
        .send_task::<u64>(&NAP, vec![json!(1)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(later.state().await.unwrap(), TaskState::Pending);
}
