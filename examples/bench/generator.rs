//! The generator's time for a 1,000-task schema: the synthetic schema the codegen timing
//! example uses (1,000 tasks over 100 record types), generated in process.

use std::time::{Duration, Instant};

#[path = "../../codegen/examples/common/synthetic.rs"]
mod synthetic;
use synthetic::synthetic;

/// The best of `runs` generations of the 1,000-task schema, and the lines generated.
pub fn time_generator(runs: usize) -> Result<(Duration, usize), String> {
    let schema = synthetic(1000, 100);
    let mut best = Duration::MAX;
    let mut lines = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let code =
            celerity_codegen::generate_str(&schema, "schema.yaml").map_err(|e| e.to_string())?;
        best = best.min(started.elapsed());
        lines = code.lines().count();
    }
    Ok((best, lines))
}
