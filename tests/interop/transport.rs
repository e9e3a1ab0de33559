//! The broker and backend pairs the interop cases run on, each `None` after a skip when a
//! server it needs is missing (see `tests/support`).

use celerity::App;

use crate::support;

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

impl Transport {
    /// Redis as broker and result backend.
    pub fn redis() -> Option<Transport> {
        let redis = support::redis_url()?;
        Some(Transport {
            name: "redis",
            broker: redis.clone(),
            backend: redis,
        })
    }

    /// RabbitMQ as broker, results over AMQP (`rpc://`).
    pub fn amqp_rpc() -> Option<Transport> {
        Some(Transport {
            name: "amqp+rpc",
            broker: support::amqp_url()?,
            backend: "rpc://".into(),
        })
    }

    /// RabbitMQ as broker, Redis as result backend.
    pub fn amqp_redis() -> Option<Transport> {
        Some(Transport {
            name: "amqp+redis",
            broker: support::amqp_url()?,
            backend: support::redis_url()?,
        })
    }

    /// A Celerity app on this transport.
    pub async fn app(&self) -> App {
        App::from_urls(&self.broker, &self.backend)
            .await
            .unwrap_or_else(|e| panic!("Celerity cannot open {}: {e}", self.name))
    }
}
