//! Times the generator: the reference schema, and a synthetic schema of 1,000 tasks over
//! 100 types. Run with `cargo run --release -p celerity-codegen --example timing`.

use std::time::{Duration, Instant};

#[path = "common/synthetic.rs"]
mod synthetic;
use synthetic::synthetic;

fn time(label: &str, source: &str) {
    let runs = 5;
    let mut best = Duration::MAX;
    let mut lines = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let code =
            celerity_codegen::generate_str(source, "schema.yaml").unwrap_or_else(|e| panic!("{e}"));
        best = best.min(start.elapsed());
        lines = code.lines().count();
    }
    println!(
        "{label:<32} {:>9.1} ms  ({lines} lines generated, best of {runs})",
        best.as_secs_f64() * 1000.0
    );
}

fn main() {
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/tasks.yaml"
    ))
    .expect("the reference schema");
    time("reference schema (6 tasks)", &reference);
    time("synthetic schema (1,000 tasks)", &synthetic(1000, 100));
}
