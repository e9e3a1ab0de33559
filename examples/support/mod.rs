//! What the measuring examples (bench, held_eta, soak, hostile) share: reading a process's
//! memory, finding a Python that has Celery, and running the shop's worker command line
//! in a child process that can be killed, restarted and measured.
//!
//! Each example includes this file with `#[path]` and uses the part it needs.

use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "../../runtime/tests/support/skip.rs"]
mod skip;

/// A `kB` field of `/proc/<pid>/status`: `VmRSS` (resident now) or `VmHWM` (peak).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `CELERITY_PYTHON`, else the repository's `.venv/bin/python`, if it can import Celery
/// and redis-py (found as the tests find it).
pub fn python_with_celery() -> Option<PathBuf> {
    skip::find_celery_python().ok()
}

/// The `worker` subcommand of an example: the worker command line
/// (`celerity::cli::WorkerArgs`, every flag of `cargo run --example worker -- --help`)
/// with the tasks `register` adds.
pub fn run_cli_worker(
    args: &[String],
    register: impl FnOnce(&mut celerity::WorkerBuilder),
) -> ExitCode {
    let words = std::iter::once("worker".to_owned()).chain(args.iter().cloned());
    celerity::cli::WorkerArgs::parse_from(words).run_to_exit(register)
}

/// This program's `worker` subcommand in a child process, consuming once it wrote its
/// ready file (`--ready-file`).
pub struct CliWorker {
    child: Child,
    ready_file: PathBuf,
}

impl CliWorker {
    /// Starts `<this program> worker <args> --ready-file …` with `env` added and waits up
    /// to a minute until it consumes. Its banner (stdout) is dropped; its logs go to
    /// `stderr`.
    pub fn spawn(
        args: &[String],
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Result<CliWorker, String> {
        let ready_file =
            std::env::temp_dir().join(format!("celerity-{}.ready", uuid::Uuid::new_v4().simple()));
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .arg("worker")
            .args(args)
            .arg("--ready-file")
            .arg(&ready_file)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("could not start the worker: {e}"))?;
        let mut worker = CliWorker { child, ready_file };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !worker.ready_file.exists() {
            if let Ok(Some(status)) = worker.child.try_wait() {
                return Err(format!("the worker exited at start ({status})"));
            }
            if Instant::now() > deadline {
                worker.kill();
                return Err("the worker was not consuming after a minute".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(worker)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its standard error, when spawned with `Stdio::piped()`.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `VmRSS`, `VmHWM`, … of the worker, in kB.
    pub fn memory_kb(&self, field: &str) -> Option<u64> {
        proc_status_kb(self.pid(), field)
    }

    /// SIGKILL: no shutdown, no acknowledgement, the ready file left behind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ready_file);
    }

    /// SIGTERM, then waits for the graceful shutdown (SIGKILL after `timeout`).
    pub fn stop(mut self, timeout: Duration) -> Result<(), String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the worker stopped with {status}")),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        self.kill();
        Err(format!("the worker did not stop within {timeout:?}"))
    }
}

impl Drop for CliWorker {
    fn drop(&mut self) {
        if self.is_alive() {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.ready_file);
    }
}
