//! What the Celery interop suites share: the interop tasks generated from
//! `interop.yaml`, Celerity's implementation of them, the Python interpreter, worker and
//! client driver, the transports, and the cases every transport runs. The servers and
//! the interpreter are found, or the test skipped, through `tests/support` (`mod support`
//! beside `mod interop` in each suite).

#![allow(dead_code)] // each test binary uses part of this

pub mod cases;
pub mod events;
pub mod python;
pub mod rust_worker;
pub mod transport;

/// Code generated from `tests/interop/interop.yaml` by the package's build script.
pub mod tasks {
    celerity::include_tasks!("interop");
}

/// A queue name no other test uses, so suites can run side by side on one broker.
pub fn unique_queue(what: &str) -> String {
    format!(
        "interop-{what}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
