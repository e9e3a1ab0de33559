//! The worker's command line: defaults, `CELERITY_*` variables, flags over variables, and
//! what the parsed settings do to a worker. One test, because it changes the process's
//! environment, which every parse reads.

use std::time::Duration;

use celerity::App;
use celerity::cli::{Command, LogFormat, WorkerArgs};
use clap::Parser;

const VARIABLES: [&str; 21] = [
    "CELERITY_BROKER_URL",
    "CELERITY_RESULT_BACKEND",
    "CELERITY_QUEUES",
    "CELERITY_CONCURRENCY",
    "CELERITY_PREFETCH_MULTIPLIER",
    "CELERITY_HOSTNAME",
    "CELERITY_LOG_LEVEL",
    "CELERITY_LOG_FORMAT",
    "CELERITY_SHUTDOWN_TIMEOUT",
    "CELERITY_BROKER_VISIBILITY_TIMEOUT",
    "CELERITY_RESULT_BACKEND_RETRY_WINDOW",
    "CELERITY_HEALTH_ADDR",
    "CELERITY_READY_FILE",
    "CELERITY_WORKER_MAX_HELD_ETA",
    "CELERITY_RESULT_EXTENDED",
    "CELERITY_WORKER_METRICS",
    "CELERITY_WORKER_SEND_TASK_EVENTS",
    "CELERITY_BEAT",
    "CELERITY_BEAT_GROUP",
    "CELERITY_BEAT_LEASE",
    "CELERITY_BEAT_STATE_FILE",
];

fn parse(args: &[&str]) -> Result<WorkerArgs, clap::Error> {
    WorkerArgs::try_parse_from(std::iter::once("worker").chain(args.iter().copied()))
}

fn set(name: &str, value: &str) {
    // SAFETY: this test binary has a single test, so no other thread reads the
    // environment while it changes.
    unsafe { std::env::set_var(name, value) }
}

#[test]
fn flags_win_over_variables_which_win_over_defaults() {
    for name in VARIABLES {
        // SAFETY: as in `set`.
        unsafe { std::env::remove_var(name) }
    }

    let defaults = parse(&[]).unwrap();
    assert_eq!(defaults.broker_url, "memory://");
    assert_eq!(defaults.result_backend, "memory://");
    assert!(defaults.queues.is_empty());
    assert_eq!(defaults.concurrency, None);
    assert_eq!(defaults.prefetch_multiplier, 4);
    assert_eq!(defaults.hostname, "celery@%h");
    assert_eq!(defaults.log_level, "info");
    assert_eq!(defaults.log_format, LogFormat::Human);
    assert_eq!(defaults.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(defaults.visibility_timeout, None);
    assert_eq!(defaults.result_retry_window, None);
    assert_eq!(defaults.health_addr, None);
    assert_eq!(defaults.ready_file, None);
    assert_eq!(defaults.max_held_eta, celerity::DEFAULT_MAX_HELD_ETA);
    assert!(!defaults.result_extended, "off by default, as in Celery");
    assert!(!defaults.metrics);
    assert!(!defaults.task_events, "off by default, as in Celery");
    assert!(!defaults.beat, "no scheduler unless asked, as in Celery");
    assert_eq!(defaults.beat_group, "default");
    assert_eq!(defaults.beat_lease, Duration::from_secs(10));
    assert_eq!(
        defaults.beat_state_file,
        std::path::Path::new("celerity-beat.json")
    );
    assert_eq!(defaults.command, None);

    set("CELERITY_BROKER_URL", "redis://127.0.0.1:6379/0");
    set("CELERITY_RESULT_BACKEND", "redis://127.0.0.1:6379/1");
    set("CELERITY_QUEUES", "orders,email");
    set("CELERITY_CONCURRENCY", "3");
    set("CELERITY_PREFETCH_MULTIPLIER", "1");
    set("CELERITY_HOSTNAME", "billing@%h");
    set("CELERITY_LOG_LEVEL", "debug");
    set("CELERITY_LOG_FORMAT", "json");
    set("CELERITY_SHUTDOWN_TIMEOUT", "2m");
    set("CELERITY_BROKER_VISIBILITY_TIMEOUT", "600");
    set("CELERITY_RESULT_BACKEND_RETRY_WINDOW", "1h");
    set("CELERITY_HEALTH_ADDR", "127.0.0.1:9100");
    set("CELERITY_READY_FILE", "/tmp/celerity.ready");
    set("CELERITY_WORKER_MAX_HELD_ETA", "1000");
    set("CELERITY_RESULT_EXTENDED", "false");
    set("CELERITY_WORKER_METRICS", "yes");
    set("CELERITY_WORKER_SEND_TASK_EVENTS", "yes");
    set("CELERITY_BEAT", "yes");
    set("CELERITY_BEAT_GROUP", "billing");
    set("CELERITY_BEAT_LEASE", "30s");
    set("CELERITY_BEAT_STATE_FILE", "/var/lib/celerity/beat.json");
    let from_env = parse(&[]).unwrap();
    assert_eq!(from_env.broker_url, "redis://127.0.0.1:6379/0");
    assert_eq!(from_env.result_backend, "redis://127.0.0.1:6379/1");
    assert_eq!(from_env.queues, ["orders", "email"]);
    assert_eq!(from_env.concurrency, Some(3));
    assert_eq!(from_env.prefetch_multiplier, 1);
    assert_eq!(from_env.hostname, "billing@%h");
    assert_eq!(from_env.log_level, "debug");
    assert_eq!(from_env.log_format, LogFormat::Json);
    assert_eq!(from_env.shutdown_timeout, Duration::from_secs(120));
    assert_eq!(from_env.visibility_timeout, Some(Duration::from_secs(600)));
    assert_eq!(
        from_env.result_retry_window,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        from_env.health_addr,
        Some("127.0.0.1:9100".parse().unwrap())
    );
    assert_eq!(
        from_env.ready_file.as_deref(),
        Some(std::path::Path::new("/tmp/celerity.ready"))
    );
    assert_eq!(from_env.max_held_eta, 1000);
    assert!(!from_env.result_extended);
    assert!(from_env.metrics);
    assert!(from_env.task_events);
    assert!(from_env.beat);
    assert_eq!(from_env.beat_group, "billing");
    assert_eq!(from_env.beat_lease, Duration::from_secs(30));
    assert_eq!(
        from_env.beat_state_file,
        std::path::Path::new("/var/lib/celerity/beat.json")
    );

    let flags = parse(&[
        "-b",
        "amqp://guest:guest@127.0.0.1:5672//",
        "-Q",
        "reports",
        "-c",
        "16",
        "-n",
        "w2@example",
        "--log-format",
        "human",
        "--shutdown-timeout",
        "500ms",
        "--loglevel",
        "warn",
        "--visibility-timeout",
        "90s",
        "--result-retry-window",
        "2m",
        "--max-held-eta",
        "20",
        "--result-extended",
        "-E",
    ])
    .unwrap();
    assert_eq!(flags.broker_url, "amqp://guest:guest@127.0.0.1:5672//");
    assert_eq!(flags.queues, ["reports"]);
    assert_eq!(flags.concurrency, Some(16));
    assert_eq!(flags.hostname, "w2@example");
    assert_eq!(flags.log_format, LogFormat::Human);
    assert_eq!(flags.shutdown_timeout, Duration::from_millis(500));
    assert_eq!(flags.log_level, "warn");
    assert_eq!(flags.visibility_timeout, Some(Duration::from_secs(90)));
    assert_eq!(flags.result_retry_window, Some(Duration::from_secs(120)));
    assert_eq!(flags.max_held_eta, 20);
    assert!(flags.result_extended);
    assert!(flags.task_events);
    // Not given as flags: still from the environment.
    assert_eq!(flags.result_backend, "redis://127.0.0.1:6379/1");
    assert_eq!(flags.prefetch_multiplier, 1);

    // What the settings do to a worker.
    let app = App::memory();
    let mut builder = app.worker();
    celerity_shop::register(&mut builder);
    flags.configure(&mut builder);
    let settings = builder.settings();
    assert_eq!(settings.queues, ["reports"]);
    assert_eq!(settings.concurrency, 16);
    assert_eq!(settings.prefetch_multiplier, 1);
    assert_eq!(settings.hostname, "w2@example");
    assert_eq!(settings.shutdown_timeout, Duration::from_millis(500));
    assert_eq!(settings.max_held_eta, 20);
    assert!(settings.result_extended);
    assert!(settings.task_events);
    set("CELERITY_WORKER_SEND_TASK_EVENTS", "off");
    assert!(!parse(&[]).unwrap().task_events);
    assert!(parse(&["--task-events"]).unwrap().task_events);
    set("CELERITY_RESULT_EXTENDED", "1");
    assert!(parse(&[]).unwrap().result_extended);

    // The scheduler alone: its flags, and the connection flags, come after `beat` too.
    let beat = parse(&[
        "beat",
        "-b",
        "redis://cache:6379/2",
        "--beat-group",
        "nightly",
        "--beat-lease",
        "3s",
        "-l",
        "debug",
    ])
    .unwrap();
    assert_eq!(beat.command, Some(Command::Beat));
    assert_eq!(beat.broker_url, "redis://cache:6379/2");
    assert_eq!(beat.beat_group, "nightly");
    assert_eq!(beat.beat_lease, Duration::from_secs(3));
    assert_eq!(beat.log_level, "debug");
    let flag = parse(&["-B", "--beat-lease", "0"]).unwrap_err().to_string();
    assert!(
        flag.contains("--beat-lease") && flag.contains("must be longer than 0"),
        "{flag}"
    );
    assert!(parse(&["-B"]).unwrap().beat);

    // Mistakes are reported with the flag and a reason.
    let zero = parse(&["-c", "0"]).unwrap_err().to_string();
    assert!(
        zero.contains("--concurrency") && zero.contains("must be at least 1"),
        "{zero}"
    );
    let unit = parse(&["--shutdown-timeout", "5 days"])
        .unwrap_err()
        .to_string();
    assert!(unit.contains("unknown unit `days`"), "{unit}");
    let never = parse(&["--visibility-timeout", "0"])
        .unwrap_err()
        .to_string();
    assert!(
        never.contains("--visibility-timeout") && never.contains("must be longer than 0"),
        "{never}"
    );
    let format = parse(&["--log-format", "xml"]).unwrap_err().to_string();
    assert!(
        format.contains("[possible values: human, json]"),
        "{format}"
    );
    // Metrics are served on the health endpoint, so they need its address.
    // SAFETY: as in `set`.
    unsafe { std::env::remove_var("CELERITY_HEALTH_ADDR") }
    let no_address = parse(&["--metrics"]).unwrap_err().to_string();
    assert!(no_address.contains("--health-addr"), "{no_address}");
    set("CELERITY_CONCURRENCY", "many");
    let bad_env = parse(&[]).unwrap_err().to_string();
    assert!(bad_env.contains("--concurrency"), "{bad_env}");
}
