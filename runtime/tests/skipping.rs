//! A test that skips for want of a server says so on the terminal, past libtest's output
//! capture, and fails instead when `CELERITY_REQUIRE_BROKERS=1`. Each case runs this
//! binary again on [`probe`], as a plain `cargo test` would (output captured), and reads
//! what it printed.

#[path = "support/skip.rs"]
mod skip;

use std::process::{Command, Output};

/// A URL nothing serves: port 1 (tcpmux) on the loopback.
const NOBODY: &str = "redis://127.0.0.1:1/0";

#[test]
#[ignore = "run by the other tests of this file, against a Redis URL nothing serves"]
fn probe() {
    let _ = skip::redis_url();
}

/// Runs [`probe`] in a process of its own, with `CELERITY_REQUIRE_BROKERS` set or not.
fn run_probe(require: bool) -> Output {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args(["--ignored", "--exact", "probe"])
        .env("CELERITY_TEST_REDIS_URL", NOBODY)
        // Capture on, whatever this run was given.
        .env_remove("RUST_TEST_NOCAPTURE")
        .env_remove("CELERITY_REQUIRE_BROKERS");
    if require {
        command.env("CELERITY_REQUIRE_BROKERS", "1");
    }
    command.output().expect("the test binary runs")
}

#[test]
fn a_skip_is_one_line_on_stderr_that_names_the_test_and_why() {
    let output = run_probe(false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        format!(
            "SKIPPED skipping::probe: Redis is not reachable at {NOBODY} \
             (CELERITY_TEST_REDIS_URL) (set CELERITY_REQUIRE_BROKERS=1 to fail instead)\n"
        )
    );
}

#[test]
fn a_skip_fails_the_test_when_brokers_are_required() {
    let output = run_probe(true);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("test probe ... FAILED"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "Redis is not reachable at {NOBODY} (CELERITY_TEST_REDIS_URL), \
             and CELERITY_REQUIRE_BROKERS=1 makes that a failure"
        )),
        "{stdout}"
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("SKIPPED"));
}
