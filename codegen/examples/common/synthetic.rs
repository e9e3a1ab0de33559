//! The synthetic schema the generator is timed on, shared by the codegen timing example
//! and the benchmark program (`examples/bench`).

/// A schema of `tasks` tasks over `types` record types, spread over ten components.
pub fn synthetic(tasks: usize, types: usize) -> String {
    let mut text = String::from(
        "version: 1\ndefaults:\n  queue: bulk\n  retry: { max_retries: 3, backoff: exponential, delay: 1s }\ntypes:\n",
    );
    for t in 0..types {
        // Each record may point to the next one; the last points nowhere (no cycle).
        let parent = if t + 1 < types {
            format!("Record{}?", t + 1)
        } else {
            "string?".to_owned()
        };
        text.push_str(&format!(
            "  Record{t}:\n    fields:\n      id: uuid\n      name: string\n      tags: list<string>\n      score: {{ type: f64, default: 0.5 }}\n      parent: {parent}\n      kind: {{ type: Kind, default: a }}\n"
        ));
    }
    text.push_str("  Kind:\n    enum: [a, b, c]\ntasks:\n");
    for n in 0..tasks {
        let (component, record, result) = (n % 10, n % types, (n + 1) % types);
        text.push_str(&format!(
            "  tasks.task_{n}:\n    description: Task number {n}.\n    component: Component{component}\n    args:\n      record: Record{record}\n      count: {{ type: u32, default: 1 }}\n      note: string?\n    result: map<string, Record{result}>\n    options:\n      time_limit: 30s\n"
        ));
    }
    text
}
