//! The worker program: its banner, and the `worker` example run as a real process against
//! Redis: it becomes ready (ready file, health endpoint), runs a task sent to it, and on
//! SIGTERM stops consuming, drains and exits with status 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use celerity::cli::Banner;
use celerity::{App, TaskState};
use celerity_shop::tasks::TasksRegistry;

mod support;
use support::redis_url;
use support::worker::{WorkerProcess, signal, wait_until, worker_binary};

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
.> task events: OFF (enable -E to monitor tasks in this worker)
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

/// The node name in a scrape's `celery_worker_up` line.
fn scraped_hostname(metrics: &str) -> String {
    let line = metrics
        .lines()
        .find(|line| line.starts_with("celery_worker_up{"))
        .unwrap_or_else(|| panic!("no celery_worker_up in:\n{metrics}"));
    line.split('"').nth(1).unwrap().to_owned()
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
        "--metrics",
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
    assert!(
        worker
            .stdout_line_containing(".> metrics:")
            .ends_with(&format!("http://{addr}/metrics")),
        "the banner names the metrics endpoint"
    );
    let (status, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let hostname = scraped_hostname(&metrics);
    for expected in [
        format!(
            r#"celery_task_succeeded_total{{name="tasks.ping",hostname="{hostname}",queue_name="{queue}"}} 1"#
        ),
        format!(r#"celery_worker_up{{hostname="{hostname}"}} 1"#),
    ] {
        assert!(
            metrics.lines().any(|line| line == expected),
            "no `{expected}` in:\n{metrics}"
        );
    }
    // A batch in flight as the signal arrives: whatever the worker took, it finishes.
    let batch = app
        .client()
        .send_batch((0..200).map(|_| tasks.ping().queue(&queue)))
        .await
        .unwrap();

    signal(worker.id(), "TERM");
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
