//! What a finished task's embed asks for: on success its link callbacks and the next step
//! of its chain, on final failure the rest of the chain marked failed and its errbacks
//! (`celery/app/trace.py::_dispatch_callbacks_and_chain`,
//! `celery/backends/base.py::mark_as_failure`).

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::shared::Shared;
use crate::canvas::Signature;
use crate::client::SendOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    Embed, ExceptionInfo, Properties, ResultMeta, TaskMessage, TaskState, parse_celery_time,
};
use crate::spec::TaskSpec;

/// The settings of a task this worker does not know: Celery's defaults, so its queue is
/// `celery`, where Celery's router sends a task no route names.
static FOREIGN_TASK: TaskSpec = TaskSpec::new("", &[]);

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
            );
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

/// Publishes `signature` (arguments already merged) as a child of `parent`, with `chain`
/// as the rest of its chain and `group` as its group id and index. A group signature
/// sends each of its tasks, as `group.apply_async` does.
async fn send(
    shared: &Shared,
    signature: &Signature,
    parent: &Parent<'_>,
    chain: Option<Vec<Value>>,
    group: Option<(&str, usize)>,
) -> Result<()> {
    if signature.is_group() {
        return send_group(shared, signature, parent, chain).await;
    }
    send_task(shared, signature, parent, chain, group).await
}

/// The members of a group signature, each with the group's arguments prepended unless
/// immutable, the group's id (its `task_id`, as `group._freeze_gid` takes it) and its
/// index (`celery/canvas.py::group.apply_async`).
async fn send_group(
    shared: &Shared,
    group: &Signature,
    parent: &Parent<'_>,
    chain: Option<Vec<Value>>,
) -> Result<()> {
    let members = match group.kwargs.get("tasks") {
        Some(Value::Array(members)) => members.as_slice(),
        _ => &[],
    };
    let group_id = group
        .task_id()
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    for (index, member) in members.iter().enumerate() {
        let member: Signature = serde_json::from_value(member.clone()).map_err(|error| {
            Error::new(
                ErrorKind::Decode,
                format!("a member of group {group_id} is not a signature: {error}"),
            )
        })?;
        // An immutable group has immutable members (`group.set_immutable`); they say so.
        let member = member.with_partial_args(&group.args);
        send_task(
            shared,
            &member,
            parent,
            chain.clone(),
            Some((&group_id, index)),
        )
        .await?;
    }
    Ok(())
}

/// Publishes one task's signature; see [`send`].
async fn send_task(
    shared: &Shared,
    signature: &Signature,
    parent: &Parent<'_>,
    chain: Option<Vec<Value>>,
    group: Option<(&str, usize)>,
) -> Result<()> {
    if !signature.is_simple() {
        // Chords and nested chains are applied by the canvas code of a Python worker;
        // here they are refused loudly rather than sent as a task of that name.
        return Err(Error::new(
            ErrorKind::Encode,
            format!(
                "cannot apply a {} signature ({}) from a Celerity worker",
                signature.subtask_type.as_deref().unwrap_or_default(),
                signature.task
            ),
        ));
    }
    let (queue, message) = message_for(shared, signature, parent, chain, group);
    shared.client.publish(&queue, &message).await?;
    tracing::debug!(task = %signature.task, id = message.id(), %queue, parent = parent.id, "linked task sent");
    Ok(())
}

/// The message Celery's `send_task` writes for `signature` sent from inside `parent`, and
/// its queue: `options.queue`, else the task's own queue when registered here, else
/// `celery`.
fn message_for(
    shared: &Shared,
    signature: &Signature,
    parent: &Parent<'_>,
    chain: Option<Vec<Value>>,
    group: Option<(&str, usize)>,
) -> (String, TaskMessage) {
    let spec = shared
        .table
        .get(&signature.task)
        .map_or(&FOREIGN_TASK, |registered| registered.spec);
    let option = |name: &str| signature.options.get(name).filter(|v| !v.is_null());
    let seconds = |name: &str| {
        option(name)
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
    };
    let time = |name: &str| {
        option(name)
            .and_then(Value::as_str)
            .and_then(parse_celery_time)
    };
    let options = SendOptions {
        task_id: signature.task_id().map(str::to_owned),
        eta: time("eta"),
        countdown: seconds("countdown"),
        // `expires` is a number of seconds or an ISO 8601 time.
        expires_at: time("expires"),
        expires: seconds("expires"),
        priority: option("priority")
            .and_then(Value::as_u64)
            .map(|p| p.min(255) as u8),
        queue: signature.queue().map(str::to_owned),
    };
    let client = shared.client.child_of(parent.id, parent.root_id);
    let mut message = client.message(
        spec,
        signature.args.clone(),
        signature.kwargs.clone(),
        &options,
    );
    let headers = &mut message.headers;
    headers.task = signature.task.clone();
    headers.shadow = signature.option_str("shadow").map(str::to_owned);
    if let Some(ignore) = option("ignore_result").and_then(Value::as_bool) {
        headers.ignore_result = Some(ignore);
    }
    let limit = |name: &str| option(name).and_then(Value::as_f64);
    if let Some(hard) = limit("time_limit") {
        headers.timelimit.0 = Some(hard);
    }
    if let Some(soft) = limit("soft_time_limit") {
        headers.timelimit.1 = Some(soft);
    }
    match group {
        Some((id, index)) => {
            headers.group = Some(id.to_owned());
            headers.group_index = Some(index as u64);
        }
        None => {
            headers.group = signature.option_str("group_id").map(str::to_owned);
            headers.group_index = option("group_index").and_then(Value::as_u64);
        }
    }
    // The Python client's reply queue travels in the options of every step it built: the
    // rpc backend sends the step's result there.
    if let Some(reply_to) = signature.option_str("reply_to") {
        message.properties.reply_to = Some(reply_to.to_owned());
    }
    let non_empty = |list: Vec<Value>| (!list.is_empty()).then_some(list);
    message.embed = Embed {
        callbacks: non_empty(signature.linked("link")),
        errbacks: non_empty(signature.linked("link_error")),
        chain,
        chord: option("chord").cloned(),
    };
    let queue = options.queue.unwrap_or_else(|| spec.queue.to_owned());
    (queue, message)
}
