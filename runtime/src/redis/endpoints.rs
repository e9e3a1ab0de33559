//! Where a Redis connection goes: one server; a `;`-separated failover list, tried in
//! round-robin order like kombu's alternate URLs (`kombu/connection.py`, the `round-robin`
//! `failover_strategy`); or the master a group of Redis Sentinels names, found as kombu's
//! `SentinelChannel` (`kombu/transport/redis.py`) and Celery's `SentinelBackend`
//! (`celery/backends/redis.py`) find it.
//!
//! Every URL form has one parser and one resolver here, so the connection
//! ([`super::connection`]) asks one question whatever the deployment: which server
//! now?

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult};

use crate::app::{redact_url as redact, url_list};
use crate::error::{Error, ErrorKind, Result};

/// How long asking one sentinel, or checking that one server answers, may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A sentinel's port when its URL names none (kombu's `SentinelTransport.default_port`).
const SENTINEL_PORT: u16 = 26379;

/// The servers a connection may use.
pub(crate) enum Endpoints {
    /// Servers named by URL (`redis://a;redis://b`), tried in turn from the one in use.
    Fixed(Vec<redis::Client>),
    /// Whichever server the sentinels name as the master.
    Sentinel(Sentinels),
}

/// A group of sentinels watching one master.
pub(crate) struct Sentinels {
    /// The sentinels, the one that answered last first, as redis-py's
    /// `Sentinel.discover_master` orders them.
    nodes: Mutex<Vec<ConnectionInfo>>,
    /// The master's name: kombu's `master_name` transport option.
    master_name: String,
    /// User, password and database for the master, from the first URL (kombu and Celery
    /// give the URL's password to the master, not to the sentinels).
    master: redis::RedisConnectionInfo,
}

/// A server found reachable.
pub(crate) struct Endpoint {
    /// Its place in a fixed list (0 for a sentinel's master).
    pub(crate) index: usize,
    /// `host:port`, for logs and for telling whether the master moved.
    pub(crate) address: String,
    pub(crate) client: redis::Client,
}

impl Endpoints {
    /// The endpoints of `url`, and how to show them: the URL without passwords, and for
    /// Sentinel the master's name. `master_name` wins over the URL's `?master_name=`.
    pub(crate) fn parse(url: &str, master_name: Option<&str>) -> Result<(Endpoints, String)> {
        let invalid = |reason: String| {
            Error::new(
                ErrorKind::Config,
                format!("invalid Redis URL `{}`: {reason}", redact(url)),
            )
        };
        let urls = url_list(url);
        let scheme = |url: &str| url.split_once("://").map(|(scheme, _)| scheme.to_owned());
        let first = scheme(urls[0]);
        if urls.iter().any(|url| scheme(url) != first) {
            return Err(invalid(
                "a `;`-separated list names servers of one kind: all redis://, all \
                 rediss:// or all sentinel://"
                    .into(),
            ));
        }
        if first.as_deref() != Some("sentinel") {
            let clients = urls
                .iter()
                .map(|url| client_for(url))
                .collect::<Result<Vec<_>>>()?;
            let db = |client: &redis::Client| client.get_connection_info().redis_settings().db();
            if clients.iter().any(|client| db(client) != db(&clients[0])) {
                return Err(invalid(
                    "every server of a failover list must use the same database number".into(),
                ));
            }
            return Ok((Endpoints::Fixed(clients), redact(url)));
        }
        let master_name = master_name
            .map(str::to_owned)
            .or_else(|| query_value(url, "master_name").map(str::to_owned))
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                invalid(
                    "a sentinel:// URL needs the master's name: add ?master_name=<name> \
                     (kombu's master_name transport option), or set \
                     CELERITY_BROKER_MASTER_NAME or CELERITY_RESULT_BACKEND_MASTER_NAME"
                        .into(),
                )
            })?;
        let tls = [
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
            "ssl_cert_reqs",
        ];
        if tls.iter().any(|key| query_value(url, key).is_some()) {
            return Err(invalid("TLS through Sentinel is not supported".into()));
        }
        let sentinel_password = query_value(url, "sentinel_password");
        let mut nodes = Vec::new();
        let mut master = None;
        for url in &urls {
            let rest = url.split_once("://").map_or("", |(_, rest)| rest);
            let location = rest.split(['?', '#']).next().unwrap_or_default();
            let info = format!("redis://{location}")
                .into_connection_info()
                .map_err(|e| invalid(e.to_string()))?;
            master.get_or_insert_with(|| info.redis_settings().clone());
            let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
                return Err(invalid("a sentinel is named by host and port".into()));
            };
            let authority = location.split('/').next().unwrap_or_default();
            let port = if explicit_port(authority) {
                port
            } else {
                SENTINEL_PORT
            };
            let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
            if let Some(password) = sentinel_password {
                settings = settings.set_password(password);
            }
            let node = ConnectionAddr::Tcp(host, port)
                .into_connection_info()
                .map_err(|e| invalid(e.to_string()))?
                .set_redis_settings(settings);
            nodes.push(node);
        }
        let shown = format!("{} (master {master_name})", redact(url));
        let sentinels = Sentinels {
            nodes: Mutex::new(nodes),
            master_name,
            master: master.unwrap_or_default(),
        };
        Ok((Endpoints::Sentinel(sentinels), shown))
    }

    /// Whether there is another server to move to when the one in use fails.
    pub(crate) fn can_move(&self) -> bool {
        match self {
            Endpoints::Fixed(clients) => clients.len() > 1,
            Endpoints::Sentinel(_) => true,
        }
    }

    /// Whether writes should wait for a replica: the master may be replaced by one.
    pub(crate) fn replicated(&self) -> bool {
        matches!(self, Endpoints::Sentinel(_))
    }

    /// The database number every server is used with.
    pub(crate) fn db(&self) -> i64 {
        match self {
            Endpoints::Fixed(clients) => clients[0].get_connection_info().redis_settings().db(),
            Endpoints::Sentinel(sentinels) => sentinels.master.db(),
        }
    }

    /// The server to connect to first: a lone server as it is (its connection retries on
    /// its own), otherwise as [`Self::locate`] finds one.
    pub(crate) async fn first(&self) -> RedisResult<Endpoint> {
        match self {
            Endpoints::Fixed(clients) if clients.len() == 1 => Ok(fixed(0, &clients[0])),
            _ => self.locate(0).await,
        }
    }

    /// The server to use now. From a fixed list: the first that answers, starting at
    /// `from` (the one in use, so a server that comes back at once is kept) and going on in
    /// round-robin order. With Sentinel: the master the first sentinel that knows it names,
    /// once that server confirms it is a master (`ROLE`), as the Sentinel client protocol
    /// asks (<https://redis.io/docs/latest/develop/reference/sentinel-clients/>).
    pub(crate) async fn locate(&self, from: usize) -> RedisResult<Endpoint> {
        match self {
            Endpoints::Fixed(clients) => {
                let mut failure = None;
                for step in 0..clients.len() {
                    let index = (from + step) % clients.len();
                    let client = &clients[index];
                    match answers(client).await {
                        Ok(_) => return Ok(fixed(index, client)),
                        Err(error) => failure = Some(error),
                    }
                }
                Err(failure.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Client, "no Redis server listed"))
                }))
            }
            Endpoints::Sentinel(sentinels) => sentinels.master().await,
        }
    }
}

impl Sentinels {
    /// The master, as the sentinels name it and it confirms.
    async fn master(&self) -> RedisResult<Endpoint> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut failure = None;
        for (position, node) in nodes.iter().enumerate() {
            let address = match self.ask(node).await {
                Ok(Some(address)) => address,
                Ok(None) => {
                    failure = Some(redis::RedisError::from((
                        redis::ErrorKind::MasterNameNotFoundBySentinel,
                        "no sentinel knows the master",
                        format!(
                            "`{}` is not a master these sentinels watch",
                            self.master_name
                        ),
                    )));
                    continue;
                }
                Err(error) => {
                    failure.get_or_insert(error);
                    continue;
                }
            };
            if position > 0 {
                let mut order = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
                let answered = order.remove(position);
                order.insert(0, answered);
            }
            let (host, port) = address;
            let info = ConnectionAddr::Tcp(host, port)
                .into_connection_info()?
                .set_redis_settings(self.master.clone());
            let client = redis::Client::open(info)?;
            let mut connection = answers(&client).await?;
            let role = role(&mut connection).await?;
            if role.name != "master" {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the server the sentinels name is not a master yet",
                    format!("{} says it is a {}", fixed(0, &client).address, role.name),
                )));
            }
            return Ok(fixed(0, &client));
        }
        Err(failure.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::EmptySentinelList, "no sentinel listed"))
        }))
    }

    /// The master's address according to the sentinel `node`; `None` when it does not
    /// watch a master of that name.
    async fn ask(&self, node: &ConnectionInfo) -> RedisResult<Option<(String, u16)>> {
        let client = redis::Client::open(node.clone())?;
        let mut connection =
            bounded(PROBE_TIMEOUT, client.get_multiplexed_async_connection()).await?;
        let mut command = redis::cmd("SENTINEL");
        command
            .arg("get-master-addr-by-name")
            .arg(&self.master_name);
        bounded(PROBE_TIMEOUT, command.query_async(&mut connection)).await
    }
}

/// A server's role (`ROLE`): `master`, `slave` or `sentinel`, and a master's connected
/// replicas.
pub(crate) struct Role {
    pub(crate) name: String,
    pub(crate) replicas: usize,
}

/// The role of the server on `connection`.
pub(crate) async fn role(connection: &mut impl redis::aio::ConnectionLike) -> RedisResult<Role> {
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query_async(connection).await?;
    let name = match reply.first() {
        Some(value) => redis::from_redis_value_ref::<String>(value)?,
        None => String::new(),
    };
    let replicas = match (name.as_str(), reply.get(2)) {
        ("master", Some(redis::Value::Array(replicas))) => replicas.len(),
        _ => 0,
    };
    Ok(Role { name, replicas })
}

fn fixed(index: usize, client: &redis::Client) -> Endpoint {
    Endpoint {
        index,
        address: client.get_connection_info().addr().to_string(),
        client: client.clone(),
    }
}

/// A connection to `client`'s server once it answers `PING`.
async fn answers(client: &redis::Client) -> RedisResult<redis::aio::MultiplexedConnection> {
    let mut connection = bounded(PROBE_TIMEOUT, client.get_multiplexed_async_connection()).await?;
    bounded(
        PROBE_TIMEOUT,
        redis::cmd("PING").query_async::<()>(&mut connection),
    )
    .await?;
    Ok(connection)
}

/// `operation`, failing as a timed-out connection after `limit`.
pub(crate) async fn bounded<T>(
    limit: Duration,
    operation: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    tokio::time::timeout(limit, operation).await.map_err(|_| {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis operation timed out",
        ))
    })?
}

/// Whether a URL authority (`[user:password@]host[:port]`) names a port.
fn explicit_port(authority: &str) -> bool {
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    host_port.rsplit_once(':').is_some_and(|(host, port)| {
        !host.ends_with('[') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The value of query parameter `key` in `url`, from whichever URL of a `;`-separated
/// list carries it (the last one when several do).
pub(crate) fn query_value<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    url_list(url)
        .into_iter()
        .filter_map(|url| url.split_once('?').map(|(_, query)| query))
        .flat_map(|query| query.split('#').next().unwrap_or_default().split('&'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| *name == key)
        .map(|(_, value)| value)
        .next_back()
}

/// A client for `url`. `rediss://` URLs take Celery's TLS query parameters:
/// `ssl_ca_certs` (a PEM file of trusted roots instead of the system's),
/// `ssl_certfile` and `ssl_keyfile` (a client certificate), and `ssl_cert_reqs=none`
/// (do not verify the server: for tests only).
fn client_for(url: &str) -> Result<redis::Client> {
    let invalid = |reason: String| {
        Error::new(
            ErrorKind::Config,
            format!("invalid Redis URL `{}`: {reason}", redact(url)),
        )
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut kept, mut tls) = (Vec::new(), TlsFiles::default());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "ssl_ca_certs" => tls.ca = Some(value.to_owned()),
            "ssl_certfile" => tls.cert = Some(value.to_owned()),
            "ssl_keyfile" => tls.key = Some(value.to_owned()),
            "ssl_cert_reqs" => {
                tls.verify = !matches!(value.to_ascii_lowercase().as_str(), "none" | "cert_none")
            }
            _ => kept.push(pair),
        }
    }
    let mut plain = base.to_owned();
    if !kept.is_empty() {
        plain = format!("{plain}?{}", kept.join("&"));
    }
    let is_tls = url.starts_with("rediss://");
    if !is_tls && tls != TlsFiles::default() {
        return Err(invalid("ssl_* parameters need a rediss:// URL".into()));
    }
    if is_tls {
        // rustls needs a process-wide crypto provider; another may be installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if is_tls && !tls.verify {
        plain.push_str("#insecure");
    }
    let opened = if is_tls && (tls.ca.is_some() || tls.cert.is_some()) {
        let read = |path: &str| {
            std::fs::read(path).map_err(|e| invalid(format!("cannot read `{path}`: {e}")))
        };
        let client_tls = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => return Err(invalid("ssl_certfile and ssl_keyfile go together".into())),
        };
        let root_cert = tls.ca.as_deref().map(read).transpose()?;
        redis::Client::build_with_tls(
            plain.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    } else {
        redis::Client::open(plain.as_str())
    };
    opened.map_err(|e| invalid(e.to_string()))
}

#[derive(Debug, PartialEq, Eq)]
struct TlsFiles {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    verify: bool,
}

impl Default for TlsFiles {
    fn default() -> Self {
        TlsFiles {
            ca: None,
            cert: None,
            key: None,
            verify: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<(Endpoints, String)> {
        Endpoints::parse(url, None)
    }

    fn sentinels(url: &str, master_name: Option<&str>) -> (Sentinels, String) {
        match Endpoints::parse(url, master_name).expect("a valid URL") {
            (Endpoints::Sentinel(sentinels), shown) => (sentinels, shown),
            (Endpoints::Fixed(_), _) => panic!("{url} names sentinels"),
        }
    }

    fn addresses(sentinels: &Sentinels) -> Vec<String> {
        let nodes = sentinels.nodes.lock().unwrap();
        nodes.iter().map(|node| node.addr().to_string()).collect()
    }

    #[test]
    fn a_failover_list_names_each_server_in_order() {
        let (endpoints, shown) =
            parse("redis://:secret@a:6379/2;redis://b:6380/2?visibility_timeout=5").unwrap();
        let Endpoints::Fixed(clients) = &endpoints else {
            panic!("a list of servers");
        };
        let named: Vec<String> = clients
            .iter()
            .map(|c| c.get_connection_info().addr().to_string())
            .collect();
        assert_eq!(named, ["a:6379", "b:6380"]);
        assert!(endpoints.can_move());
        assert!(!endpoints.replicated());
        assert_eq!(endpoints.db(), 2);
        assert_eq!(
            shown,
            "redis://:**@a:6379/2;redis://b:6380/2?visibility_timeout=5"
        );

        let (single, _) = parse("redis://a:6379/0").unwrap();
        assert!(!single.can_move());
    }

    #[test]
    fn a_failover_list_keeps_to_one_scheme_and_one_database() {
        for (url, says) in [
            ("redis://a/0;sentinel://b/0", "servers of one kind"),
            ("redis://:secret@a/0;rediss://b/0", "servers of one kind"),
            ("sentinel://a/0;redis://:secret@b/0", "servers of one kind"),
            ("redis://:secret@a/0;redis://b/1", "same database number"),
        ] {
            let error = parse(url).err().expect("refused");
            assert_eq!(error.kind(), ErrorKind::Config, "{url}");
            let message = error.to_string();
            assert!(message.contains(says), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master_as_kombu_reads_them() {
        let url = "sentinel://user:secret@s1/3;sentinel://s2:26380/3?master_name=mymaster";
        let (sentinels, shown) = sentinels(url, None);
        assert_eq!(sentinels.master_name, "mymaster");
        assert_eq!(addresses(&sentinels), ["s1:26379", "s2:26380"]);
        // The URL's credentials and database are the master's; sentinels get none.
        assert_eq!(sentinels.master.db(), 3);
        assert_eq!(sentinels.master.username(), Some("user"));
        assert_eq!(sentinels.master.password(), Some("secret"));
        let nodes = sentinels.nodes.lock().unwrap().clone();
        assert!(
            nodes
                .iter()
                .all(|n| n.redis_settings().password().is_none())
        );
        assert_eq!(
            shown,
            "sentinel://user:**@s1/3;sentinel://s2:26380/3?master_name=mymaster (master mymaster)"
        );

        // The name given apart wins; sentinel_password goes to the sentinels only.
        let url = "sentinel://s1:26379/0?master_name=a&sentinel_password=hidden";
        let (sentinels, shown) = self::sentinels(url, Some("b"));
        assert_eq!(sentinels.master_name, "b");
        assert_eq!(sentinels.master.password(), None);
        let nodes = sentinels.nodes.lock().unwrap().clone();
        assert_eq!(nodes[0].redis_settings().password(), Some("hidden"));
        assert!(!shown.contains("hidden"), "{shown}");
        assert!(shown.ends_with("(master b)"), "{shown}");
    }

    #[test]
    fn a_sentinel_url_without_a_master_name_says_how_to_give_one() {
        let error = parse("sentinel://:secret@s1:26379/0;sentinel://s2:26379/0")
            .err()
            .expect("refused");
        assert_eq!(error.kind(), ErrorKind::Config);
        let message = error.to_string();
        assert!(message.contains("?master_name="), "{message}");
        assert!(message.contains("CELERITY_BROKER_MASTER_NAME"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn sentinel_urls_refuse_tls_parameters_they_cannot_honour() {
        let url = "sentinel://s1/0?master_name=m&ssl_certfile=client.pem";
        let message = parse(url).err().expect("refused").to_string();
        assert!(message.contains("TLS through Sentinel"), "{message}");
    }

    #[test]
    fn query_parameters_are_read_from_any_url_of_a_list() {
        let url = "sentinel://s1/0?master_name=a;sentinel://s2/0?visibility_timeout=9";
        assert_eq!(query_value(url, "master_name"), Some("a"));
        assert_eq!(query_value(url, "visibility_timeout"), Some("9"));
        assert_eq!(query_value(url, "db"), None);
        assert_eq!(query_value("redis://a/0?x=1&x=2#f", "x"), Some("2"));
    }
}
