//! The shop's worker program (the `worker` example) run as a real process: its output
//! collected as it comes, signals sent to it, and killed if a test fails first.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `worker` example, built if needed (a plain `cargo test` builds examples; a test
/// run on its own does not).
pub fn worker_binary() -> PathBuf {
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
pub struct WorkerProcess {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stdout_seen: String,
    /// Every stderr line so far, each with when it was read.
    stderr_lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr: Option<std::thread::JoinHandle<()>>,
}

impl WorkerProcess {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, |_| {})
    }

    /// Starts it with `args` and whatever else `configure` sets (the environment).
    pub fn start_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
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
        let err = child.stderr.take().unwrap();
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let collected = stderr_lines.clone();
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                collected.lock().unwrap().push((Instant::now(), line));
            }
        });
        WorkerProcess {
            child,
            stdout,
            stdout_seen: String::new(),
            stderr_lines,
            stderr: Some(stderr),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_line_containing(&mut self, needle: &str) -> String {
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

    pub fn stdout(&mut self) -> String {
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(1)) {
            self.stdout_seen.push_str(&line);
            self.stdout_seen.push('\n');
        }
        self.stdout_seen.clone()
    }

    /// The whole of stderr, once the process has closed it.
    pub fn stderr(&mut self) -> String {
        if let Some(reader) = self.stderr.take() {
            reader.join().unwrap();
        }
        self.stderr_so_far()
    }

    /// What stderr said so far.
    pub fn stderr_so_far(&self) -> String {
        let lines = self.stderr_lines.lock().unwrap();
        lines.iter().map(|(_, line)| format!("{line}\n")).collect()
    }

    /// When stderr first said something containing `needle`, if it has.
    pub fn stderr_seen(&self, needle: &str) -> Option<Instant> {
        let lines = self.stderr_lines.lock().unwrap();
        lines
            .iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(at, _)| *at)
    }

    /// The exit code, or `None` if it did not exit in time (it is then killed).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
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

/// Sends signal `name` (`TERM`, `KILL`, `STOP`, `CONT`) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

pub fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
