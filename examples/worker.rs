//! The shop's worker as a program: the whole `main` is one call.
//!
//! ```sh
//! CELERITY_BROKER_URL=redis://127.0.0.1:6379/0 CELERITY_RESULT_BACKEND=redis://127.0.0.1:6379/0 \
//!   cargo run --example worker
//! cargo run --example worker -- --help     # every flag and its CELERITY_* variable
//! ```
//!
//! It prints a banner, logs each task it runs, and stops gracefully on Ctrl-C or SIGTERM.

use std::process::ExitCode;

fn main() -> ExitCode {
    celerity::cli::run_worker(celerity_shop::register)
}
