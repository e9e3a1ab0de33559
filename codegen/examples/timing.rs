//! Times the generator: the reference schema, and a synthetic schema of 1,000 tasks over
//! 100 types. Run with `cargo run --release -p celerity-codegen --example timing`.

use std::time::{Duration, Instant};

fn synthetic(tasks: usize, types: usize) -> String {
    let mut text = String::from(
        "version: 1\ndefaults:\n  queue: bulk\n  retry: { max_retries: 3, backoff: exponential, delay: 1s }\ntypes:\n",
    );
    for t in 0..types {
        text.push_str(&format!(
            "  Record{t}:\n    fields:\n      id: uuid\n      name: string\n      tags: list<string>\n      score: {{ type: f64, default: 0.5 }}\n      parent: {}\n      kind: {{ type: Kind, default: a }}\n",
            // Each record may point to the next one; the last points nowhere (no cycle).
            if t + 1 < types { format!("Record{}?", t + 1) } else { "string?".to_owned() }
        ));
    }
    text.push_str("  Kind:\n    enum: [a, b, c]\n");
    text.push_str("tasks:\n");
    for n in 0..tasks {
        text.push_str(&format!(
            "  tasks.task_{n}:\n    description: Task number {n}.\n    component: Component{}\n    args:\n      record: Record{}\n      count: {{ type: u32, default: 1 }}\n      note: string?\n    result: map<string, Record{}>\n    options:\n      time_limit: 30s\n",
            n % 10,
            n % types,
            (n + 1) % types
        ));
    }
    text
}

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
