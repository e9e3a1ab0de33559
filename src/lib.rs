//! The Celerity reference application: a shop's background tasks.
//!
//! `schemas/tasks.yaml` declares the tasks; `build.rs` generates [`tasks`] from it; the
//! [`components`] module implements the generated worker traits; [`register`] wires them
//! into a worker; [`web`] is an HTTP service that enqueues them.

#![deny(missing_docs, unreachable_pub)]

pub mod components;
pub mod web;

/// Code generated from `schemas/tasks.yaml`.
pub mod tasks {
    celerity::include_tasks!("tasks");
}

pub use components::{Outbox, SessionStore, UserDirectory};

/// Registers every task of the shop on `worker`, with the singletons its components use,
/// and the shop's periodic tasks (sent when the worker program runs its scheduler).
pub fn register(worker: &mut celerity::WorkerBuilder) {
    worker
        .schedules(tasks::SCHEDULES)
        .singleton(SessionStore::default())
        .singleton(Outbox::default())
        .singleton(UserDirectory::default());
    tasks::register_maintenance::<components::MaintenanceTasks>(worker);
    tasks::register_mailer::<components::SmtpMailer>(worker);
    tasks::register_accounts::<components::AccountService>(worker);
    tasks::register_orders::<components::OrderDesk>(worker);
    tasks::register_reports::<components::ReportBuilder>(worker);
}
