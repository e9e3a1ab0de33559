//! What a finished task's embed asks for: on success its link callbacks and the next step
//! of its chain, on final failure the rest of the chain marked failed and its errbacks
//! (`celery/app/trace.py::_dispatch_callbacks_and_chain`,
//! `celery/backends/base.py::mark_as_failure`).

use serde_json::Value;
use uuid::Uuid;

use serde::Deserialize;

use super::shared::Shared;
use crate::backend::{ChordJoin, ChordPart};
use crate::canvas::{Applier, Context, Signature, freeze};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Embed, ExceptionInfo, Properties, ResultMeta, TaskMessage, TaskState};
use crate::traceback::{Traceback, exception_line};

/// The finished task a link is sent from: its id becomes the children's `parent_id`.
pub(crate) struct Parent<'a> {
    pub id: &'a str,
    pub root_id: &'a str,
}

/// Sends the link callbacks, then the next chain step, each with `result` prepended to
/// its arguments unless immutable. Celery sends them before it stores the result, so the
/// result's `children` can name them; an error here fails the task, as a publish error
/// does in `trace.py`.
pub(crate) async fn after_success(
    shared: &Shared,
    embed: &Embed,
    parent: &Parent<'_>,
    result: &Value,
) -> Result<()> {
    let callbacks = signatures(embed.callbacks.as_deref().unwrap_or_default(), "callback");
    match callbacks.as_slice() {
        [] => {}
        [one] => send(shared, &one.with_parent_result(result), parent, None, None).await?,
        several => {
            // Group callbacks are applied each on its own, the other callbacks as one
            // group: the same group id and each its index.
            let (groups, tasks): (Vec<&Signature>, Vec<&Signature>) =
                several.iter().partition(|s| s.is_group());
            for group in groups {
                send(
                    shared,
                    &group.with_parent_result(result),
                    parent,
                    None,
                    None,
                )
                .await?;
            }
            let group_id = Uuid::new_v4().to_string();
            for (index, callback) in tasks.into_iter().enumerate() {
                let callback = callback.with_parent_result(result);
                send(shared, &callback, parent, None, Some((&group_id, index))).await?;
            }
        }
    }
    if let Some((next, rest)) = embed.chain.as_deref().and_then(<[Value]>::split_last) {
        match serde_json::from_value::<Signature>(next.clone()) {
            Ok(next) => {
                let next = next.with_parent_result(result);
                send(shared, &next, parent, Some(rest.to_vec()), None).await?;
            }
            Err(error) => {
                return Err(Error::new(
                    ErrorKind::Decode,
                    format!("the next chain step is not a signature: {error}"),
                ));
            }
        }
    }
    Ok(())
}

/// After a final failure: every remaining chain step's id gets the same FAILURE (so a
/// client waiting on the chain's last task sees it), then the errbacks are sent with the
/// failed task's id as their first argument. `store` is false when the task's result is
/// ignored.
pub(crate) async fn after_failure(
    shared: &Shared,
    embed: &Embed,
    parent: &Parent<'_>,
    failure: (&ExceptionInfo, Option<&str>),
    store: bool,
) {
    let (exception, traceback) = failure;
    if store {
        for step in signatures(embed.chain.as_deref().unwrap_or_default(), "chain step") {
            let Some(step_id) = step.task_id() else {
                continue;
            };
            let meta = ResultMeta::exception(
                step_id,
                TaskState::Failure,
                exception,
                traceback.map(str::to_owned),
            )
            .with_request(&shared.request_of_step(&step));
            let request = Properties {
                correlation_id: Some(step_id.to_owned()),
                reply_to: step.option_str("reply_to").map(str::to_owned),
                ..Properties::default()
            };
            if let Err(error) = shared.client.backend().store_for(&meta, &request).await {
                tracing::error!(%error, id = step_id, "could not mark a chain step failed");
            }
        }
    }
    // Celery calls an errback inline with `(request, exc, traceback)` when it is a Python
    // task of this worker taking more than one argument; every other errback is sent as a
    // group with the failed task's id prepended (`Backend._call_task_errbacks`). A
    // Celerity task has no Python request to take, so the message form is the one used.
    // Its `root_id` is the failed task's root, as there.
    let errbacks = signatures(embed.errbacks.as_deref().unwrap_or_default(), "errback");
    let group_id = Uuid::new_v4().to_string();
    let failed_id = Value::String(parent.id.to_owned());
    for (index, errback) in errbacks.iter().enumerate() {
        let errback = errback.with_parent_result(&failed_id);
        let sent = send(shared, &errback, parent, None, Some((&group_id, index))).await;
        if let Err(error) = sent {
            tracing::error!(%error, errback = %errback.task, "could not send an errback");
        }
    }
}

/// The signatures of an embed list; an entry that is not one is logged and skipped.
fn signatures(values: &[Value], what: &str) -> Vec<Signature> {
    values
        .iter()
        .filter_map(|value| match serde_json::from_value(value.clone()) {
            Ok(signature) => Some(signature),
            Err(error) => {
                tracing::error!(%error, "a {what} in the message is not a signature; skipped");
                None
            }
        })
        .collect()
}

/// Applies `signature` (arguments already merged) as a child of `parent`, with `chain` as
/// the rest of its chain and `group` as its group id and index: a task is published, a
/// group, chain or chord applied as Celery's canvas applies it.
async fn send(
    shared: &Shared,
    signature: &Signature,
    parent: &Parent<'_>,
    chain: Option<Vec<Value>>,
    group: Option<(&str, usize)>,
) -> Result<()> {
    let client = shared.client.child_of(parent.id, parent.root_id);
    let lookup = |name: &str| shared.table.get(name).map(|registered| registered.spec);
    let applier = Applier {
        client: &client,
        lookup: &lookup,
    };
    let context = Context {
        chain: chain.unwrap_or_default(),
        group: group.map(|(id, index)| (id.to_owned(), index as u64)),
        ..Context::default()
    };
    let mut signature = signature.clone();
    freeze(&mut signature);
    applier.apply(signature, context).await
}

/// After a header task of a chord reached its final state (`state`, with `result` the
/// value or the exception as stored): records it with the backend, and when it was the
/// last, sends the body with every part's result, in header order, or, when a part
/// failed, fails the body with Celery's `ChordError` and sends its errbacks
/// (`RedisBackend.on_chord_part_return`, `Backend.chord_error_from_stack`).
pub(crate) async fn chord_part(
    shared: &Shared,
    message: &TaskMessage,
    parent: &Parent<'_>,
    state: TaskState,
    result: &Value,
) {
    let (Some(body), Some(group_id)) = (&message.embed.chord, &message.headers.group) else {
        return;
    };
    let part = ChordPart {
        group_id,
        task_id: parent.id,
        group_index: message.headers.group_index,
        state,
        result,
    };
    let backend = shared.client.backend();
    let parts = match backend.chord_part_return(&part).await {
        Ok(ChordJoin::Complete { claim, parts }) => (claim, parts),
        Ok(ChordJoin::Waiting) => return,
        Err(error) => {
            tracing::error!(%error, chord = %group_id, "could not join a chord part");
            // Parts that cannot be read fail the body, as Celery's `Join error`; a
            // backend that could not be reached leaves the chord to a later part.
            if error.kind() == ErrorKind::Decode
                && let Ok(body) = serde_json::from_value::<Signature>(body.clone())
            {
                let error = chord_error(format!("Join error: {error}"));
                fail_body(shared, &body, parent, &error, Traceback::here()).await;
            }
            return;
        }
    };
    let (claim, parts) = parts;
    let body: Signature = match serde_json::from_value(body.clone()) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, chord = %group_id, "the chord body in the message is not a signature");
            return;
        }
    };
    let failed = parts.iter().find(|part| part.state.propagates());
    let failed = match failed {
        Some(part) => {
            let cause = ExceptionInfo::deserialize(&part.result).ok();
            let repr = cause
                .as_ref()
                .map_or_else(|| part.result.to_string(), |e| e.python_repr());
            let error = chord_error(format!("Dependency {} raised {repr}", part.task_id));
            tracing::error!(chord = %group_id, failed = %part.task_id, "a chord part failed; the body does not run");
            // The part's exception is the cause, as in the traceback Celery records.
            let line = cause.as_ref().map_or(repr.clone(), exception_line);
            let traceback = Traceback::here().caused_by(line);
            fail_body(shared, &body, parent, &error, traceback).await;
            true
        }
        None => {
            let results = parts.into_iter().map(|part| part.result).collect();
            let body = body.with_parent_result(&Value::Array(results));
            match send(shared, &body, parent, None, None).await {
                Ok(()) => {
                    tracing::debug!(chord = %group_id, body = %body.task, "chord complete; body sent");
                    false
                }
                Err(error) => {
                    tracing::error!(%error, chord = %group_id, "could not send the chord body");
                    let error = chord_error(format!("Callback error: {error}"));
                    fail_body(shared, &body, parent, &error, Traceback::here()).await;
                    // Celery cleans up after a body it could not send, as after one sent.
                    false
                }
            }
        }
    };
    if let Err(error) = backend.chord_finish(group_id, &claim, failed).await {
        tracing::warn!(%error, chord = %group_id, "could not clean up a finished chord; its keys expire");
    }
}

/// Celery's `celery.exceptions.ChordError` with `message`.
fn chord_error(message: String) -> ExceptionInfo {
    ExceptionInfo::new("ChordError", "celery.exceptions", message)
}

/// A chord body that will not run: FAILURE with `error` and `traceback` under its id,
/// the rest of its chain failed and its errbacks sent, as for a task that failed.
async fn fail_body(
    shared: &Shared,
    body: &Signature,
    parent: &Parent<'_>,
    error: &ExceptionInfo,
    traceback: Traceback,
) {
    let Some(body_id) = body.task_id() else {
        return;
    };
    let traceback = traceback.render(&body.task, error);
    // Celery stores it without a request (`chord_error_from_stack`): no extended fields.
    let meta = ResultMeta::exception(body_id, TaskState::Failure, error, Some(traceback.clone()));
    let request = Properties {
        correlation_id: Some(body_id.to_owned()),
        reply_to: body.option_str("reply_to").map(str::to_owned),
        ..Properties::default()
    };
    if let Err(error) = shared.client.backend().store_for(&meta, &request).await {
        tracing::error!(%error, id = body_id, "could not store the failure of a chord body");
    }
    let embed = Embed {
        errbacks: Some(body.linked("link_error")),
        chain: Some(body.linked("chain")),
        ..Embed::default()
    };
    let body_parent = Parent {
        id: body_id,
        root_id: parent.root_id,
    };
    after_failure(
        shared,
        &embed,
        &body_parent,
        (error, Some(&traceback)),
        true,
    )
    .await;
}
