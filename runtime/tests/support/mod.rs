//! What broker-backed tests share: finding the broker, or saying clearly why they skip.

#![allow(dead_code)] // each test binary uses part of this

use std::time::Duration;

/// Whether a missing broker fails the test (CI) instead of skipping it.
pub fn brokers_required() -> bool {
    std::env::var("CELERITY_REQUIRE_BROKERS").is_ok_and(|v| v == "1")
}

/// The Redis URL to test against (`CELERITY_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379/15`), or `None` after printing why the test skips.
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("CELERITY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/15".into());
    let reachable = async {
        let client = redis::Client::open(url.as_str()).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    match tokio::time::timeout(Duration::from_secs(3), reachable).await {
        Ok(Some(_)) => Some(url),
        _ if brokers_required() => {
            panic!("Redis is not reachable at {url}, and CELERITY_REQUIRE_BROKERS=1")
        }
        _ => {
            eprintln!(
                "SKIPPED: Redis is not reachable at {url} (set CELERITY_TEST_REDIS_URL, or CELERITY_REQUIRE_BROKERS=1 to fail instead)"
            );
            None
        }
    }
}

/// A raw connection for inspecting what Celerity wrote.
pub async fn raw_redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("a Redis connection")
}

/// `t.double(x) -> 2x`: the task broker tests run.
pub static DOUBLE: celerity::TaskSpec =
    celerity::TaskSpec::new("t.double", &[celerity::ArgSpec::new("x", true)]);

/// Runs `t.double`.
pub struct Doubler;

impl celerity::Component for Doubler {
    type Deps = ();
    async fn build(_deps: (), _ctx: &celerity::TaskContext) -> Result<Self, celerity::BuildError> {
        Ok(Doubler)
    }
}

/// Arguments of `t.double`.
#[derive(serde::Deserialize)]
pub struct DoubleArgs {
    x: i64,
}

impl celerity::Invoke<Doubler> for DoubleArgs {
    type Output = i64;
    async fn invoke(self, _c: &Doubler, _ctx: &celerity::TaskContext) -> celerity::TaskResult<i64> {
        Ok(self.x * 2)
    }
}

/// A queue name no other test uses.
pub fn unique_queue() -> String {
    format!("celerity-test-{}", uuid::Uuid::new_v4())
}
