//! Celerity beside Python Celery 5 on RabbitMQ: the interop cases of
//! `tests/interop_redis.rs`, with results over AMQP (`rpc://`) and in Redis.
//!
//! Needs RabbitMQ (`CELERITY_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), Redis for the Redis backend
//! (`CELERITY_TEST_REDIS_URL`) and a Python with Celery (`CELERITY_PYTHON`, default
//! `.venv/bin/python`); skips without them unless `CELERITY_REQUIRE_BROKERS=1`.

mod interop;
mod support;

use interop::cases;
use interop::python::Python;
use interop::transport::Transport;

fn amqp_rpc() -> Option<(Transport, Python)> {
    Some((Transport::amqp_rpc()?, Python::find()?))
}

fn amqp_redis() -> Option<(Transport, Python)> {
    Some((Transport::amqp_redis()?, Python::find()?))
}

/// One test per case of `cases` (or of the module named), on the transport
/// `$transport()` finds.
macro_rules! interop_tests {
    ($transport:ident: $($case:ident),+) => {
        interop_tests!($transport, cases: $($case),+);
    };
    ($transport:ident, $module:ident: $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((transport, python)) = super::$transport() else {
                    return;
                };
                $module::$case(&transport, &python).await;
            }
        )+
    };
}

/// Results over AMQP, as Celery's `rpc://` sends them.
mod rpc_backend {
    use super::cases;

    interop_tests!(
        amqp_rpc: rust_client_python_worker,
        python_client_rust_worker,
        mixed_fleet,
        celery_control_reaches_celerity,
        celery_inspects_celerity,
        celery_controls_celerity,
        celery_terminates_a_celerity_task,
        celerity_revoke_reaches_python,
        python_canvas_rust_worker,
        chain_across_python_and_celerity,
        python_reads_celerity_results
    );
}

/// Results in Redis, tasks over RabbitMQ: the backend chords need, so the chord cases
/// run here (on `rpc://` Celery refuses chords, and so does Celerity).
mod redis_backend {
    use super::cases;

    interop_tests!(
        amqp_redis: rust_client_python_worker,
        python_client_rust_worker,
        mixed_fleet,
        celery_control_reaches_celerity,
        celery_inspects_celerity,
        celery_controls_celerity,
        celery_terminates_a_celerity_task,
        celerity_revoke_reaches_python,
        python_canvas_rust_worker,
        chain_across_python_and_celerity,
        python_reads_celerity_results,
        python_builds_canvas_over_celerity_tasks,
        rust_builds_canvas_over_python_tasks,
        chord_split_across_python_and_celerity,
        python_restores_a_celerity_group
    );
}

/// Celery's monitors watching Celerity workers: events travel on the broker alone, so one
/// result backend is enough.
mod monitoring {
    use super::interop::events;

    interop_tests!(
        amqp_rpc,
        events: celery_sees_celerity_events,
        celery_sees_both_workers_of_a_mixed_fleet
    );
}
