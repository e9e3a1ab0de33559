//! What broker-backed tests share: finding the broker, or saying clearly why they skip.
//! The helpers that speak to Redis or RabbitMQ through their client crates exist only when
//! the runtime is built with that transport's feature, as do the tests that use them.

#![allow(dead_code)] // each test binary uses part of this

use std::time::Duration;

pub mod skip;

#[allow(unused_imports)] // as above: each test binary uses part of this
pub use skip::{amqp_url, python_with_celery, redis_url, skip};

/// A raw connection for inspecting what Celerity wrote.
#[cfg(feature = "redis")]
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

/// Arguments of `t.double` as a sender serializes them.
#[derive(serde::Serialize)]
pub struct DoubleCall {
    pub x: i64,
}

/// A worker of `t.double` on `queue`, started.
pub async fn doubler(app: &celerity::App, queue: &str) -> celerity::Worker {
    let mut builder = app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.to_owned()]);
    builder.start().await.expect("the worker starts")
}

/// Options sending to `queue`.
pub fn to(queue: &str) -> celerity::SendOptions {
    celerity::SendOptions {
        queue: Some(queue.to_owned()),
        ..Default::default()
    }
}

/// Every run of the probe tasks, by argument, in order, across the workers of a test.
#[derive(Default, Clone)]
pub struct Runs(std::sync::Arc<std::sync::Mutex<Vec<i64>>>);

impl Runs {
    /// The arguments of the runs so far.
    pub fn list(&self) -> Vec<i64> {
        self.0.lock().unwrap().clone()
    }
}

/// Runs the probe tasks, noting each run in the worker's [`Runs`].
pub struct Probe {
    runs: std::sync::Arc<Runs>,
}

impl celerity::Component for Probe {
    type Deps = std::sync::Arc<Runs>;
    async fn build(
        runs: std::sync::Arc<Runs>,
        _ctx: &celerity::TaskContext,
    ) -> Result<Self, celerity::BuildError> {
        Ok(Probe { runs })
    }
}

/// `t.record(n)`: notes `n` and returns it.
pub static RECORD: celerity::TaskSpec =
    celerity::TaskSpec::new("t.record", &[celerity::ArgSpec::new("n", true)]);

/// Arguments of `t.record`.
#[derive(serde::Deserialize)]
pub struct RecordArgs {
    n: i64,
}

impl celerity::Invoke<Probe> for RecordArgs {
    type Output = i64;
    async fn invoke(
        self,
        probe: &Probe,
        _ctx: &celerity::TaskContext,
    ) -> celerity::TaskResult<i64> {
        probe.runs.0.lock().unwrap().push(self.n);
        Ok(self.n)
    }
}

/// Arguments of `t.record` as a sender serializes them.
#[derive(serde::Serialize)]
pub struct RecordCall {
    pub n: i64,
}

/// `t.retry_once()`: asks for a retry in 1 s on its first run; returns its retry count.
pub static RETRY_ONCE: celerity::TaskSpec = celerity::TaskSpec::new("t.retry_once", &[]);

/// Arguments of `t.retry_once`.
#[derive(serde::Deserialize)]
pub struct RetryOnceArgs {}

impl celerity::Invoke<Probe> for RetryOnceArgs {
    type Output = u32;
    async fn invoke(
        self,
        _probe: &Probe,
        ctx: &celerity::TaskContext,
    ) -> celerity::TaskResult<u32> {
        if ctx.retries == 0 {
            Err(celerity::TaskError::retry(Some(Duration::from_secs(1))))
        } else {
            Ok(ctx.retries)
        }
    }
}

/// `t.slow(ms)`: sleeps, acknowledged late.
pub static SLOW: celerity::TaskSpec =
    celerity::TaskSpec::new("t.slow", &[celerity::ArgSpec::new("ms", true)]).acks_late(true);

/// Arguments of `t.slow`.
#[derive(serde::Deserialize)]
pub struct SlowArgs {
    ms: u64,
}

impl celerity::Invoke<Probe> for SlowArgs {
    type Output = u64;
    async fn invoke(
        self,
        _probe: &Probe,
        _ctx: &celerity::TaskContext,
    ) -> celerity::TaskResult<u64> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(self.ms)
    }
}

/// `t.retry_double(x)`: asks for a retry in 3 s on its first run, then notes `x` and
/// returns `2x`.
pub static RETRY_DOUBLE: celerity::TaskSpec =
    celerity::TaskSpec::new("t.retry_double", &[celerity::ArgSpec::new("x", true)]);

/// Arguments of `t.double` and `t.retry_double` run by [`Probe`], which notes `x`.
#[derive(serde::Deserialize)]
pub struct CountedDouble {
    x: i64,
}

impl celerity::Invoke<Probe> for CountedDouble {
    type Output = i64;
    async fn invoke(self, probe: &Probe, ctx: &celerity::TaskContext) -> celerity::TaskResult<i64> {
        if ctx.name == RETRY_DOUBLE.name && ctx.retries == 0 {
            return Err(celerity::TaskError::retry(Some(Duration::from_secs(3))));
        }
        probe.runs.0.lock().unwrap().push(self.x);
        Ok(self.x * 2)
    }
}

/// A worker of every probe task on `queue`, with [`Runs`] of its own
/// (`worker.singleton::<Runs>()`).
pub async fn probe_worker(
    app: &celerity::App,
    queue: &str,
    concurrency: usize,
    prefetch_multiplier: usize,
) -> celerity::Worker {
    let mut builder = app.worker();
    builder
        .singleton(Runs::default())
        .register::<Probe, RecordArgs>(&RECORD)
        .register::<Probe, RetryOnceArgs>(&RETRY_ONCE)
        .register::<Probe, SlowArgs>(&SLOW)
        .register::<Probe, CountedDouble>(&DOUBLE)
        .register::<Probe, CountedDouble>(&RETRY_DOUBLE)
        .queues([queue.to_owned()])
        .concurrency(concurrency)
        .prefetch_multiplier(prefetch_multiplier);
    builder.start().await.expect("the worker starts")
}

/// A test's app and a queue of its own on it.
pub struct TestQueue {
    /// The app.
    pub app: celerity::App,
    /// The queue, named by [`unique_queue`].
    pub queue: String,
}

impl TestQueue {
    /// `app` with a new queue.
    pub fn new(app: celerity::App) -> TestQueue {
        TestQueue {
            app,
            queue: unique_queue(),
        }
    }

    /// Sends `spec(args)` to the queue with `options`.
    pub async fn send<R>(
        &self,
        spec: &'static celerity::TaskSpec,
        args: serde_json::Value,
        options: celerity::SendOptions,
    ) -> celerity::AsyncResult<R>
    where
        R: serde::de::DeserializeOwned + Send + 'static,
    {
        let serde_json::Value::Array(args) = args else {
            panic!("args must be a list")
        };
        let options = celerity::SendOptions {
            queue: Some(self.queue.clone()),
            ..options
        };
        self.app
            .client()
            .send_task(spec, args)
            .with_options(options)
            .await
            .unwrap()
    }

    /// A worker of the probe tasks on the queue ([`probe_worker`]).
    pub async fn worker(&self, concurrency: usize, multiplier: usize) -> celerity::Worker {
        probe_worker(&self.app, &self.queue, concurrency, multiplier).await
    }
}

/// The tasks of `sent` (each doubling its index) that did not complete with the right
/// value within `within`, described. One deadline for all of them, so a worker that never
/// recovers fails the test in `within` rather than in one timeout per task.
pub async fn lost_doubles(sent: &[celerity::AsyncResult<i64>], within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut lost = Vec::new();
    for (x, result) in sent.iter().enumerate() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match result.get(left.max(Duration::from_millis(100))).await {
            Ok(value) if value == 2 * x as i64 => {}
            Ok(value) => lost.push(format!("task {x} returned {value}")),
            Err(error) => lost.push(format!("task {x}: {error}")),
        }
    }
    lost
}

/// Runs the ignored test `name` of this test binary in a process of its own with `env`
/// added, and reads its output until it prints `line` (true) or ends (false): a worker
/// the calling test can SIGKILL (`child.kill()`) at a known point.
pub fn child_test(name: &str, env: &[(&str, &str)], line: &str) -> (std::process::Child, bool) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--ignored", "--exact", name, "--nocapture"])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the child test starts");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("its stdout"));
    let seen = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .any(|printed| printed == line);
    (child, seen)
}

/// A queue name no other test uses.
pub fn unique_queue() -> String {
    format!("celerity-test-{}", uuid::Uuid::new_v4())
}

/// A Redis server of the test's own, on a free port, persisting every write (append-only
/// file, fsync always) so that it can be killed and restarted without losing data.
#[cfg(feature = "redis")]
pub struct RedisServer {
    child: Option<std::process::Child>,
    port: u16,
    dir: std::path::PathBuf,
    /// Serves TLS only, with a certificate of a CA of its own (`ca.pem` in `dir`).
    tls: bool,
    /// More command-line arguments (`--replicaof 127.0.0.1 <port>`, say).
    args: Vec<String>,
    /// Runs as a Redis Sentinel with this configuration file's content.
    sentinel: Option<String>,
}

#[cfg(feature = "redis")]
impl RedisServer {
    /// Starts one, or returns `None` after printing why the test skips (no `redis-server`
    /// on `PATH`); fails instead when `CELERITY_REQUIRE_BROKERS=1`.
    pub async fn start() -> Option<Self> {
        Self::launch(false, Vec::new(), None).await
    }

    /// Starts one with more command-line arguments.
    pub async fn start_with(args: &[&str]) -> Option<Self> {
        let args = args.iter().map(|arg| arg.to_string()).collect();
        Self::launch(false, args, None).await
    }

    /// Starts a Redis Sentinel (`redis-server <conf> --sentinel`) watching the master at
    /// 127.0.0.1:`master_port` as `name`: a quorum of one, the master taken for down after
    /// `down_after` without an answer.
    pub async fn start_sentinel(
        name: &str,
        master_port: u16,
        down_after: Duration,
    ) -> Option<Self> {
        let millis = down_after.as_millis();
        let config = format!(
            "sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {name} {millis}\n\
             sentinel failover-timeout {name} {}\n\
             sentinel parallel-syncs {name} 1\n",
            millis * 3
        );
        Self::launch(false, Vec::new(), Some(config)).await
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts one that serves TLS only, with a server certificate for 127.0.0.1 signed by
    /// a CA of its own (see [`Self::ca_file`]). Needs `openssl` as well.
    pub async fn start_tls() -> Option<Self> {
        Self::launch(true, Vec::new(), None).await
    }

    async fn launch(tls: bool, args: Vec<String>, sentinel: Option<String>) -> Option<Self> {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return skip("redis-server is not on PATH (the test runs a Redis of its own)");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("celerity-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a data directory");
        if tls {
            make_certificates(&dir)?;
        }
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            tls,
            args,
            sentinel,
        };
        server.spawn().await;
        Some(server)
    }

    /// The server's URL (`rediss://` for a TLS server; its CA is not in the URL).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// Kills the server (SIGKILL: no chance to save anything beyond what is on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the server `signal` (`STOP`, `CONT`…): `STOP` freezes it with its connections
    /// open, as a stalled host would.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running server");
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .is_ok_and(|status| status.success());
        assert!(sent, "kill -{signal} {}", child.id());
    }

    /// Starts the server again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let mut command = std::process::Command::new("redis-server");
        if let Some(config) = &self.sentinel {
            // Sentinel rewrites its configuration file: a fresh one each start.
            let file = self.dir.join("sentinel.conf");
            std::fs::write(&file, config).expect("a sentinel configuration");
            command.arg(&file).arg("--sentinel");
        }
        command.args(["--bind", "127.0.0.1"]);
        if self.tls {
            let file = |name: &str| self.dir.join(name).display().to_string();
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", &file("server.pem")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.pem")])
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        if self.sentinel.is_none() {
            command.args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]);
        }
        let child = command
            .args(&self.args)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let mut url = self.url();
        if self.tls {
            // Only to see it is up: the tests check the certificate themselves.
            url.push_str("#insecure");
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not come up on port {}", self.port);
    }
}

/// A CA and a server certificate for 127.0.0.1 it signed, made with `openssl`, in `dir`.
fn make_certificates(dir: &std::path::Path) -> Option<()> {
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .ok()?;
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let made = openssl(
        &[
            &["req", "-x509"],
            &key[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=celerity test CA",
            ],
        ]
        .concat(),
    ) && openssl(
        &[
            &["req"],
            &key[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    ) && openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "server.ext",
    ]);
    if made {
        return Some(());
    }
    skip("openssl could not make test certificates (is it on PATH?)")
}

#[cfg(feature = "redis")]
impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(feature = "amqp")]
fn amqp_properties() -> lapin::ConnectionProperties {
    lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current())
}

/// A plain AMQP channel for arranging and inspecting what Celerity does on RabbitMQ.
#[cfg(feature = "amqp")]
pub struct RawAmqp {
    _connection: lapin::Connection,
    /// The channel.
    pub channel: lapin::Channel,
}

#[cfg(feature = "amqp")]
impl RawAmqp {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> RawAmqp {
        let connection = lapin::Connection::connect(url, amqp_properties())
            .await
            .expect("an AMQP connection");
        let channel = connection.create_channel().await.expect("a channel");
        RawAmqp {
            _connection: connection,
            channel,
        }
    }

    /// Takes the next message of `queue`, if any.
    pub async fn get(&self, queue: &str) -> Option<lapin::message::BasicGetMessage> {
        let options = lapin::options::BasicGetOptions { no_ack: true };
        self.channel
            .basic_get(queue, options)
            .await
            .expect("basic.get")
    }

    /// How many messages wait in `queue` (declared passively: it must exist).
    pub async fn count(&self, queue: &str) -> u32 {
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue, options, Default::default())
            .await
            .expect("the queue exists")
            .message_count()
    }

    /// Deletes `queue` and an exchange of the same name, as Celery declares them.
    pub async fn delete(&self, queue: &str) {
        let _ = self.channel.queue_delete(queue, Default::default()).await;
        let _ = self
            .channel
            .exchange_delete(queue, Default::default())
            .await;
    }
}
