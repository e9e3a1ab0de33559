//! Celerity beside Python Celery 5 on Redis, as broker and result backend: Celerity's
//! generated client driving a Python worker, Python's client driving a Celerity worker,
//! both workers sharing one queue, and workflows (chains, groups, chords) built on one
//! side and run on the other.
//!
//! Needs Redis (`CELERITY_TEST_REDIS_URL`, default `redis://127.0.0.1:6379/15`) and a
//! Python with Celery (`CELERITY_PYTHON`, default `.venv/bin/python`); skips without
//! them unless `CELERITY_REQUIRE_BROKERS=1`.

mod interop;
mod support;

use interop::cases;
use interop::python::Python;
use interop::transport::Transport;

fn redis_and_python() -> Option<(Transport, Python)> {
    Some((Transport::redis()?, Python::find()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celerity_client_drives_a_python_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::rust_client_python_worker(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_drives_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::python_client_rust_worker(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_a_celerity_workers_extended_results_and_tracebacks() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::python_reads_celerity_results(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_chain_runs_on_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::python_canvas_rust_worker(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chain_runs_across_python_and_celerity_workers() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::chain_across_python_and_celerity(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_groups_and_chords_run_on_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::python_builds_canvas_over_celerity_tasks(&transport, &python).await;
}

/// A Python chain that continues into a chord: Celery freezes the chord with its header
/// as a `celery.group` signature (`_chord.freeze`), which the Celerity worker reads as
/// its tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_chain_continuing_into_a_chord_runs_on_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::python_chain_continuing_into_a_chord(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celerity_chains_groups_and_chords_run_on_a_python_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::rust_builds_canvas_over_python_tasks(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_split_across_python_and_celerity_runs_its_body_once() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::chord_split_across_python_and_celerity(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_restores_a_group_celerity_saved() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::python_restores_a_celerity_group(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_celerity_workers_share_a_queue() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::mixed_fleet(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_remote_control_reaches_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::celery_control_reaches_celerity(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_inspects_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::celery_inspects_celerity(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_controls_a_celerity_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::celery_controls_celerity(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_terminates_a_running_celerity_task() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::celery_terminates_a_celerity_task(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celerity_revoke_reaches_a_python_worker() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::celerity_revoke_reaches_python(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_sees_a_celerity_workers_events() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    interop::events::celery_sees_celerity_events(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_sees_both_workers_of_a_mixed_fleet() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    interop::events::celery_sees_both_workers_of_a_mixed_fleet(&transport, &python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_celerity_schedulers_runs_run_on_python_and_celerity_workers() {
    let Some((transport, python)) = redis_and_python() else {
        return;
    };
    cases::scheduled_runs_on_python_and_celerity(&transport, &python).await;
}
