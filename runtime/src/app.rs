//! The application: one broker and one result backend, shared by clients and workers.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "redis")]
use crate::backend::RedisBackend;
#[cfg(feature = "amqp")]
use crate::backend::RpcBackend;
use crate::backend::{MemoryBackend, ResultBackend};
#[cfg(feature = "amqp")]
use crate::broker::AmqpBroker;
#[cfg(feature = "redis")]
use crate::broker::RedisBroker;
use crate::broker::{Broker, MemoryBroker};
use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::worker::WorkerBuilder;

/// The variable naming the broker URL (Celery's `broker_url`).
pub(crate) const BROKER_URL_VAR: &str = "CELERITY_BROKER_URL";
/// The variable naming the result backend URL (Celery's `result_backend`).
pub(crate) const RESULT_BACKEND_VAR: &str = "CELERITY_RESULT_BACKEND";
/// The broker and backend when none is named: the embedded one.
pub(crate) const DEFAULT_URL: &str = "memory://";
/// The variable setting a Redis broker's visibility timeout, the `visibility_timeout` of
/// Celery's `broker_transport_options`; named like `CELERITY_BROKER_HEARTBEAT` and
/// `CELERITY_BROKER_CONNECTION_TIMEOUT` (Celery's `broker_heartbeat`,
/// `broker_connection_timeout`).
pub(crate) const VISIBILITY_TIMEOUT_VAR: &str = "CELERITY_BROKER_VISIBILITY_TIMEOUT";
/// The variable setting how long a Redis result backend retries storing a result, named
/// after Celery's `result_backend_always_retry` and `result_backend_max_retries`.
pub(crate) const RESULT_RETRY_WINDOW_VAR: &str = "CELERITY_RESULT_BACKEND_RETRY_WINDOW";
/// The variable naming the master a `sentinel://` broker's sentinels watch: the
/// `master_name` of Celery's `broker_transport_options`.
pub(crate) const BROKER_MASTER_NAME_VAR: &str = "CELERITY_BROKER_MASTER_NAME";
/// The variable naming the master a `sentinel://` result backend's sentinels watch: the
/// `master_name` of Celery's `result_backend_transport_options`.
pub(crate) const RESULT_BACKEND_MASTER_NAME_VAR: &str = "CELERITY_RESULT_BACKEND_MASTER_NAME";

/// Settings that a process gives besides its URLs (from flags or the environment). Each
/// one set wins over what the URL says.
#[derive(Debug, Clone, Default)]
// Every setting is Redis's; a build without it reads them (and checks them) only.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Settings {
    /// A Redis broker's visibility timeout, over the URL's `?visibility_timeout=`.
    pub visibility_timeout: Option<Duration>,
    /// How long a Redis result backend retries storing a result.
    pub result_retry_window: Option<Duration>,
    /// The master a `sentinel://` broker's sentinels watch, over the URL's `?master_name=`.
    pub broker_master_name: Option<String>,
    /// The master a `sentinel://` result backend's sentinels watch, as above.
    pub result_backend_master_name: Option<String>,
}

impl Settings {
    /// The settings of the `CELERITY_*` variables that are set.
    fn from_env() -> Result<Settings> {
        let timeout = |name: &str| match std::env::var(name) {
            Ok(text) => parse_timeout(&text).map(Some).map_err(|reason| {
                Error::new(ErrorKind::Config, format!("{name}={text:?}: {reason}"))
            }),
            Err(_) => Ok(None),
        };
        Ok(Settings {
            visibility_timeout: timeout(VISIBILITY_TIMEOUT_VAR)?,
            result_retry_window: timeout(RESULT_RETRY_WINDOW_VAR)?,
            broker_master_name: std::env::var(BROKER_MASTER_NAME_VAR).ok(),
            result_backend_master_name: std::env::var(RESULT_BACKEND_MASTER_NAME_VAR).ok(),
        })
    }
}

/// A broker and a result backend: the entry point for sending and running tasks.
///
/// ```
/// # async fn demo() -> celerity::Result<()> {
/// let app = celerity::App::memory();
/// let client = app.client();
/// let worker = app.worker();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct App {
    client: Client,
    /// The visibility timeout of a Redis broker built from a URL, for the worker's banner.
    visibility_timeout: Option<Duration>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("broker", &self.broker().describe())
            .field("backend", &self.backend().describe())
            .finish()
    }
}

impl App {
    /// An app on the embedded in-memory broker and backend: producer and worker in one
    /// process, nothing to install.
    pub fn memory() -> App {
        App::new(MemoryBroker::new(), MemoryBackend::new())
    }

    /// An app on the given broker and backend.
    pub fn new(broker: impl Broker, backend: impl ResultBackend) -> App {
        App::from_parts(Arc::new(broker), Arc::new(backend))
    }

    /// An app on shared broker and backend handles.
    pub fn from_parts(broker: Arc<dyn Broker>, backend: Arc<dyn ResultBackend>) -> App {
        App {
            client: Client::new(broker, backend),
            visibility_timeout: None,
        }
    }

    /// An app configured by URL. Brokers: `memory://` (the embedded default), `redis://`,
    /// `rediss://` or `sentinel://` (the `redis` feature), `amqp://`, `amqps://` or
    /// `pyamqp://` (RabbitMQ, the `amqp` feature). Result backends: `memory://`, `redis://`,
    /// `rediss://` or `sentinel://`, and `rpc://`, which sends results back over the AMQP
    /// broker's connection and so needs an `amqp://` broker, as in Celery.
    ///
    /// Redis URLs may be `;`-separated lists, as in Celery: `redis://a:6379/0;redis://b:6379/0`
    /// is a failover list (the first server that answers is used; when it is lost for good
    /// the next one, round-robin), and `sentinel://s1:26379/0;sentinel://s2:26379/0?master_name=mymaster`
    /// names Redis Sentinels, which say where the master is and follow it through a
    /// failover (see `RedisBroker::connect`).
    ///
    /// A Redis broker URL may carry kombu's `visibility_timeout` transport option as a
    /// query parameter in seconds (`redis://host/0?visibility_timeout=600`; default one
    /// hour): how long a fetched task may stay unacknowledged before any worker gives it to
    /// another. Python's kombu takes it only from `broker_transport_options`, and refuses a
    /// URL that carries it; set it in both places when Python shares the broker.
    ///
    /// A URL whose transport this build leaves out fails with
    /// [`ErrorKind::MissingFeature`], naming the feature to enable.
    pub async fn from_urls(broker_url: &str, backend_url: &str) -> Result<App> {
        App::from_urls_with(broker_url, backend_url, &Settings::default()).await
    }

    /// As [`App::from_urls`], with `settings` over what the URLs say.
    pub(crate) async fn from_urls_with(
        broker_url: &str,
        backend_url: &str,
        settings: &Settings,
    ) -> Result<App> {
        // The broker, and the visibility timeout it uses when it has one (Redis).
        let (broker, visibility_timeout): (Arc<dyn Broker>, Option<Duration>) =
            match scheme(broker_url)? {
                "memory" => (Arc::new(MemoryBroker::new()), None),
                #[cfg(feature = "redis")]
                "redis" | "rediss" | "sentinel" => {
                    let master_name = settings.broker_master_name.as_deref();
                    let mut broker = RedisBroker::open(broker_url, master_name).await?;
                    if let Some(timeout) = settings.visibility_timeout {
                        broker = broker.visibility_timeout(timeout);
                    }
                    let timeout = broker.configured_visibility_timeout();
                    (Arc::new(broker), Some(timeout))
                }
                #[cfg(feature = "amqp")]
                "amqp" | "amqps" | "pyamqp" => {
                    if settings.visibility_timeout.is_some() {
                        // RabbitMQ gives a lost consumer's messages back when its connection
                        // closes; it has no visibility timeout to set.
                        tracing::warn!("the visibility timeout applies to Redis brokers only");
                    }
                    return App::on_amqp(broker_url, backend_url, settings).await;
                }
                other => return Err(unsupported("broker", other, broker_url, BROKER_SCHEMES)),
            };
        let backend = backend_from_url(backend_url, settings).await?;
        let mut app = App::from_parts(broker, backend);
        app.visibility_timeout = visibility_timeout;
        Ok(app)
    }

    /// An app on an AMQP broker: the one broker whose connection an `rpc://` backend shares.
    #[cfg(feature = "amqp")]
    async fn on_amqp(broker_url: &str, backend_url: &str, settings: &Settings) -> Result<App> {
        let broker = AmqpBroker::connect(broker_url).await?;
        let backend: Arc<dyn ResultBackend> = match scheme(backend_url)? {
            "rpc" => Arc::new(RpcBackend::connect(&broker).await?),
            _ => backend_from_url(backend_url, settings).await?,
        };
        Ok(App::from_parts(Arc::new(broker), backend))
    }

    /// The broker and backend URLs from `CELERITY_BROKER_URL` and
    /// `CELERITY_RESULT_BACKEND` (Celery's setting names), defaulting to `memory://`.
    /// `CELERITY_BROKER_VISIBILITY_TIMEOUT` (seconds, or a number with ms, s, m, h or d)
    /// sets a Redis broker's visibility timeout over the URL's, as the worker command line
    /// does, so producers and workers configured alike agree on it;
    /// `CELERITY_RESULT_BACKEND_RETRY_WINDOW` how long a Redis result backend retries
    /// storing a result (default ten minutes).
    pub async fn from_env() -> Result<App> {
        let broker = std::env::var(BROKER_URL_VAR).unwrap_or_else(|_| DEFAULT_URL.into());
        let backend = std::env::var(RESULT_BACKEND_VAR).unwrap_or_else(|_| DEFAULT_URL.into());
        App::from_urls_with(&broker, &backend, &Settings::from_env()?).await
    }

    /// The visibility timeout of the Redis broker this app was built with from a URL.
    #[cfg(feature = "cli")]
    pub(crate) fn visibility_timeout(&self) -> Option<Duration> {
        self.visibility_timeout
    }

    /// A client sending through this app.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A worker builder consuming through this app.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.client.clone())
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.client.broker()
    }

    /// The result backend.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        self.client.backend()
    }

    /// Closes the broker's connections (and so the `rpc://` backend's, which shares them),
    /// for a clean exit once workers are shut down and no more tasks are sent.
    pub async fn close(&self) {
        self.broker().close().await;
    }
}

/// `url` as it may be shown to a user (banner, logs, errors, `Debug`): the password
/// masked as kombu masks it (`kombu/utils/url.py::sanitize_url`, mask `**`), the user
/// name kept, and the values of query parameters that carry secrets (`password=`,
/// `token=`…) masked too: `redis://:**@cache:6379/0`, `amqp://guest:**@rabbit//`. The
/// one function every URL shown goes through.
/// A `;`-separated list (Celery's failover list `redis://a;redis://b`, kombu's Sentinel
/// form `sentinel://a;sentinel://b`) is shown URL by URL.
pub(crate) fn redact_url(url: &str) -> String {
    url_list(url)
        .into_iter()
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(";")
}

/// The URLs of a `;`-separated list, in order (one for a plain URL). A `;` splits only
/// where another `scheme://` follows, so a password holding one stays whole (kombu splits
/// on every `;`, `kombu/connection.py`).
pub(crate) fn url_list(url: &str) -> Vec<&str> {
    let starts_url = |text: &str| {
        text.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
    };
    let mut urls = Vec::new();
    let mut start = 0;
    for (at, _) in url.match_indices(';') {
        if starts_url(&url[at + 1..]) {
            urls.push(&url[start..at]);
            start = at + 1;
        }
    }
    urls.push(&url[start..]);
    urls
}

/// One URL as [`redact_url`] shows it.
fn redact_one_url(url: &str) -> String {
    const MASK: &str = "**";
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The last `@` ends the credentials: a password may hold an unescaped `@`. A query
    // value holding one is masked with them, which shows less, never more.
    let (credentials, location) = match rest.rsplit_once('@') {
        Some((credentials, location)) => (Some(credentials), location),
        None => (None, rest),
    };
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    if let Some(credentials) = credentials {
        match credentials.split_once(':') {
            Some((user, _password)) => {
                shown.push_str(user);
                shown.push(':');
                shown.push_str(MASK);
            }
            // A user name alone, shown as kombu shows it; without a scheme this is no
            // URL, and what precedes the `@` may be anything.
            None if scheme.is_some() => shown.push_str(credentials),
            None => shown.push_str(MASK),
        }
        shown.push('@');
    }
    let (address, query) = match location.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (location, None),
    };
    shown.push_str(address);
    if let Some(query) = query {
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if secret_parameter(key) => format!("{key}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
        if let Some(fragment) = fragment {
            shown.push('#');
            shown.push_str(fragment);
        }
    }
    shown
}

/// Whether a URL query parameter named `key` carries a secret.
fn secret_parameter(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token", "auth", "credential"]
        .iter()
        .any(|word| key.contains(word))
}

/// `30`, `30s`, `1.5s`, `500ms`, `2m`, `1h`, `1d`, as durations are written in task schemas.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m, h or d)")),
    };
    number
        .parse::<f64>()
        .ok()
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 30s, 500ms, 2m)"))
}

/// A duration as [`parse_duration`] reads it, longer than zero.
pub(crate) fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be longer than 0".into()),
        timeout => Ok(timeout),
    }
}

/// The broker URL schemes, each with the cargo feature that compiles its transport
/// (`None`: always compiled). Kept beside the matches in [`App::from_urls`].
const BROKER_SCHEMES: &[Scheme] = &[
    ("memory", None),
    ("redis", Some("redis")),
    ("rediss", Some("redis")),
    ("sentinel", Some("redis")),
    ("amqp", Some("amqp")),
    ("amqps", Some("amqp")),
    ("pyamqp", Some("amqp")),
];

/// The result backend URL schemes, as [`BROKER_SCHEMES`].
const BACKEND_SCHEMES: &[Scheme] = &[
    ("memory", None),
    ("redis", Some("redis")),
    ("rediss", Some("redis")),
    ("sentinel", Some("redis")),
    ("rpc", Some("amqp")),
];

/// A URL scheme and the cargo feature of celerity-runtime it needs, if any.
type Scheme = (&'static str, Option<&'static str>);

/// The result backend of `url`, on any broker but AMQP (see [`App::on_amqp`]).
async fn backend_from_url(url: &str, settings: &Settings) -> Result<Arc<dyn ResultBackend>> {
    let _ = settings; // read only by the transports this build has
    Ok(match scheme(url)? {
        "memory" => Arc::new(MemoryBackend::new()),
        #[cfg(feature = "redis")]
        "redis" | "rediss" | "sentinel" => {
            let master_name = settings.result_backend_master_name.as_deref();
            let mut backend = RedisBackend::open(url, master_name).await?;
            if let Some(window) = settings.result_retry_window {
                backend = backend.result_retry_window(window);
            }
            Arc::new(backend)
        }
        #[cfg(feature = "amqp")]
        "rpc" => {
            return Err(Error::new(
                ErrorKind::Config,
                "the rpc:// result backend sends results over AMQP: it needs an amqp:// broker",
            ));
        }
        other => return Err(unsupported("result backend", other, url, BACKEND_SCHEMES)),
    })
}

fn scheme(url: &str) -> Result<&str> {
    url.split_once("://")
        .map(|(scheme, _)| scheme)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!("`{}` is not a URL (expected scheme://…)", redact_url(url)),
            )
        })
}

/// Whether this build has `feature` of celerity-runtime (`None`: nothing to have).
fn compiled(feature: Option<&str>) -> bool {
    match feature {
        None => true,
        Some("redis") => cfg!(feature = "redis"),
        Some("amqp") => cfg!(feature = "amqp"),
        Some(_) => false,
    }
}

/// The error for a URL of `scheme` that no match arm took: its transport is compiled out
/// (the error names the feature), or the scheme is unknown (the error lists the schemes
/// this build accepts).
fn unsupported(what: &str, scheme: &str, url: &str, schemes: &[Scheme]) -> Error {
    if let Some(&(_, Some(feature))) = schemes
        .iter()
        .find(|&&(known, feature)| known == scheme && !compiled(feature))
    {
        return missing_feature(scheme, feature);
    }
    let shown = redact_url(url);
    let supported: Vec<String> = schemes
        .iter()
        .filter(|&&(_, feature)| compiled(feature))
        .map(|(known, _)| format!("{known}://"))
        .collect();
    let supported = match supported.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    Error::new(
        ErrorKind::Config,
        format!("unsupported {what} scheme `{scheme}` in `{shown}`; supported: {supported}"),
    )
}

/// The error for a URL whose transport is behind `feature`, which this build leaves out,
/// with the dependency line that adds it.
fn missing_feature(scheme: &str, feature: &str) -> Error {
    const VERSION: &str = concat!(
        env!("CARGO_PKG_VERSION_MAJOR"),
        ".",
        env!("CARGO_PKG_VERSION_MINOR")
    );
    Error::new(
        ErrorKind::MissingFeature,
        format!(
            "`{scheme}://` URLs need the `{feature}` feature of celerity-runtime, which this \
             build leaves out; enable it in Cargo.toml: celerity-runtime = {{ version = \
             \"{VERSION}\", features = [\"{feature}\"] }}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error `App::from_urls` gives for these URLs.
    async fn error_for(broker_url: &str, backend_url: &str) -> Error {
        App::from_urls(broker_url, backend_url)
            .await
            .expect_err("the URLs are refused")
    }

    /// Asserts that `error` asks for `feature`, with a dependency line to paste.
    #[cfg(not(all(feature = "redis", feature = "amqp")))]
    fn assert_needs(error: &Error, scheme: &str, feature: &str) {
        assert_eq!(error.kind(), ErrorKind::MissingFeature, "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "`{scheme}://` URLs need the `{feature}` feature of celerity-runtime"
            )),
            "{message}"
        );
        assert!(
            message.ends_with(&format!(
                "celerity-runtime = {{ version = \"0.1\", features = [\"{feature}\"] }}"
            )),
            "{message}"
        );
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn redis_urls_without_the_redis_feature_name_it() {
        for scheme in ["redis", "rediss"] {
            let url = format!("{scheme}://:secret@localhost:6379/0");
            assert_needs(&error_for(&url, "memory://").await, scheme, "redis");
            assert_needs(&error_for("memory://", &url).await, scheme, "redis");
        }
    }

    #[cfg(not(feature = "amqp"))]
    #[tokio::test]
    async fn amqp_urls_without_the_amqp_feature_name_it() {
        for scheme in ["amqp", "amqps", "pyamqp"] {
            let url = format!("{scheme}://guest:guest@localhost:5672//");
            assert_needs(&error_for(&url, "memory://").await, scheme, "amqp");
        }
        assert_needs(&error_for("memory://", "rpc://").await, "rpc", "amqp");
    }

    #[cfg(all(feature = "cli", not(feature = "amqp")))]
    #[tokio::test]
    async fn the_worker_command_line_names_a_missing_feature() {
        use clap::Parser;

        let args = crate::cli::WorkerArgs::try_parse_from([
            "worker",
            "--broker-url",
            "amqp://guest:guest@localhost:5672//",
            "--result-backend",
            "memory://",
        ])
        .expect("valid arguments");
        let error = args
            .run(|_| {})
            .await
            .expect_err("the worker does not start");
        assert_needs(&error, "amqp", "amqp");
    }

    #[test]
    fn urls_are_shown_without_their_secrets() {
        let cases = [
            (
                "redis://user:secret@cache:6379/2",
                "redis://user:**@cache:6379/2",
            ),
            ("redis://:secret@cache:6379/2", "redis://:**@cache:6379/2"),
            (
                "rediss://:secret@cache:6380/0?ssl_cert_reqs=none",
                "rediss://:**@cache:6380/0?ssl_cert_reqs=none",
            ),
            (
                "redis://cache:6379/0?password=secret&db=1",
                "redis://cache:6379/0?password=**&db=1",
            ),
            (
                "redis://cache/0?Token=secret#insecure",
                "redis://cache/0?Token=**#insecure",
            ),
            (
                "amqp://guest:secret@rabbit:5672/%2f",
                "amqp://guest:**@rabbit:5672/%2f",
            ),
            (
                "amqps://guest:se@cret@rabbit//",
                "amqps://guest:**@rabbit//",
            ),
            ("redis://user@cache:6379", "redis://user@cache:6379"),
            (
                "redis://127.0.0.1:6379/0?visibility_timeout=30",
                "redis://127.0.0.1:6379/0?visibility_timeout=30",
            ),
            ("memory://", "memory://"),
            ("rpc://", "rpc://"),
            (
                "redis://:secret@a:6379/0;redis://u:secret@b:6380/0?password=secret",
                "redis://:**@a:6379/0;redis://u:**@b:6380/0?password=**",
            ),
            (
                "sentinel://:secret@s1:26379/0;sentinel://s2:26379/0?master_name=m",
                "sentinel://:**@s1:26379/0;sentinel://s2:26379/0?master_name=m",
            ),
            // A `;` in a password splits nothing.
            (
                "redis://:se;cret@a:6379/0;redis://:se;cret@b/0",
                "redis://:**@a:6379/0;redis://:**@b/0",
            ),
            ("secret@cache", "**@cache"),
            (":secret@cache", ":**@cache"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("secret"), "{url}");
            assert!(!redact_url(url).contains("cret"), "{url}");
        }
    }

    #[tokio::test]
    async fn a_url_that_is_no_url_is_shown_without_its_password() {
        let message = error_for(":secret@cache:6379", "memory://")
            .await
            .to_string();
        assert!(message.contains("is not a URL"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[tokio::test]
    async fn an_unknown_scheme_lists_the_schemes_this_build_accepts() {
        let error = error_for("carrier-pigeon://:secret@loft", "memory://").await;
        assert_eq!(error.kind(), ErrorKind::Config);
        let message = error.to_string();
        assert!(!message.contains("secret"), "{message}");
        let accepted = [
            ("memory://", true),
            ("redis://", cfg!(feature = "redis")),
            ("amqp://", cfg!(feature = "amqp")),
        ];
        for (scheme, listed) in accepted {
            assert_eq!(message.contains(scheme), listed, "{scheme} in {message}");
        }

        let error = error_for("memory://", "carrier-pigeon://loft").await;
        let message = error.to_string();
        assert!(
            message.starts_with("unsupported result backend scheme `carrier-pigeon`"),
            "{message}"
        );
        assert_eq!(
            message.contains("rpc://"),
            cfg!(feature = "amqp"),
            "{message}"
        );
    }
}
