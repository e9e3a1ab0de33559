//! How an [`AmqpBroker`](super::AmqpBroker) connects: its options, and broker URLs read
//! as kombu reads them.

use std::collections::HashMap;
use std::time::Duration;

use lapin::uri::{AMQPQueryString, AMQPUri};

use super::AmqpQueue;
use super::link::Endpoint;
use crate::app::redact_url as redact;
use crate::error::{Error, ErrorKind, Result};

/// Connection and declaration settings of an [`AmqpBroker`](super::AmqpBroker). The defaults follow Celery's
/// where it has one.
#[derive(Debug, Clone)]
pub struct AmqpOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) reconnect_delay: Duration,
    pub(crate) reconnect_max_delay: Duration,
    pub(crate) retry_for: Duration,
    pub(crate) max_priority: Option<u8>,
    pub(crate) queues: HashMap<String, AmqpQueue>,
    pub(crate) control_exchange: String,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(60),
            reconnect_delay: Duration::from_millis(200),
            reconnect_max_delay: Duration::from_secs(5),
            retry_for: Duration::from_secs(20),
            max_priority: None,
            queues: HashMap::new(),
            control_exchange: "celery".into(),
        }
    }
}

impl AmqpOptions {
    /// The defaults, with Celery's settings taken from `CELERITY_`-prefixed environment
    /// variables where they are set: `CELERITY_TASK_QUEUE_MAX_PRIORITY`,
    /// `CELERITY_BROKER_HEARTBEAT` and `CELERITY_BROKER_CONNECTION_TIMEOUT` (seconds). A
    /// value that does not parse is a configuration error.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let read = |name: &str| -> Result<Option<f64>> {
            let Some(text) = lookup(name) else {
                return Ok(None);
            };
            match text.trim().parse::<f64>() {
                Ok(value) if value >= 0.0 && value.is_finite() => Ok(Some(value)),
                _ => Err(Error::new(
                    ErrorKind::Config,
                    format!("{name}={text:?} is not a number of seconds or a count"),
                )),
            }
        };
        let mut options = AmqpOptions::default();
        if let Some(max) = read("CELERITY_TASK_QUEUE_MAX_PRIORITY")? {
            options = options.max_priority(max.min(255.0) as u8);
        }
        if let Some(seconds) = read("CELERITY_BROKER_HEARTBEAT")? {
            options = options.heartbeat(Duration::from_secs_f64(seconds));
        }
        if let Some(seconds) = read("CELERITY_BROKER_CONNECTION_TIMEOUT")? {
            options = options.connect_timeout(Duration::from_secs_f64(seconds));
        }
        Ok(options)
    }

    /// How long opening a connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long any other broker operation may take: a declaration, a publish and its
    /// confirm, an ack (default 10 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The heartbeat interval proposed to the broker (default 60 s; 0 disables it). A
    /// connection that misses heartbeats is treated as lost and re-established. A
    /// `heartbeat=` query parameter in the URL wins.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Backoff between reconnection attempts: `initial`, doubling up to `max`
    /// (default 200 ms up to 5 s).
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_delay = initial.max(Duration::from_millis(1));
        self.reconnect_max_delay = max.max(self.reconnect_delay);
        self
    }

    /// How long a publish (or declaration) keeps retrying through reconnections before it
    /// fails (default 20 s, enough for a RabbitMQ restart; Celery's
    /// `task_publish_retry_policy` gives up sooner).
    pub fn retry_for(mut self, duration: Duration) -> Self {
        self.retry_for = duration;
        self
    }

    /// Declares every queue as a priority queue with this `x-max-priority`, unless its
    /// [`AmqpQueue`] sets its own (Celery's `task_queue_max_priority`). It must match how
    /// Python declares the same queues.
    pub fn max_priority(mut self, max: u8) -> Self {
        self.max_priority = Some(max);
        self
    }

    /// Declares queue `queue.name()` this way instead of Celery's default for unknown
    /// queues (Celery's `task_queues`).
    pub fn queue(mut self, queue: AmqpQueue) -> Self {
        self.queues.insert(queue.name.clone(), queue);
        self
    }

    /// The control exchange name; broadcasts use `<name>.pidbox` (Celery's
    /// `control_exchange`, default `celery`).
    pub fn control_exchange(mut self, name: impl Into<String>) -> Self {
        self.control_exchange = name.into();
        self
    }
}

/// Parses a broker URL, or a `;`-separated failover list of them, the way kombu's
/// `Connection` reads it (`kombu/connection.py`): the list is split as every broker's is
/// ([`crate::app::url_list`]: at a `;` that starts another URL), and each URL
/// after the first is laid over the first one's parameters (`Connection.switch`), so the
/// first URL's query parameters (`heartbeat=`, `frame_max=`…) apply to every URL that
/// sets none of its own; host, port, credentials and virtual host are each URL's own.
/// Every URL of a list must be an AMQP one: kombu would switch transports mid-flight.
pub(super) fn parse_urls(urls: &str, options: &AmqpOptions) -> Result<Vec<Endpoint>> {
    let list = crate::app::url_list(urls);
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(list.len());
    for url in &list {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if list.len() > 1 && !matches!(scheme, Some("amqp" | "amqps" | "pyamqp")) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the broker failover list `{}` mixes transports: `{}` is no amqp://, \
                     amqps:// or pyamqp:// URL, and every URL of the list must use the same one",
                    redact(urls),
                    redact(url)
                ),
            ));
        }
        let mut uri = parse_url(url)?;
        if let Some(first) = endpoints.first() {
            inherit_query(&mut uri.query, &first.uri.query);
        }
        apply_defaults(&mut uri, options);
        endpoints.push(Endpoint {
            uri,
            shown: redact(url),
        });
    }
    Ok(endpoints)
}

/// Fills the query parameters that `query` leaves unset from the first URL's `first`.
fn inherit_query(query: &mut AMQPQueryString, first: &AMQPQueryString) {
    query.frame_max = query.frame_max.or(first.frame_max);
    query.channel_max = query.channel_max.or(first.channel_max);
    query.heartbeat = query.heartbeat.or(first.heartbeat);
    query.connection_timeout = query.connection_timeout.or(first.connection_timeout);
    query.auth_mechanism = query.auth_mechanism.or(first.auth_mechanism);
}

/// Parses one broker URL the way kombu reads it: an empty virtual host (`amqp://host/` or
/// `amqp://host`) means `/`, and `//` or `/%2f` name `/` explicitly.
fn parse_url(url: &str) -> Result<AMQPUri> {
    let config_error = |reason: String| {
        Error::new(
            ErrorKind::Config,
            format!("invalid AMQP URL `{}`: {reason}", redact(url)),
        )
    };
    // kombu's `pyamqp://` is the same transport.
    let normalised = url
        .strip_prefix("pyamqp://")
        .map_or_else(|| url.to_owned(), |rest| format!("amqp://{rest}"));
    let mut uri: AMQPUri = normalised.parse().map_err(config_error)?;
    if uri.vhost.is_empty() {
        uri.vhost = "/".into();
    }
    // The URL parser in amq-protocol drops bracketed IPv6 hosts.
    if let Some(host) = bracketed_host(&normalised) {
        uri.authority.host = host.to_owned();
    }
    Ok(uri)
}

/// Sets what the URL leaves unset from `options` and this transport's defaults.
fn apply_defaults(uri: &mut AMQPUri, options: &AmqpOptions) {
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(u16::try_from(options.heartbeat.as_secs()).unwrap_or(u16::MAX));
    }
    if uri.query.frame_max.is_none() {
        // lapin sizes each connection's read and write buffers at 32 frames, zero-filled:
        // RabbitMQ's default 128 KiB frames cost 4 MiB a buffer, 16 MiB for the two
        // connections a worker opens. Task messages are a few KiB; larger ones span
        // frames. A `frame_max=` query parameter in the URL wins.
        uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout =
            Some(u64::try_from(options.connect_timeout.as_millis()).unwrap_or(u64::MAX));
    }
}

/// The largest AMQP frame proposed to the broker, unless the URL names one.
const DEFAULT_FRAME_MAX: u32 = 16 * 1024;

fn bracketed_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    host.strip_prefix('[')?.split(']').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_as_kombu_reads_them() {
        let options = AmqpOptions::default();
        let parse = |url: &str| parse_urls(url, &options).unwrap().remove(0).uri;
        assert_eq!(parse("amqp://guest:guest@127.0.0.1:5672//").vhost, "/");
        assert_eq!(parse("amqp://guest:guest@127.0.0.1:5672/").vhost, "/");
        assert_eq!(parse("amqp://127.0.0.1").vhost, "/");
        assert_eq!(parse("amqp://h/%2f").vhost, "/");
        assert_eq!(parse("amqp://h/shop").vhost, "shop");
        let tls = parse("amqps://u:p@rabbit.example/vh?heartbeat=5");
        assert_eq!(
            (tls.authority.port, tls.query.heartbeat),
            (5671, Some(5)),
            "amqps defaults to 5671 and the URL's heartbeat wins"
        );
        assert_eq!(parse("amqp://h").query.heartbeat, Some(60));
        assert_eq!(parse("amqp://h").query.frame_max, Some(16 * 1024));
        assert_eq!(
            parse("amqp://h/?frame_max=131072").query.frame_max,
            Some(131_072)
        );
        assert_eq!(parse("amqp://u@[::1]:5673/v").authority.host, "::1");
        assert_eq!(parse("pyamqp://h:5673//").authority.port, 5673);
        assert!(parse_urls("amqp://h:notaport/", &options).is_err());
    }

    #[test]
    fn a_failover_list_is_read_as_kombu_reads_it() {
        let options = AmqpOptions::default();
        let list = parse_urls(
            "amqp://guest:secret@h1:5672//?heartbeat=5&frame_max=131072;\
             amqps://admin:s3cret@h2/shop?frame_max=65536;pyamqp://h3",
            &options,
        )
        .unwrap();
        let shown: Vec<&str> = list.iter().map(|e| e.shown.as_str()).collect();
        assert_eq!(
            shown,
            [
                "amqp://guest:**@h1:5672//?heartbeat=5&frame_max=131072",
                "amqps://admin:**@h2/shop?frame_max=65536",
                "pyamqp://h3",
            ]
        );
        let [first, second, third] = &list[..] else {
            panic!("three brokers")
        };
        assert_eq!(
            (first.uri.authority.host.as_str(), first.uri.vhost.as_str()),
            ("h1", "/")
        );
        // Address, credentials and virtual host are each URL's own…
        assert_eq!(
            (
                second.uri.authority.host.as_str(),
                second.uri.authority.port
            ),
            ("h2", 5671)
        );
        assert_eq!(second.uri.authority.userinfo.username, "admin");
        assert_eq!(second.uri.vhost, "shop");
        assert_eq!(third.uri.authority.userinfo.username, "guest");
        assert_eq!(third.uri.vhost, "/");
        // …and the first URL's parameters apply where a later one sets none.
        assert_eq!(second.uri.query.heartbeat, Some(5));
        assert_eq!(second.uri.query.frame_max, Some(65_536));
        assert_eq!(third.uri.query.heartbeat, Some(5));
        assert_eq!(third.uri.query.frame_max, Some(131_072));
    }

    #[test]
    fn a_failover_list_of_two_transports_is_a_configuration_error() {
        let options = AmqpOptions::default();
        for urls in [
            "amqp://guest:secret@h1//;redis://:secret@h2:6379/0",
            "amqp://guest:secret@h1//;memory://",
        ] {
            let Err(error) = parse_urls(urls, &options) else {
                panic!("{urls} is refused");
            };
            assert_eq!(error.kind(), ErrorKind::Config, "{error}");
            let message = error.to_string();
            assert!(message.contains("mixes transports"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn celerys_settings_are_read_from_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        let options = AmqpOptions::from_lookup(env(&[
            ("CELERITY_TASK_QUEUE_MAX_PRIORITY", "10"),
            ("CELERITY_BROKER_HEARTBEAT", "30"),
            ("CELERITY_BROKER_CONNECTION_TIMEOUT", "2.5"),
        ]))
        .unwrap();
        assert_eq!(options.max_priority, Some(10));
        assert_eq!(options.heartbeat, Duration::from_secs(30));
        assert_eq!(options.connect_timeout, Duration::from_millis(2500));
        let defaults = AmqpOptions::from_lookup(env(&[])).unwrap();
        assert_eq!(defaults.max_priority, None);
        assert_eq!(defaults.heartbeat, Duration::from_secs(60));
        let error =
            AmqpOptions::from_lookup(env(&[("CELERITY_BROKER_HEARTBEAT", "often")])).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(error.to_string().contains("CELERITY_BROKER_HEARTBEAT"));
    }
}
