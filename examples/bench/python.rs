//! Python Celery's side: `bench/celery_bench.py` run by a Python that has Celery.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::report::Figures;

/// The script, beside this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/celery_bench.py")
}

/// Runs the Python side on one broker; its progress goes to stderr.
pub fn run(
    python: &Path,
    broker_url: &str,
    backend_url: &str,
    tasks: usize,
    publish_tasks: usize,
    latency_samples: usize,
) -> Result<Figures, String> {
    let counts = [
        ("--tasks", tasks),
        ("--publish-tasks", publish_tasks),
        ("--latency-samples", latency_samples),
    ];
    figures(python, broker_url, backend_url, &counts)
}

/// The Python side of the held-task row: a prefork worker holding `tasks` sent with a
/// one-hour countdown (`celery_bench.py --held-tasks`).
pub fn run_held(
    python: &Path,
    broker_url: &str,
    backend_url: &str,
    tasks: usize,
) -> Result<Figures, String> {
    figures(python, broker_url, backend_url, &[("--held-tasks", tasks)])
}

/// The Python side of the chord row: a prefork worker of `concurrency` processes running
/// a chord of `tasks` `add.s(i, i)` and a `tsum.s()` body (`celery_bench.py --chord-tasks`).
pub fn run_chord(
    python: &Path,
    url: &str,
    tasks: usize,
    concurrency: usize,
) -> Result<Figures, String> {
    let counts = [("--chord-tasks", tasks), ("--concurrency", concurrency)];
    figures(python, url, url, &counts)
}

/// Runs the script with `counts` (flag and value) and reads the JSON line it prints last.
fn figures(
    python: &Path,
    broker_url: &str,
    backend_url: &str,
    counts: &[(&str, usize)],
) -> Result<Figures, String> {
    let mut command = Command::new(python);
    command
        .arg(script())
        .args(["--broker", broker_url, "--backend", backend_url]);
    for (flag, n) in counts {
        command.args([flag.to_string(), n.to_string()]);
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!("the Python benchmark failed ({})", output.status));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("the Python benchmark printed no figures")?;
    serde_json::from_str(line).map_err(|e| format!("unreadable Python figures: {e}"))
}
