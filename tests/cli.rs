//! The worker program: its banner, and the `worker` example run as a real process against
//! Redis: it becomes ready (ready file, health endpoint), runs a task sent to it, and on
//! SIGTERM stops consuming, drains and exits with status 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use celerity::cli::Banner;
use celerity::{App, TaskState};
use celerity_shop::tasks::TasksRegistry;

mod support;
use support::redis_url;

#[test]
fn the_banner_shows_the_configuration_every_task_with_its_queue_and_every_schedule() {
    let app = App::memory();
    let mut builder = app.worker();
    celerity_shop::register(&mut builder);
    builder
        .hostname("celery@shop-1")
        .concurrency(8)
        .queues(["shop", "orders", "email"]);
    let banner = Banner::new(
        &builder.settings(),
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1:6379/0",
    )
    .visibility_timeout(Duration::from_secs(600))
    .health_url("http://127.0.0.1:9100/healthz".into())
    .ready_file("/tmp/celerity.ready".into())
    .now("2026-03-01T10:00:05Z".parse().unwrap());
    let expected = format!(
        "\
celery@shop-1 v{version} (celerity)

[config]
.> transport:   redis://127.0.0.1:6379/0
.> results:     redis://127.0.0.1:6379/0
.> concurrency: 8 (prefetch 32)
.> shutdown:    waits 30s
.> visibility:  unacked tasks return after 600s
.> health:      http://127.0.0.1:9100/healthz
.> ready file:  /tmp/celerity.ready

[queues]
.> shop
.> orders
.> email

[tasks]
  . tasks.alert_ops         shop
  . tasks.cleanup_sessions  shop
  . tasks.create_user       shop
  . tasks.email_summary     email
  . tasks.generate_report   reports  (queue not consumed)
  . tasks.ping              shop
  . tasks.process_order     orders
  . tasks.send_email        email
  . tasks.summarize_orders  orders

[schedules] not sent by this worker (--beat, or the `beat` command, sends them)
  . canary                tasks.ping → shop                every 1s                          next 2026-03-01T10:00:06Z
  . session-cleanup       tasks.cleanup_sessions → shop    every 10m                         next 2026-03-01T10:10:00Z
  . nightly-sales-report  tasks.generate_report → reports  crontab 30 2 * * * Europe/London  next 2026-03-02T02:30:00Z (2026-03-02 02:30 GMT)
",
        version = env!("CARGO_PKG_VERSION")
    );
    assert_eq!(banner.to_string(), expected);
}

#[test]
fn the_banner_shows_the_visibility_timeout_of_the_flag_else_the_variable_else_the_url() {
    let Some(url) = redis_url() else { return };
    // A database of its own: each worker sweeps its `unacked` hash with these timeouts.
    let url = url
        .rsplit_once('/')
        .map_or(url.clone(), |(base, _)| format!("{base}/12"));
    let queue = format!("celerity-test-{}", uuid::Uuid::new_v4());
    let with_query = format!("{url}?visibility_timeout=5");
    let cases: [(&str, &[&str], Option<&str>, &str); 4] = [
        (&url, &[], None, "3600s"),
        (&with_query, &[], None, "5s"),
        (&with_query, &[], Some("7"), "7s"),
        (
            &with_query,
            &["--visibility-timeout", "90s"],
            Some("7"),
            "90s",
        ),
    ];
    for (broker, flags, variable, shown) in cases {
        let mut args = vec![
            "--broker-url",
            broker,
            "--result-backend",
            "memory://",
            "--queues",
            &queue,
        ];
        args.extend_from_slice(flags);
        let mut worker = WorkerProcess::start_with(&args, |command| {
            match variable {
                Some(value) => command.env("CELERITY_BROKER_VISIBILITY_TIMEOUT", value),
                None => command.env_remove("CELERITY_BROKER_VISIBILITY_TIMEOUT"),
            };
        });
        let line = worker.stdout_line_containing(".> visibility:");
        assert_eq!(
            line,
            format!(".> visibility:  unacked tasks return after {shown}"),
            "{broker} {flags:?} {variable:?}"
        );
    }
}

#[test]
fn help_shows_the_url_variables_without_their_passwords() {
    let output = Command::new(worker_binary())
        .arg("--help")
        .env("CELERITY_BROKER_URL", "redis://:hunter2@cache:6379/0")
        .env(
            "CELERITY_RESULT_BACKEND",
            "redis://worker:hunter3@cache:6379/1?password=hunter4",
        )
        .output()
        .expect("the worker example runs");
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("[env: CELERITY_BROKER_URL]"), "{help}");
    assert!(help.contains("[env: CELERITY_RESULT_BACKEND]"), "{help}");
    for password in ["hunter2", "hunter3", "hunter4"] {
        assert!(!help.contains(password), "{password} in:\n{help}");
    }
}

#[test]
fn a_broker_url_it_cannot_use_stops_the_worker_with_status_1() {
    let output = Command::new(worker_binary())
        .args(["--broker-url", "carrier-pigeon://loft"])
        .env_remove("CELERITY_RESULT_BACKEND")
        .output()
        .expect("the worker example runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ERROR] unsupported broker scheme `carrier-pigeon`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_worker_example_runs_tasks_reports_health_and_drains_on_sigterm() {
    let Some(url) = redis_url() else { return };
    let queue = format!("celerity-test-{}", uuid::Uuid::new_v4());
    let ready_file = std::env::temp_dir().join(format!("{queue}.ready"));
    let mut worker = WorkerProcess::start(&[
        "--broker-url",
        &url,
        "--result-backend",
        &url,
        "--queues",
        &queue,
        "--hostname",
        "cli-test@%h",
        "--ready-file",
        ready_file.to_str().expect("a UTF-8 path"),
        "--health-addr",
        "127.0.0.1:0",
    ]);

    // The banner names the health endpoint, with the port the system chose.
    let health = worker.stdout_line_containing(".> health:");
    let health = health.split_whitespace().last().unwrap().to_owned();
    let addr = health
        .trim_start_matches("http://")
        .trim_end_matches("/healthz")
        .to_owned();
    wait_until(|| ready_file.exists(), "the ready file appears");
    let (status, body) = http_get(&addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"consuming""#), "{body}");
    assert!(body.contains(r#""hostname":"cli-test@"#), "{body}");
    assert_eq!(http_get(&addr, "/elsewhere").0, 404);

    let app = App::from_urls(&url, &url).await.unwrap();
    let tasks = TasksRegistry::new(app.client());
    let ping = tasks.ping().queue(&queue).await.unwrap();
    assert_eq!(ping.get(Duration::from_secs(20)).await.unwrap(), "pong");
    let id = ping.id().to_owned();
    // A batch in flight as the signal arrives: whatever the worker took, it finishes.
    let batch = app
        .client()
        .send_batch((0..200).map(|_| tasks.ping().queue(&queue)))
        .await
        .unwrap();

    signal(worker.child.id(), "TERM");
    let status = worker.wait(Duration::from_secs(30));
    assert_eq!(status, Some(0), "a graceful shutdown exits with 0");
    assert!(
        !ready_file.exists(),
        "the ready file is removed at shutdown"
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the health endpoint is gone"
    );

    let stdout = worker.stdout();
    assert!(stdout.starts_with("cli-test@"), "{stdout}");
    assert!(stdout.contains(&format!(".> {queue}\n")), "{stdout}");
    assert!(
        stdout.contains("  . tasks.ping              shop  (queue not consumed)"),
        "{stdout}"
    );
    let stderr = worker.stderr();
    for expected in [
        format!("INFO] Task tasks.ping[{id}] received"),
        format!("INFO] Task tasks.ping[{id}] succeeded in "),
        "WARN] shutdown requested: finishing running tasks".to_owned(),
        "INFO] all tasks finished".to_owned(),
        "INFO] worker stopped".to_owned(),
    ] {
        assert!(stderr.contains(&expected), "no `{expected}` in:\n{stderr}");
    }
    for sent in &batch {
        let id = sent.id();
        if stderr.contains(&format!("Task tasks.ping[{id}] received")) {
            assert!(
                stderr.contains(&format!("Task tasks.ping[{id}] succeeded in ")),
                "task {id} was received but not finished before the worker stopped"
            );
            assert_eq!(sent.state().await.unwrap(), TaskState::Success);
        }
    }
}

/// The `worker` example, built if needed (a plain `cargo test` builds examples; a test
/// run on its own does not).
fn worker_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    // The workspace's features, as `cargo test --workspace` built them:
                    // `-p` alone would build every dependency again with other features.
                    "--workspace",
                    "--example",
                    "worker",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "the worker example builds");
            // target/<profile>/deps/cli-<hash> → target/<profile>/examples/worker
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().and_then(Path::parent).unwrap();
            profile_dir.join("examples").join("worker")
        })
        .clone()
}

/// A running worker example whose output is collected as it comes.
struct WorkerProcess {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stdout_seen: String,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl WorkerProcess {
    fn start(args: &[&str]) -> Self {
        Self::start_with(args, |_| {})
    }

    /// Starts it with `args` and whatever else `configure` sets (the environment).
    fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
        let mut command = Command::new(worker_binary());
        configure(&mut command);
        let mut child = command
            .args(args)
            .env("CELERITY_LOG_LEVEL", "info")
            .env("CELERITY_LOG_FORMAT", "human")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the worker example starts");
        let (lines, stdout) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        WorkerProcess {
            child,
            stdout,
            stdout_seen: String::new(),
            stderr: Some(stderr),
        }
    }

    fn stdout_line_containing(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push_str(&line);
                    self.stdout_seen.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no `{needle}` in the worker's output:\n{}",
            self.stdout_seen
        );
    }

    fn stdout(&mut self) -> String {
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(1)) {
            self.stdout_seen.push_str(&line);
            self.stdout_seen.push('\n');
        }
        self.stdout_seen.clone()
    }

    fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap())
            .unwrap_or_default()
    }

    /// The exit code, or `None` if it did not exit in time (it is then killed).
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // A failed assertion must not leave a worker consuming the test queue.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 GET, as a probe sends it: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("the health endpoint accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.30\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}
