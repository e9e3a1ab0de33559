//! Skipping a test whose server or interpreter is missing, so that the run shows it: one
//! line on the terminal, or a failure when `CELERITY_REQUIRE_BROKERS=1` (CI sets it); and
//! where the tests look for Redis, RabbitMQ and Python Celery.
//!
//! The line is written to the process's stderr itself. libtest captures the output of
//! `print!`, `eprint!` and panics only (`std::io::set_output_capture`), and shows it for
//! failed tests alone, so a skip said with `eprintln!` passes as `ok` in 0.00 s.
//!
//! Every test that skips, in every package, goes through this file: `runtime/tests/support`
//! declares it, the reference application's `tests/support` includes it by path (its
//! interop suites reach it through `tests/support` too), the generator's Python tests
//! (`codegen/tests/python.rs`) find mypy and ruff with it, and the measuring examples
//! (`examples/support`) find Python Celery with it. It is included, not a crate of its
//! own, because a skip names the test binary it runs in (`CARGO_CRATE_NAME`, expanded in
//! the including crate). It uses `std` alone, so any test binary can include it whatever
//! features of the runtime are built. `runtime/tests/skipping.rs` checks what it prints.

#![allow(dead_code)] // each test binary uses part of this

use std::fmt::Display;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Whether a missing server or interpreter fails the test instead of skipping it.
pub fn required() -> bool {
    std::env::var("CELERITY_REQUIRE_BROKERS").is_ok_and(|v| v == "1")
}

/// Skips the running test because of `why` (`None`, for `let … else { return }`), after
/// printing `SKIPPED binary::test: why (…)` on stderr; panics instead when [`required`].
pub fn skip<T>(why: impl Display) -> Option<T> {
    if required() {
        panic!("{why}, and CELERITY_REQUIRE_BROKERS=1 makes that a failure");
    }
    let line = format!(
        "SKIPPED {}: {why} (set CELERITY_REQUIRE_BROKERS=1 to fail instead)\n",
        test_name()
    );
    // One write of the whole line (stderr is unbuffered), so that the lines of tests
    // running side by side do not mix.
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}

/// `binary::module::test`. libtest runs each test on a thread named after it (its path in
/// the binary), and `#[tokio::test]` runs the test's body on that thread too. Any other
/// thread (a name no Rust path has, such as `tokio-runtime-worker`) gives the binary alone.
fn test_name() -> String {
    let binary = env!("CARGO_CRATE_NAME");
    match std::thread::current().name() {
        Some(test)
            if test != "main"
                && test
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == ':') =>
        {
            format!("{binary}::{test}")
        }
        _ => binary.to_owned(),
    }
}

/// The Redis to test against (`CELERITY_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379/15`), or `None` after skipping when nothing listens there.
pub fn redis_url() -> Option<String> {
    listening(
        "Redis",
        "CELERITY_TEST_REDIS_URL",
        "redis://127.0.0.1:6379/15",
    )
}

/// The RabbitMQ to test against (`CELERITY_TEST_AMQP_URL`, default
/// `amqp://guest:guest@127.0.0.1:5672/%2f`), or `None` after skipping when nothing
/// listens there.
pub fn amqp_url() -> Option<String> {
    listening(
        "RabbitMQ",
        "CELERITY_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )
}

/// The URL of `variable` (else `default`) when something accepts connections at its host
/// and port. Only a missing server skips: one that listens but refuses the test (a wrong
/// password, say) fails it, which says more than a skip would.
fn listening(server: &str, variable: &str, default: &str) -> Option<String> {
    let url = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    if accepts_connections(&url) {
        Some(url)
    } else {
        skip(format_args!(
            "{server} is not reachable at {} ({variable})",
            redacted(&url)
        ))
    }
}

/// Whether something accepts TCP connections at the URL's host and port (the scheme's
/// default port when it has none).
fn accepts_connections(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    let address = if has_port {
        host_port.to_owned()
    } else {
        let port = if scheme.starts_with("amqp") {
            5672
        } else {
            6379
        };
        format!("{host_port}:{port}")
    };
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok())
}

/// The URL without its password, for messages CI logs keep.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://…@{rest}"),
        _ => url.to_owned(),
    }
}

/// A Python that imports Celery and its Redis client (`CELERITY_PYTHON`, else the
/// workspace's `.venv/bin/python`), or `None` after skipping.
pub fn python_with_celery() -> Option<PathBuf> {
    match find_celery_python() {
        Ok(interpreter) => Some(interpreter),
        Err(why) => skip(why),
    }
}

/// A Python that imports Celery and its Redis client (`CELERITY_PYTHON`, else the
/// workspace's `.venv/bin/python`), or why there is none and how to make one.
pub fn find_celery_python() -> Result<PathBuf, String> {
    find_python("celery, redis", "Python Celery", "'celery[redis]>=5.3,<6'")
}

/// A Python with Celery that also runs mypy and ruff, for the tests of the generated
/// Python module (`CELERITY_PYTHON`, else the workspace's `.venv/bin/python`), or `None`
/// after skipping.
pub fn python_with_type_checkers() -> Option<PathBuf> {
    match find_python(
        "celery, redis, mypy, ruff",
        "Python Celery with mypy and ruff",
        "'celery[redis]>=5.3,<6' mypy ruff",
    ) {
        Ok(interpreter) => Some(interpreter),
        Err(why) => skip(why),
    }
}

/// `CELERITY_PYTHON`, else the workspace's `.venv/bin/python`, when it imports `modules`;
/// else why not (`what` is not importable) and how to make one (`packages` to install).
fn find_python(modules: &str, what: &str, packages: &str) -> Result<PathBuf, String> {
    let chosen = std::env::var_os("CELERITY_PYTHON").map(PathBuf::from);
    let venv = chosen.is_none();
    let interpreter = chosen.unwrap_or_else(|| workspace().join(".venv/bin/python"));
    let imports = Command::new(&interpreter)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if imports {
        return Ok(interpreter);
    }
    let how = if venv {
        format!(
            "set CELERITY_PYTHON, or make the default with \
             `python3 -m venv .venv && .venv/bin/pip install {packages}`"
        )
    } else {
        "CELERITY_PYTHON".to_owned()
    };
    Err(format!(
        "{what} is not importable from {} ({how})",
        interpreter.display()
    ))
}

/// The workspace's root: the nearest directory holding `Cargo.lock`, from the package
/// whose tests run.
fn workspace() -> PathBuf {
    let package = Path::new(env!("CARGO_MANIFEST_DIR"));
    package
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(package)
        .to_owned()
}
