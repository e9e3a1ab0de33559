//! Python Celery's side: `bench/celery_bench.py` run by a Python that has Celery.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::report::Figures;

/// The script, beside this crate's manifest.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/celery_bench.py")
}

/// `CELERITY_PYTHON`, else the repository's `.venv`, if it can import Celery.
pub fn find() -> Option<PathBuf> {
    let python = std::env::var_os("CELERITY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let imports = Command::new(&python)
        .args(["-c", "import celery, redis"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    imports.then_some(python)
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
    let output = Command::new(python)
        .arg(script())
        .args(["--broker", broker_url, "--backend", backend_url])
        .args(["--tasks", &tasks.to_string()])
        .args(["--publish-tasks", &publish_tasks.to_string()])
        .args(["--latency-samples", &latency_samples.to_string()])
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
