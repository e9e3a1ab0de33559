//! What the reference application's broker-backed tests share.

#![allow(dead_code)] // each test binary uses part of this

use std::time::Duration;

use celerity::App;

/// The Redis to test against (`CELERITY_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379/15`), or `None` after saying why the test skips.
pub async fn redis_url() -> Option<String> {
    let url = std::env::var("CELERITY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/15".into());
    let reachable = async {
        let app = App::from_urls(&url, &url).await.ok()?;
        app.backend().get("celerity-reachability-check").await.ok()
    };
    match tokio::time::timeout(Duration::from_secs(3), reachable).await {
        Ok(Some(_)) => Some(url),
        _ if std::env::var("CELERITY_REQUIRE_BROKERS").is_ok_and(|v| v == "1") => {
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

/// The RabbitMQ to test against, or `None` after saying why the test skips.
pub async fn amqp_url() -> Option<String> {
    let url = std::env::var("CELERITY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    match tokio::time::timeout(
        Duration::from_secs(5),
        celerity::broker::AmqpBroker::connect(&url),
    )
    .await
    {
        Ok(Ok(_)) => Some(url),
        _ if std::env::var("CELERITY_REQUIRE_BROKERS").is_ok_and(|v| v == "1") => {
            panic!("RabbitMQ is not reachable at {url}, and CELERITY_REQUIRE_BROKERS=1")
        }
        _ => {
            eprintln!(
                "SKIPPED: RabbitMQ is not reachable at {url} (set CELERITY_TEST_AMQP_URL, or CELERITY_REQUIRE_BROKERS=1 to fail instead)"
            );
            None
        }
    }
}
