//! The broker and backend pairs the interop cases run on, and the rule for a missing
//! server: skip with a message, or fail when `CELERITY_REQUIRE_BROKERS=1` (CI).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use celerity::App;

/// Whether a missing broker or interpreter fails the test (CI) instead of skipping it.
pub fn required() -> bool {
    std::env::var("CELERITY_REQUIRE_BROKERS").is_ok_and(|v| v == "1")
}

/// Skips (prints why, returns `None`) or fails, by [`required`].
pub fn skip<T>(why: &str) -> Option<T> {
    if required() {
        panic!("{why}, and CELERITY_REQUIRE_BROKERS=1");
    }
    eprintln!("SKIPPED: {why} (CELERITY_REQUIRE_BROKERS=1 fails instead)");
    None
}

/// Where tasks and results travel, given as the URLs both Celery and Celerity read.
#[derive(Debug, Clone)]
pub struct Transport {
    /// A short name for messages: `redis`, `amqp+rpc`, `amqp+redis`.
    pub name: &'static str,
    /// The broker URL.
    pub broker: String,
    /// The result backend URL.
    pub backend: String,
}

fn redis_url() -> String {
    std::env::var("CELERITY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/15".into())
}

fn amqp_url() -> String {
    std::env::var("CELERITY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

impl Transport {
    /// Redis as broker and result backend.
    pub fn redis() -> Option<Transport> {
        Transport::checked("redis", redis_url(), redis_url())
    }

    /// RabbitMQ as broker, results over AMQP (`rpc://`).
    pub fn amqp_rpc() -> Option<Transport> {
        Transport::checked("amqp+rpc", amqp_url(), "rpc://".into())
    }

    /// RabbitMQ as broker, Redis as result backend.
    pub fn amqp_redis() -> Option<Transport> {
        Transport::checked("amqp+redis", amqp_url(), redis_url())
    }

    fn checked(name: &'static str, broker: String, backend: String) -> Option<Transport> {
        for url in [&broker, &backend] {
            if !url.starts_with("rpc:") && !reachable(url) {
                return skip(&format!("{} is not reachable", redacted(url)));
            }
        }
        Some(Transport {
            name,
            broker,
            backend,
        })
    }

    /// A Celerity app on this transport.
    pub async fn app(&self) -> App {
        App::from_urls(&self.broker, &self.backend)
            .await
            .unwrap_or_else(|e| panic!("Celerity cannot open {}: {e}", self.name))
    }
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://…@{rest}"),
        _ => url.to_owned(),
    }
}

/// Whether something accepts TCP connections at the URL's host and port.
fn reachable(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let default_port = if scheme.starts_with("amqp") {
        5672
    } else {
        6379
    };
    let address = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok())
}
