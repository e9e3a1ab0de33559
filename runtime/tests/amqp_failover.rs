//! Failover lists of AMQP brokers (`amqp://…//;amqp://…//`, as Celery's `broker_url`): a
//! worker and a producer configured with two brokers run tasks through the first, move to
//! the second when the first stops, and run the tasks sent after on it.
//!
//! The first broker is a RabbitMQ node of the test's own (`rabbitmq-server` on loopback
//! ports, its data in a temporary directory, stopped with `rabbitmqctl -n <node> stop`); the
//! second is the RabbitMQ the other tests use, which keeps running. The two nodes share
//! nothing, so a task is taken by the worker on the broker it was sent to: the test lets
//! the tasks sent to the first broker complete before stopping it.
//!
//! Needs RabbitMQ (`CELERITY_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`)
//! and, for the node of its own, `rabbitmq-server` and `rabbitmqctl` (`RABBITMQ_SERVER` and
//! `RABBITMQCTL` name others) run by root or the `rabbitmq` user; skips without them unless
//! `CELERITY_REQUIRE_BROKERS=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use celerity::broker::{AmqpBroker, AmqpOptions};
use celerity::{App, AsyncResult, ErrorKind};
use serde_json::json;
use support::{DOUBLE, DoubleArgs, Doubler, RawAmqp, to, unique_queue};

/// How long the node of the test's own may take to boot (about 11 s on a small machine).
const BOOT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);

/// A RabbitMQ node of the test's own, listening on 127.0.0.1 only.
struct RabbitNode {
    name: String,
    port: u16,
    dir: PathBuf,
    ctl: String,
    child: Option<Child>,
}

impl RabbitNode {
    /// Boots one and waits until it accepts connections; `None` after skipping when the
    /// programs are missing or the node does not come up.
    fn start() -> Option<RabbitNode> {
        let server = std::env::var("RABBITMQ_SERVER").unwrap_or_else(|_| "rabbitmq-server".into());
        let ctl = std::env::var("RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
        for program in [&server, &ctl] {
            if !on_path(program) {
                return support::skip(format_args!(
                    "`{program}` is not on PATH (RABBITMQ_SERVER, RABBITMQCTL; the test runs a \
                     RabbitMQ node of its own)"
                ));
            }
        }
        let [port, dist_port] = free_ports();
        let name = format!("celerity-failover-{}@localhost", std::process::id());
        let dir = std::env::temp_dir().join(format!("celerity-rabbit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a data directory");
        // The `rabbitmq-server` wrapper runs the node as the `rabbitmq` user.
        set_mode(&dir, 0o777);
        // A configuration file of its own: the system one names the port of the shared
        // RabbitMQ, and would win over RABBITMQ_NODE_PORT.
        let config = dir.join("rabbitmq.conf");
        std::fs::write(&config, format!("listeners.tcp.local = 127.0.0.1:{port}\n"))
            .expect("the configuration file");
        let plugins = dir.join("enabled_plugins");
        std::fs::write(&plugins, "[].\n").expect("the plugins file");
        for file in [&config, &plugins] {
            set_mode(file, 0o644);
        }
        let log = std::fs::File::create(dir.join("server.log")).expect("a log file");
        let child = Command::new(&server)
            .env("RABBITMQ_NODENAME", &name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", &config)
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("node.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("rabbitmq-server starts");
        let mut node = RabbitNode {
            name,
            port,
            dir,
            ctl,
            child: Some(child),
        };
        let started = Instant::now();
        while !node.accepts_connections() {
            let exited = node
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > BOOT {
                let log = std::fs::read_to_string(node.dir.join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return support::skip(format_args!(
                    "a RabbitMQ node of the test's own did not start within {BOOT:?} ({})",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("RabbitMQ node {} up in {:?}", node.name, started.elapsed());
        Some(node)
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn accepts_connections(&self) -> bool {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
    }

    /// Stops the node; its clients see their connections closed.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let stopped = Command::new(&self.ctl)
            .args(["-q", "-n", &self.name, "stop"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `program` names a file, directly or on `PATH`.
fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Two ports nothing listens on, held together so that they differ.
fn free_ports() -> [u16; 2] {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (a, b) = (bind(), bind());
    [a, b].map(|listener| listener.local_addr().expect("its address").port())
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("permissions");
}

/// Sends `t.double(x)` for each `x` below `count` to `queue`.
async fn send_doubles(app: &App, queue: &str, count: i64) -> Vec<AsyncResult<i64>> {
    let client = app.client();
    let mut sent = Vec::new();
    for x in 0..count {
        let send = client
            .send_task::<i64>(&DOUBLE, vec![json!(x)])
            .with_options(to(queue))
            .send();
        sent.push(send.await.expect("the task is sent"));
    }
    sent
}

/// The URL as `describe()` shows it.
fn shown(url: &str) -> String {
    url.replacen("guest:guest@", "guest:**@", 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_moves_to_the_second_broker_when_the_first_stops() {
    let Some(second) = support::amqp_url() else {
        return;
    };
    let Some(mut first) = tokio::task::spawn_blocking(RabbitNode::start)
        .await
        .unwrap()
    else {
        return;
    };
    let urls = format!("{};{second}", first.url());
    let worker_app = App::from_urls(&urls, "rpc://").await.unwrap();
    let producer = App::from_urls(&urls, "rpc://").await.unwrap();
    assert_eq!(
        producer.broker().describe(),
        shown(&first.url()),
        "the first broker of the list is used"
    );
    let queue = unique_queue();
    let mut builder = worker_app.worker();
    builder
        .register::<Doubler, DoubleArgs>(&DOUBLE)
        .queues([queue.clone()])
        .concurrency(2);
    let worker = builder.start().await.unwrap();

    let before = send_doubles(&producer, &queue, 5).await;
    let lost = support::lost_doubles(&before, WAIT).await;
    assert!(lost.is_empty(), "through the first broker: {lost:?}");
    assert_eq!(worker_app.broker().describe(), shown(&first.url()));

    let stopping = Instant::now();
    tokio::task::spawn_blocking(move || {
        first.stop();
        first
    })
    .await
    .unwrap();
    println!("first broker stopped in {:?}", stopping.elapsed());

    let moved = Instant::now();
    let after = send_doubles(&producer, &queue, 5).await;
    let lost = support::lost_doubles(&after, WAIT).await;
    assert!(lost.is_empty(), "through the second broker: {lost:?}");
    println!(
        "tasks sent after the stop completed in {:?}",
        moved.elapsed()
    );
    for app in [&worker_app, &producer] {
        assert_eq!(app.broker().describe(), shown(&second), "now on the second");
    }

    worker.shutdown().await;
    producer.close().await;
    worker_app.close().await;
    RawAmqp::connect(&second).await.delete(&queue).await;
}

#[tokio::test]
async fn the_first_broker_that_answers_is_used() {
    let Some(url) = support::amqp_url() else {
        return;
    };
    let [closed, _] = free_ports();
    let unreachable = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    let broker = AmqpBroker::connect_with(&format!("{unreachable};{url}"), AmqpOptions::default())
        .await
        .expect("the second broker answers");
    let queue = unique_queue();
    broker
        .declare(&broker.queue_declaration(&queue))
        .await
        .unwrap();
    assert_eq!(celerity::broker::Broker::describe(&broker), shown(&url));
    broker.delete_queue(&queue).await.unwrap();
    broker.close().await;
}

#[tokio::test]
async fn a_list_of_unreachable_brokers_names_each() {
    let [a, b] = free_ports();
    let urls = format!("amqp://guest:secret@127.0.0.1:{a}//;amqp://guest:secret@127.0.0.1:{b}//");
    let options = AmqpOptions::default().connect_timeout(Duration::from_secs(2));
    let error = AmqpBroker::connect_with(&urls, options).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Broker, "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{a}, 127.0.0.1:{b}")),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
}
