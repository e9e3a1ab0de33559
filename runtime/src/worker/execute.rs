//! What happens to one message, from delivery to acknowledgement, following Celery's
//! worker (`celery/worker/strategy.py`, `celery/worker/request.py`, `celery/app/trace.py`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::dispatch::{Ran, Registered};
use super::held::Waiting;
use super::links;
use super::log;
use super::observe::Lifecycle;
use super::refuse::{self, Refusal};
use super::shared::Shared;
use crate::broker::{Acknowledger, Control, ControlStream};
use crate::protocol::{
    ExceptionInfo, Properties, RawMessage, RequestMeta, ResultMeta, TaskMessage, TaskState,
    celery_time, parse_celery_time, short,
};
use crate::spec::RetryPolicy;
use crate::task::{TaskContext, TaskError, TaskErrorKind};
use crate::traceback::Traceback;

use super::CELERY_EXCEPTIONS;

/// Applies control commands until the stream ends.
pub(crate) async fn listen(shared: Arc<Shared>, mut control: Box<dyn ControlStream>) {
    while let Some(command) = control.next().await {
        match command {
            Control::Revoke { task_ids } => {
                tracing::info!(?task_ids, "tasks revoked");
                shared.revoke(task_ids);
            }
        }
    }
}

fn parse_time(text: &Option<String>, header: &str) -> Result<Option<DateTime<Utc>>, String> {
    let Some(text) = text else { return Ok(None) };
    parse_celery_time(text).map(Some).ok_or_else(|| {
        let text = short(text);
        format!("invalid `{header}` header {text:?}: not an ISO 8601 time")
    })
}

/// The receive strategy: decode, find the task, check expiry, hold until the ETA, wait
/// for a free slot. `held` is the message's place in the prefetch window.
pub(super) async fn receive(
    shared: Arc<Shared>,
    raw: RawMessage,
    queue: String,
    malformed: Option<String>,
    acker: Box<dyn Acknowledger>,
    held: OwnedSemaphorePermit,
) {
    if let Err(refusal) = refuse::screen(&raw, malformed, shared.max_message_size) {
        refuse::refuse(&shared, &raw, &queue, refusal, acker).await;
        return;
    }
    let Some(decoded) = decode(&shared, &raw, &queue, acker).await else {
        return;
    };
    log::received(
        decoded.registered.spec.name,
        decoded.message.id(),
        &queue,
        decoded.eta,
    );
    let eta_held = decoded.eta.is_some_and(|eta| eta > Utc::now());
    shared.observe(Lifecycle::Received {
        message: &decoded.message,
        queue: &queue,
        eta_held,
    });
    if let Some(due) = decoded.eta.filter(|eta| *eta > Utc::now()) {
        // Held without a slot and outside the prefetch window, which the broker's prefetch
        // is raised for instead, so held tasks cannot starve the others
        // (`celery/worker/strategy.py`); the place is taken back when the ETA comes.
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tracing::debug!(
            id = decoded.message.id(),
            ?wait,
            "holding task until its ETA"
        );
        let Decoded { message, acker, .. } = decoded;
        drop(message);
        // The place is given up only once held (or back on the broker): a worker stopping
        // meanwhile waits for it.
        let due = tokio::time::Instant::now() + wait;
        shared.held.hold(due, raw, queue, acker, held).await;
        return;
    }
    start(shared, decoded, raw, queue, held).await;
}

/// A held task whose ETA came: it takes a place in the prefetch window again, then runs
/// like any other. A worker stopping first returns it to the broker instead.
pub(crate) async fn admit(shared: Arc<Shared>, mut waiting: Waiting) {
    let mut stopping = shared.stopping.clone();
    let permit = match waiting.place.take() {
        Some(place) => Some(place),
        None => tokio::select! {
            permit = shared.pool.prefetch.clone().acquire_owned() => permit.ok(),
            _ = stopping.wait_for(|s| *s) => None,
        },
    };
    let Some(held) = permit else {
        shared.held.give_back(waiting).await;
        shared.held.left();
        return;
    };
    shared.held.left();
    let Some((raw, queue, acker)) = waiting.into_parts().await else {
        return;
    };
    // It decoded when it arrived, so this only fails on a task unregistered since.
    let Some(decoded) = decode(&shared, &raw, &queue, acker).await else {
        return;
    };
    shared.observe(Lifecycle::Due {
        id: decoded.message.id(),
    });
    start(shared, decoded, raw, queue, held).await;
}

/// A message decoded far enough to schedule and run it.
struct Decoded {
    registered: Registered,
    message: TaskMessage,
    acker: Box<dyn Acknowledger>,
    eta: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
}

/// Decodes `raw` and finds its task; a message that is not a valid task message, or names
/// no registered task, is logged and rejected here (`None`).
async fn decode(
    shared: &Shared,
    raw: &RawMessage,
    queue: &str,
    acker: Box<dyn Acknowledger>,
) -> Option<Decoded> {
    let message = match TaskMessage::from_raw(raw) {
        Ok(message) => message,
        Err(error) => {
            refuse::refuse(shared, raw, queue, Refusal::of(error), acker).await;
            return None;
        }
    };
    let Some(registered) = shared.table.get(message.task()).cloned() else {
        log::unregistered(message.task(), message.id(), queue);
        shared.observe(Lifecycle::Unregistered {
            id: message.id(),
            name: message.task(),
        });
        // Celery records NotRegistered so a waiting client fails instead of hanging.
        let name = short(message.task());
        let exception = ExceptionInfo::new("NotRegistered", CELERY_EXCEPTIONS, name);
        let traceback = Traceback::here().render(message.task(), &exception);
        store(
            shared,
            &message.properties,
            ResultMeta::exception(
                message.id(),
                TaskState::Failure,
                &exception,
                Some(traceback),
            )
            .with_request(&shared.unknown_request()),
        )
        .await;
        settle(acker, Settle::Reject).await;
        return None;
    };
    match (
        parse_time(&message.headers.eta, "eta"),
        parse_time(&message.headers.expires, "expires"),
    ) {
        (Ok(eta), Ok(expires)) => Some(Decoded {
            registered,
            message,
            acker,
            eta,
            expires,
        }),
        (Err(error), _) | (_, Err(error)) => {
            refuse::refuse(shared, raw, queue, Refusal::invalid(error), acker).await;
            None
        }
    }
}

/// Waits for the task's turn under its rate limit and for a free slot, then runs it.
async fn start(
    shared: Arc<Shared>,
    decoded: Decoded,
    raw: RawMessage,
    queue: String,
    held: OwnedSemaphorePermit,
) {
    let Decoded {
        registered,
        message,
        acker,
        eta,
        expires,
    } = decoded;
    shared.limits.wait_turn(registered.spec).await;
    let Ok(slot) = shared.pool.slots.clone().acquire_owned().await else {
        return;
    };
    let delivery = Received {
        raw,
        message,
        queue,
        acker,
        expires,
        eta,
    };
    execute(shared, registered, delivery, (held, slot)).await;
}

/// A decoded message ready to run.
struct Received {
    /// The message as delivered: a retry decodes its arguments from it again, since the
    /// run consumed the decoded ones.
    raw: RawMessage,
    message: TaskMessage,
    queue: String,
    acker: Box<dyn Acknowledger>,
    expires: Option<DateTime<Utc>>,
    eta: Option<DateTime<Utc>>,
}

enum Settle {
    Ack,
    Reject,
    /// Back to the queue, to be delivered again (kombu's `reject(requeue=True)`).
    Requeue,
}

async fn settle(acker: Box<dyn Acknowledger>, how: Settle) {
    let result = match how {
        Settle::Ack => acker.ack().await,
        Settle::Reject => acker.reject(false).await,
        Settle::Requeue => acker.reject(true).await,
    };
    if let Err(error) = result {
        tracing::error!(%error, "could not settle a message with the broker");
    }
}

async fn store(shared: &Shared, request: &Properties, meta: ResultMeta) {
    if let Err(error) = shared.client.backend().store_for(&meta, request).await {
        tracing::error!(%error, id = %meta.task_id, status = %meta.status, "could not store a task result");
    }
}

/// Stores a task's final result; whether it was stored. The backend has retried for as
/// long as it is configured to (the Redis backend's `result_retry_window`); a result it
/// gives up on is logged as such, saying what becomes of the task.
async fn store_result(
    shared: &Shared,
    request: &Properties,
    meta: ResultMeta,
    acks_late: bool,
) -> bool {
    let Err(error) = shared.client.backend().store_for(&meta, request).await else {
        return true;
    };
    if acks_late {
        tracing::error!(%error, id = %meta.task_id, status = %meta.status,
            "gave up storing the result of a task that ran; its message goes back to the queue and the task will run again");
    } else {
        tracing::error!(%error, id = %meta.task_id, status = %meta.status,
            "gave up storing the result of a task that ran; the result is lost (the message was acknowledged before the task ran)");
    }
    false
}

/// Runs one task: expiry check, early ack, STARTED, the call, retry or result, late ack.
/// The permits are released when it returns.
async fn execute(
    shared: Arc<Shared>,
    registered: Registered,
    received: Received,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    let Received {
        raw,
        mut message,
        queue,
        acker,
        expires,
        eta,
    } = received;
    let spec = registered.spec;
    let id = message.id().to_owned();
    let span = tracing::info_span!(
        "task",
        task = spec.name,
        id = %short(&id),
        retries = message.headers.retries,
        queue = %queue,
        outcome = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    async move {
        // What every result records of the request; taken before the run consumes it.
        let request = shared.request_of(&message, &queue);
        // Registered before the revoked check: a revoke that terminates reaches the task
        // through the check when it comes before, through its stop when after.
        let (running, stop) = shared.running.register(&id);
        let ignore_result = message.headers.ignore_result.unwrap_or(spec.ignore_result);
        let expired = expires.is_some_and(|at| at <= Utc::now());
        if expired || shared.is_revoked(&id) {
            let reason = if expired { "expired" } else { "revoked" };
            log::discarded(spec.name, &id, reason);
            revoked(&shared, &message, &request, reason, ignore_result).await;
            settle(acker, Settle::Ack).await;
            return;
        }
        // Early acknowledgement (Celery's default): the message is gone before the task
        // runs. Late: only after the result is stored.
        let late_acker = if spec.acks_late {
            Some(acker)
        } else {
            settle(acker, Settle::Ack).await;
            None
        };
        if spec.track_started && !ignore_result {
            let started =
                serde_json::json!({"pid": std::process::id(), "hostname": shared.hostname});
            store(
                &shared,
                &message.properties,
                ResultMeta::new(&id, TaskState::Started, started).with_request(&request),
            )
            .await;
        }
        // The header's limits win over the task's, as in Celery (`[hard, soft]`).
        let limit = |header: Option<f64>, default: Option<Duration>| {
            header
                .filter(|s| *s > 0.0)
                .map(Duration::from_secs_f64)
                .or(default)
        };
        let limits = shared.limits.times(spec);
        let time_limit = limit(message.headers.timelimit.0, limits.hard);
        let soft_time_limit = limit(message.headers.timelimit.1, limits.soft);
        let root_id = message
            .headers
            .root_id
            .clone()
            .unwrap_or_else(|| id.clone());
        let ctx = TaskContext {
            id: id.clone(),
            name: spec.name.to_owned(),
            retries: message.headers.retries,
            queue: queue.clone(),
            root_id: Some(root_id.clone()),
            parent_id: message.headers.parent_id.clone(),
            eta,
            expires,
            periodic_task_name: message
                .headers
                .extra
                .get("periodic_task_name")
                .and_then(|name| name.as_str())
                .map(str::to_owned),
            client: shared.client.child_of(&id, &root_id),
            soft_deadline: soft_time_limit.map(|d| tokio::time::Instant::now() + d),
        };
        log::started(spec.name, &id, message.headers.retries);
        shared.observe(Lifecycle::Started {
            id: &id,
            name: spec.name,
        });
        let started = Instant::now();
        let ran = registered
            .handler
            .run(
                shared.container.clone(),
                ctx,
                std::mem::take(&mut message.args),
                std::mem::take(&mut message.kwargs),
                time_limit,
                stop,
            )
            .await;
        drop(running);
        let elapsed = started.elapsed();
        let span = tracing::Span::current();
        span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
        let outcome = match ran {
            Ran::Finished(outcome) => outcome,
            Ran::Terminated => {
                // Celery's `Request.terminate`: REVOKED `terminated`, and the message is
                // settled (acknowledged before the run, or now when late).
                log::terminated(spec.name, &id, elapsed);
                revoked(&shared, &message, &request, "terminated", ignore_result).await;
                if let Some(acker) = late_acker {
                    settle(acker, Settle::Ack).await;
                }
                return;
            }
        };
        let mut stored = true;
        let parent = links::Parent {
            id: &id,
            root_id: &root_id,
        };
        // Success sends the links before the result is stored (`trace.py`); a link that
        // cannot be sent fails the task, as a publish error does there.
        let outcome = match outcome {
            Ok(value) => match links::after_success(&shared, &message.embed, &parent, &value).await
            {
                Ok(()) => Ok(value),
                Err(error) => Err(TaskError::python(
                    "OperationalError",
                    "kombu.exceptions",
                    format!("could not send the task's links: {error}"),
                )),
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(value) => {
                span.record("outcome", "success");
                log::succeeded(spec.name, &id, elapsed, &value);
                shared.observe(Lifecycle::Succeeded {
                    id: &id,
                    runtime: elapsed,
                    result: &value,
                });
                if !ignore_result {
                    stored = store_result(
                        &shared,
                        &message.properties,
                        ResultMeta::new(&id, TaskState::Success, value.clone())
                            .with_request(&request),
                        spec.acks_late,
                    )
                    .await;
                }
                links::chord_part(&shared, &message, &parent, TaskState::Success, &value).await;
            }
            Err(error) => match retry_decision(spec.retry, &error, message.headers.retries) {
                Some(countdown) => {
                    span.record("outcome", "retry");
                    let exception = retry_exception(&error, countdown);
                    shared.observe(Lifecycle::Retried {
                        id: &id,
                        name: spec.name,
                        exception: &exception,
                        traceback: retry_traceback(&error),
                    });
                    retry(&shared, &raw, &message, &request, &queue, &error, countdown).await;
                }
                None => {
                    span.record("outcome", "failure");
                    let (exception, traceback) = failure_of(error, spec.retry, spec.name);
                    log::failed(spec.name, &id, elapsed, &exception);
                    shared.observe(Lifecycle::Failed {
                        id: &id,
                        exception: &exception,
                        traceback: &traceback,
                    });
                    if !ignore_result {
                        stored = store_result(
                            &shared,
                            &message.properties,
                            ResultMeta::exception(
                                &id,
                                TaskState::Failure,
                                &exception,
                                Some(traceback.clone()),
                            )
                            .with_request(&request),
                            spec.acks_late,
                        )
                        .await;
                    }
                    let stored_exception = serde_json::to_value(&exception).unwrap_or_default();
                    links::chord_part(
                        &shared,
                        &message,
                        &parent,
                        TaskState::Failure,
                        &stored_exception,
                    )
                    .await;
                    let failure = (&exception, Some(traceback.as_str()));
                    links::after_failure(&shared, &message.embed, &parent, failure, !ignore_result)
                        .await;
                }
            },
        }
        if let Some(acker) = late_acker {
            // A late ack promises the message is settled once the task's outcome is
            // recorded. Celery acks even when the result could not be stored (the store
            // error fails the task, and `acks_on_failure_or_timeout` acks it:
            // `celery/worker/request.py::on_failure`), losing the result a client waits
            // for. Requeued instead, as Celery requeues a lost worker's task under
            // `reject_on_worker_lost`: the task runs again, which a late-acked task must
            // allow (at least once). Only after the backend's whole retry window, so a
            // backend that stays down does not make it run in a tight loop.
            let how = if stored {
                Settle::Ack
            } else {
                shared.observe(Lifecycle::Rejected {
                    id: &id,
                    requeue: true,
                });
                Settle::Requeue
            };
            settle(acker, how).await;
        }
    }
    .instrument(span)
    .await
}

/// Records that the task of `message` did not run or was stopped, for `reason`
/// (`expired`, `revoked`, `terminated`): REVOKED with `TaskRevokedError(reason)`, unless
/// results are ignored, and its part in a chord, which then fails
/// (`Backend.mark_as_revoked`).
async fn revoked(
    shared: &Shared,
    message: &TaskMessage,
    request: &RequestMeta,
    reason: &str,
    ignore_result: bool,
) {
    let id = message.id();
    shared.observe(Lifecycle::Revoked { id, reason });
    tracing::Span::current().record("outcome", "revoked");
    let exception = ExceptionInfo::new("TaskRevokedError", CELERY_EXCEPTIONS, reason);
    if !ignore_result {
        store(
            shared,
            &message.properties,
            ResultMeta::exception(id, TaskState::Revoked, &exception, None).with_request(request),
        )
        .await;
    }
    let root_id = message.headers.root_id.as_deref().unwrap_or(id);
    let parent = links::Parent { id, root_id };
    let stored_exception = serde_json::to_value(&exception).unwrap_or_default();
    links::chord_part(
        shared,
        message,
        &parent,
        TaskState::Revoked,
        &stored_exception,
    )
    .await;
}

/// The countdown of the retry to schedule, or `None` when the error is final.
fn retry_decision(
    policy: Option<RetryPolicy>,
    error: &TaskError,
    retries: u32,
) -> Option<Duration> {
    let (policy, explicit) = match (&*error.kind, policy) {
        (TaskErrorKind::Retry { countdown, .. }, policy) => {
            (policy.unwrap_or_default(), *countdown)
        }
        (TaskErrorKind::Failure { exception, .. }, Some(policy))
            if policy.retries_on(&exception.exc_type) =>
        {
            (policy, None)
        }
        _ => return None,
    };
    if retries >= policy.max_retries {
        return None;
    }
    let delay = explicit.unwrap_or_else(|| policy.delay_for(retries));
    Some(if policy.jitter && explicit.is_none() {
        crate::backoff::full_jitter(delay)
    } else {
        delay
    })
}

/// What a final error of the task `task` is stored as, with its traceback. A retry
/// request that ran out of retries fails with its cause, or with Celery's
/// `MaxRetriesExceededError` (made where the retry was asked for) when it has none.
fn failure_of(
    error: TaskError,
    policy: Option<RetryPolicy>,
    task: &str,
) -> (ExceptionInfo, String) {
    let (exception, traceback) = match *error.kind {
        TaskErrorKind::Failure {
            exception,
            traceback,
        } => (exception, traceback),
        TaskErrorKind::Retry {
            cause: Some(cause), ..
        } => cause,
        TaskErrorKind::Retry {
            cause: None,
            traceback,
            ..
        } => {
            let max = policy.unwrap_or_default().max_retries;
            let message = format!("Can't retry: exceeded max retries ({max})");
            let exception =
                ExceptionInfo::new("MaxRetriesExceededError", CELERY_EXCEPTIONS, message);
            (exception, traceback)
        }
    };
    let traceback = traceback.render(task, &exception);
    (exception, traceback)
}

/// Republishes the task with `retries + 1` and an ETA, keeping its id (as
/// `celery/app/task.py::Task.retry` does), then records RETRY.
async fn retry(
    shared: &Shared,
    raw: &RawMessage,
    message: &TaskMessage,
    request: &RequestMeta,
    queue: &str,
    error: &TaskError,
    countdown: Duration,
) {
    let eta = Utc::now() + chrono::Duration::from_std(countdown).unwrap_or_default();
    let republished = match TaskMessage::from_raw(raw) {
        Ok(mut next) => {
            next.headers.retries += 1;
            next.headers.parent_id = Some(message.id().to_owned());
            next.headers.eta = Some(celery_time(eta));
            shared.client.publish(queue, &next).await
        }
        // It decoded before the run, so it decodes again; kept as an error, not a panic.
        Err(error) => Err(crate::error::Error::new(
            crate::error::ErrorKind::Decode,
            format!("the task message no longer decodes: {error}"),
        )),
    };
    if let Err(error) = republished {
        tracing::error!(%error, "could not republish the task for its retry; it fails instead");
        let exception = ExceptionInfo::new("RetryFailed", CELERY_EXCEPTIONS, error.to_string());
        let traceback = Traceback::here().render(message.task(), &exception);
        store(
            shared,
            &message.properties,
            ResultMeta::exception(
                message.id(),
                TaskState::Failure,
                &exception,
                Some(traceback),
            )
            .with_request(request),
        )
        .await;
        return;
    }
    log::retried(
        message.task(),
        message.id(),
        message.headers.retries + 1,
        countdown,
        eta,
        error.exception(),
    );
    let exception = retry_exception(error, countdown);
    store(
        shared,
        &message.properties,
        ResultMeta::exception(message.id(), TaskState::Retry, &exception, None)
            .with_request(request),
    )
    .await;
}

/// Where a retried task's cause happened, else where the retry was asked for.
fn retry_traceback(error: &TaskError) -> &Traceback {
    match &*error.kind {
        TaskErrorKind::Retry {
            cause: Some((_, traceback)),
            ..
        }
        | TaskErrorKind::Retry { traceback, .. }
        | TaskErrorKind::Failure { traceback, .. } => traceback,
    }
}

/// What a retried task's RETRY state records: its cause, else Celery's `Retry`.
fn retry_exception(error: &TaskError, countdown: Duration) -> ExceptionInfo {
    error.exception().cloned().unwrap_or_else(|| {
        ExceptionInfo::new(
            "Retry",
            CELERY_EXCEPTIONS,
            format!("Retry in {}s", countdown.as_secs()),
        )
    })
}
