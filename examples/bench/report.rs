//! The figures of one side on one broker, and the table that sets both sides together.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Deserialize;

/// What one side measured on one broker; the Python script prints the same fields as
/// JSON. Absent figures were not measured.
#[derive(Debug, Default, Deserialize)]
pub struct Figures {
    pub publish_n: Option<u64>,
    pub publish_one: Option<f64>,
    pub publish_batched: Option<f64>,
    pub publish_batched_n: Option<u64>,
    pub e2e_n: Option<u64>,
    pub e2e_rate: Option<f64>,
    pub e2e_failures: Option<u64>,
    pub latency_n: Option<u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub idle_rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    pub worker_cpu_us: Option<f64>,
    pub redis_cpu_us: Option<f64>,
    pub rabbitmq_cpu_us: Option<f64>,
    pub redis_commands_per_task: Option<f64>,
    /// Calls and Redis microseconds per task, by command.
    pub redis_commands: Option<BTreeMap<String, [f64; 2]>>,
    pub python: Option<String>,
    pub celery: Option<String>,
    /// The Python worker's process count, as the script started it.
    pub worker_concurrency: Option<u64>,
    /// Tasks the worker held for their countdown in the held-ETA run.
    pub held_n: Option<u64>,
    /// Resident bytes the worker grew by per held task.
    pub held_bytes_per_task: Option<f64>,
    /// `VmRSS` of the worker holding them, in kB.
    pub held_rss_kb: Option<u64>,
    /// Header tasks of the chord run.
    pub chord_n: Option<u64>,
    /// Seconds from building and sending the chord to its body's stored result.
    pub chord_seconds: Option<f64>,
    /// Header tasks per second over that time.
    pub chord_rate: Option<f64>,
    /// The chord's `celery-taskset-meta-<gid>*` keys left besides its `.c` done marker.
    pub chord_keys_left: Option<u64>,
    /// `.c` done markers left.
    pub chord_done_markers: Option<u64>,
    /// The worker's concurrency in the chord run.
    pub chord_concurrency: Option<u64>,
}

impl Figures {
    /// Takes the chord run's figures from `run`.
    pub fn take_chord(&mut self, run: Figures) {
        self.chord_n = run.chord_n;
        self.chord_seconds = run.chord_seconds;
        self.chord_rate = run.chord_rate;
        self.chord_keys_left = run.chord_keys_left;
        self.chord_done_markers = run.chord_done_markers;
        self.chord_concurrency = run.chord_concurrency;
    }
}

/// Which way a metric is better; `Neither` for a count that both sides should show alike
/// (no ratio is shown).
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
    Neither,
}

/// A target from issue 7.
struct Target {
    text: &'static str,
    met: fn(f64) -> bool,
}

struct Row {
    metric: String,
    ours: Option<(f64, Option<u64>)>,
    theirs: Option<(f64, Option<u64>)>,
    better: Better,
    decimals: usize,
    target: Option<Target>,
}

/// The table of one broker's rows.
pub fn broker_rows(broker: &str, ours: &Figures, theirs: Option<&Figures>, out: &mut String) {
    let theirs_or_default = Figures::default();
    let theirs = theirs.unwrap_or(&theirs_or_default);
    let mb = |kb: Option<u64>| kb.map(|kb| (kb as f64 / 1024.0, None));
    let with_n = |value: Option<f64>, n: Option<u64>| value.map(|v| (v, n));
    let count = |value: Option<u64>| value.map(|v| (v as f64, None));
    let (publish_target, e2e_target) = match broker {
        "redis" => (
            Some(Target {
                text: "≥ 150,000",
                met: |v| v >= 150_000.0,
            }),
            Some(Target {
                text: "≥ 50,000",
                met: |v| v >= 50_000.0,
            }),
        ),
        "amqp" => (
            None,
            Some(Target {
                text: "≥ 25,000",
                met: |v| v >= 25_000.0,
            }),
        ),
        _ => (
            None,
            Some(Target {
                text: "≥ 500,000",
                met: |v| v >= 500_000.0,
            }),
        ),
    };
    let (p50_target, p99_target) = if broker == "redis" {
        (
            Some(Target {
                text: "< 1 ms",
                met: |v| v < 1.0,
            }),
            Some(Target {
                text: "< 5 ms",
                met: |v| v < 5.0,
            }),
        )
    } else {
        (None, None)
    };
    let rows = [
        Row {
            metric: format!("{broker}: publish, one at a time (tasks/s)"),
            ours: with_n(ours.publish_one, ours.publish_n),
            theirs: with_n(theirs.publish_one, theirs.publish_n),
            better: Better::Higher,
            decimals: 0,
            target: None,
        },
        Row {
            metric: format!("{broker}: publish, batches of 1,000 (tasks/s)¹"),
            ours: with_n(ours.publish_batched, ours.publish_batched_n),
            theirs: with_n(theirs.publish_batched, theirs.publish_batched_n),
            better: Better::Higher,
            decimals: 0,
            target: publish_target,
        },
        Row {
            metric: format!("{broker}: end to end, results stored (tasks/s)"),
            ours: with_n(ours.e2e_rate, ours.e2e_n),
            theirs: with_n(theirs.e2e_rate, theirs.e2e_n),
            better: Better::Higher,
            decimals: 0,
            target: e2e_target,
        },
        Row {
            metric: format!("{broker}: round trip p50 (ms)"),
            ours: with_n(ours.p50_ms, ours.latency_n),
            theirs: with_n(theirs.p50_ms, theirs.latency_n),
            better: Better::Lower,
            decimals: 2,
            target: p50_target,
        },
        Row {
            metric: format!("{broker}: round trip p99 (ms)"),
            ours: with_n(ours.p99_ms, ours.latency_n),
            theirs: with_n(theirs.p99_ms, theirs.latency_n),
            better: Better::Lower,
            decimals: 2,
            target: p99_target,
        },
        Row {
            metric: format!("{broker}: round trip max (ms)"),
            ours: with_n(ours.max_ms, ours.latency_n),
            theirs: with_n(theirs.max_ms, theirs.latency_n),
            better: Better::Lower,
            decimals: 2,
            target: None,
        },
        Row {
            metric: format!("{broker}: worker RSS, idle (MB)²"),
            ours: mb(ours.idle_rss_kb),
            theirs: mb(theirs.idle_rss_kb),
            better: Better::Lower,
            decimals: 1,
            target: (broker != "memory").then_some(Target {
                text: "< 20 MB",
                met: |v| v < 20.0,
            }),
        },
        Row {
            metric: format!("{broker}: worker peak RSS, end to end (MB)²"),
            ours: mb(ours.peak_rss_kb),
            theirs: mb(theirs.peak_rss_kb),
            better: Better::Lower,
            decimals: 1,
            target: None,
        },
        Row {
            metric: format!("{broker}: worker memory per task held for its countdown (bytes)⁵"),
            ours: with_n(ours.held_bytes_per_task, ours.held_n),
            theirs: with_n(theirs.held_bytes_per_task, theirs.held_n),
            better: Better::Lower,
            decimals: 0,
            target: None,
        },
        Row {
            // Celerity's alone: the two sides hold different numbers of tasks.
            metric: format!("{broker}: worker RSS holding them (MB)⁵"),
            ours: with_n(mb(ours.held_rss_kb).map(|(v, _)| v), ours.held_n),
            theirs: None,
            better: Better::Lower,
            decimals: 1,
            target: Some(Target {
                text: "< 200 MB at 100,000",
                met: |v| v < 200.0,
            }),
        },
        Row {
            metric: format!("{broker}: chord, sent to the body's result (s)⁶"),
            ours: with_n(ours.chord_seconds, ours.chord_n),
            theirs: with_n(theirs.chord_seconds, theirs.chord_n),
            better: Better::Lower,
            decimals: 2,
            target: None,
        },
        Row {
            metric: format!("{broker}: chord header tasks per second⁶"),
            ours: with_n(ours.chord_rate, ours.chord_n),
            theirs: with_n(theirs.chord_rate, theirs.chord_n),
            better: Better::Higher,
            decimals: 0,
            target: None,
        },
        Row {
            metric: format!("{broker}: chord keys left besides the done marker⁶"),
            ours: count(ours.chord_keys_left),
            theirs: count(theirs.chord_keys_left),
            better: Better::Lower,
            decimals: 0,
            target: None,
        },
        Row {
            metric: format!("{broker}: chord `.c` done markers left (expire in 300 s)⁶"),
            ours: count(ours.chord_done_markers),
            theirs: count(theirs.chord_done_markers),
            better: Better::Neither,
            decimals: 0,
            target: None,
        },
        Row {
            metric: if broker == "memory" {
                format!("{broker}: CPU per task, whole process (µs)⁴")
            } else {
                format!("{broker}: worker CPU per task (µs)⁴")
            },
            ours: ours.worker_cpu_us.map(|v| (v, None)),
            theirs: theirs.worker_cpu_us.map(|v| (v, None)),
            better: Better::Lower,
            decimals: 1,
            target: None,
        },
        Row {
            metric: format!("{broker}: Redis CPU per task (µs)⁴"),
            ours: ours.redis_cpu_us.map(|v| (v, None)),
            theirs: theirs.redis_cpu_us.map(|v| (v, None)),
            better: Better::Lower,
            decimals: 1,
            target: None,
        },
        Row {
            metric: format!("{broker}: RabbitMQ CPU per task (µs)⁴"),
            ours: ours.rabbitmq_cpu_us.map(|v| (v, None)),
            theirs: theirs.rabbitmq_cpu_us.map(|v| (v, None)),
            better: Better::Lower,
            decimals: 1,
            target: None,
        },
        Row {
            metric: format!("{broker}: Redis commands per task, end to end³"),
            ours: ours.redis_commands_per_task.map(|v| (v, None)),
            theirs: theirs.redis_commands_per_task.map(|v| (v, None)),
            better: Better::Lower,
            decimals: 1,
            target: None,
        },
    ];
    for row in rows
        .iter()
        .filter(|r| r.ours.is_some() || r.theirs.is_some())
    {
        render(row, out);
    }
}

/// The generator's row.
pub fn generator_row(best_ms: f64, lines: usize, out: &mut String) {
    render(
        &Row {
            metric: format!("generator: 1,000-task schema, {lines} lines (ms)"),
            ours: Some((best_ms, None)),
            theirs: None,
            better: Better::Lower,
            decimals: 0,
            target: Some(Target {
                text: "< 200 ms",
                met: |v| v < 200.0,
            }),
        },
        out,
    );
}

/// The table's header.
pub fn header(out: &mut String) {
    out.push_str("| metric | Celerity | Python Celery | Celerity's advantage | target |\n");
    out.push_str("|---|---:|---:|---:|---|\n");
}

fn render(row: &Row, out: &mut String) {
    let cell = |value: Option<(f64, Option<u64>)>| match value {
        None => "n/a".to_owned(),
        Some((v, None)) => number(v, row.decimals),
        Some((v, Some(n))) => format!("{} (n={})", number(v, row.decimals), number(n as f64, 0)),
    };
    let advantage = match (row.ours, row.theirs) {
        (Some((ours, _)), Some((theirs, _))) if ours > 0.0 && theirs > 0.0 => match row.better {
            Better::Higher => format!("{:.1}×", ours / theirs),
            Better::Lower => format!("{:.1}×", theirs / ours),
            Better::Neither => String::new(),
        },
        _ => String::new(),
    };
    let target = match (&row.target, row.ours) {
        (Some(target), Some((v, _))) => {
            format!(
                "{} {}",
                target.text,
                if (target.met)(v) { "✓" } else { "✗" }
            )
        }
        (Some(target), None) => target.text.to_owned(),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "| {} | {} | {} | {advantage} | {target} |",
        row.metric,
        cell(row.ours),
        cell(row.theirs)
    );
}

/// `value` with thousands separators and `decimals` decimals.
pub fn number(value: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    if fraction.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{fraction}")
    }
}

/// The machine: CPU model, cores, kernel, and the load average now.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {cores} cores, {memory_gb:.0} GB, Linux {}",
        kernel.trim()
    )
}

/// The commit measured, marked when the work tree has changes; `None` outside git.
pub fn revision() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let changed =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if changed {
        format!("{commit} (with uncommitted changes)")
    } else {
        commit
    })
}

/// The 1, 5 and 15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}
