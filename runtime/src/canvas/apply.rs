//! Applying a signature: what Celery's `apply_async` does for each kind of signature
//! (`celery/canvas.py`: `Signature.apply_async`, `_chain.run`/`prepare_steps`,
//! `group._apply_tasks`, `_chord.run`), shared by the client that starts a workflow and
//! the worker that continues it.
//!
//! A signature is first [frozen](freeze): every task in it gets its id, so the handles
//! can be returned before anything is sent and a worker that sends a step later uses the
//! id the client already gave out. Applying then publishes the first tasks: one message
//! per task of a group, the first step of a chain (the rest travels reversed in its embed's
//! `chain`), and each header task of a chord (the body travels in each one's `chord`).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::Signature;
use crate::client::{Client, SendOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Embed, TaskMessage, parse_celery_time};
use crate::spec::TaskSpec;

/// The settings of a task the sender does not know: Celery's defaults, so its queue is
/// `celery`, where Celery's router sends a task no route names.
static FOREIGN_TASK: TaskSpec = TaskSpec::new("", &[]);

/// The spec of a task by name, where the sender has one (a worker's task table).
pub(crate) type Lookup<'a> = &'a (dyn Fn(&str) -> Option<&'static TaskSpec> + Sync);

/// What the enclosing canvas adds to a signature it applies.
#[derive(Debug, Default, Clone)]
pub(crate) struct Context {
    /// Arguments prepended to the signature's own, unless it is immutable.
    pub args: Vec<Value>,
    /// The rest of an enclosing chain, reversed (the message embed's order).
    pub chain: Vec<Value>,
    /// The group id and index of an enclosing group or chord header.
    pub group: Option<(String, u64)>,
    /// The body of the chord this signature is a header part of.
    pub chord: Option<Value>,
}

/// Sends signatures through `client`; `lookup` finds the specs of known tasks, whose
/// queue and limits apply where the signature's options say nothing.
pub(crate) struct Applier<'a> {
    pub client: &'a Client,
    pub lookup: Lookup<'a>,
}

/// Gives every task in `signature` the id it will run under, where it has none yet:
/// `options.task_id` of each task, of each group (its group id), of each chord (its
/// header's group id, as `_chord.freeze` has it) and of each chord body.
pub(crate) fn freeze(signature: &mut Signature) {
    match signature.subtask_type.as_deref() {
        Some("chain") => each_member(signature, "tasks", freeze),
        Some("group") => {
            ensure_id(signature);
            each_member(signature, "tasks", freeze);
        }
        Some("chord") => {
            let group_id = ensure_id(signature);
            flatten_header(signature);
            each_member(signature, "header", freeze);
            if let Some(value) = signature.kwargs.get_mut("body") {
                if let Ok(mut body) = serde_json::from_value::<Signature>(value.clone()) {
                    freeze(&mut body);
                    // `_chord.run`: the body is frozen with the header's group id.
                    body.options
                        .entry("group_id")
                        .or_insert(Value::String(group_id));
                    *value = serde_json::to_value(body).unwrap_or(Value::Null);
                }
            }
        }
        _ => {
            ensure_id(signature);
        }
    }
}

fn ensure_id(signature: &mut Signature) -> String {
    match signature.task_id() {
        Some(id) => id.to_owned(),
        None => {
            let id = Uuid::new_v4().to_string();
            signature
                .options
                .insert("task_id".into(), Value::String(id.clone()));
            id
        }
    }
}

/// A chord's header as a list of signatures. A frozen Python chord holds its header as a
/// group signature (`_chord.freeze` wraps the list in a `group`), which Celery reads as
/// its tasks (`_maybe_group`).
fn flatten_header(chord: &mut Signature) {
    let Some(header @ Value::Object(_)) = chord.kwargs.get_mut("header") else {
        return;
    };
    let tasks = match serde_json::from_value::<Signature>(header.clone()) {
        Ok(group) if group.is_group() => group.kwargs.get("tasks").cloned(),
        Ok(_) => Some(Value::Array(vec![header.clone()])),
        Err(_) => None,
    };
    if let Some(tasks) = tasks {
        *header = tasks;
    }
}

/// Applies `change` to each member signature under `kwargs[key]` (`tasks` of chains and
/// groups, `header` of chords), in place.
fn each_member(signature: &mut Signature, key: &str, change: fn(&mut Signature)) {
    let Some(Value::Array(values)) = signature.kwargs.get_mut(key) else {
        return;
    };
    for value in values {
        if let Ok(mut member) = serde_json::from_value::<Signature>(value.clone()) {
            change(&mut member);
            *value = serde_json::to_value(member).unwrap_or(Value::Null);
        }
    }
}

impl Applier<'_> {
    /// Applies `signature` within `context`.
    pub(crate) fn apply<'s>(
        &'s self,
        signature: Signature,
        context: Context,
    ) -> BoxFuture<'s, Result<()>> {
        Box::pin(async move {
            match signature.subtask_type.as_deref() {
                None => self.apply_task(&signature, context).await,
                Some("chain") => self.apply_chain(signature, context).await,
                Some("group") => self.apply_group(&signature, context).await,
                Some("chord") => self.apply_chord(signature, context).await,
                Some(other) => Err(Error::new(
                    ErrorKind::Encode,
                    format!(
                        "cannot apply a signature of type {other:?} ({}): Celerity applies \
                         tasks, chains, groups and chords",
                        signature.task
                    ),
                )),
            }
        })
    }

    /// A chain: the first step is sent with the others, reversed, as its embed's `chain`.
    /// A group followed by another step becomes a chord with that step as its body, and a
    /// chord followed by steps passes them on in its body's `chain` (`prepare_steps`).
    /// The enclosing group or chord applies to the last step.
    async fn apply_chain(&self, chain: Signature, context: Context) -> Result<()> {
        let mut steps = unroll(chain)?;
        if steps.is_empty() {
            return Ok(());
        }
        if let Some(last) = steps.last_mut() {
            mark_enclosing(last, &context);
        }
        let first = steps.remove(0);
        let mut rest: Vec<Value> = steps
            .into_iter()
            .rev()
            .map(|step| serde_json::to_value(step).unwrap_or(Value::Null))
            .collect();
        rest.extend(context.chain);
        let context = Context {
            args: context.args,
            chain: rest,
            group: None,
            chord: None,
        };
        self.apply(first, context).await
    }

    /// A group: each member with the group's id and its index, the group's arguments and
    /// the caller's prepended (`group._apply_tasks`).
    async fn apply_group(&self, group: &Signature, context: Context) -> Result<()> {
        let group_id = group
            .task_id()
            .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
        let members = group.decoded_members("tasks")?;
        if !context.chain.is_empty() {
            return Err(Error::new(
                ErrorKind::Encode,
                format!("group {group_id} has steps after it: send it as a chord"),
            ));
        }
        let mut args = context.args.clone();
        args.extend(group.args.iter().cloned());
        let members = members.into_iter().enumerate().map(|(index, member)| {
            let member = if group.immutable {
                member.immutable()
            } else {
                member
            };
            let member_context = Context {
                args: args.clone(),
                chain: Vec::new(),
                group: Some((group_id.clone(), index as u64)),
                chord: context.chord.clone(),
            };
            (member, member_context)
        });
        self.apply_members(members).await
    }

    /// Applies the members of a group or chord header: the single tasks' messages are
    /// built first and published in one batch per queue (one pipeline on Redis), the
    /// others applied one by one.
    async fn apply_members(
        &self,
        members: impl Iterator<Item = (Signature, Context)>,
    ) -> Result<()> {
        let mut messages = Vec::new();
        for (member, context) in members {
            if member.is_simple() {
                let member = member.with_partial_args(&context.args);
                messages.push(self.message_for(&member, context));
            } else {
                self.apply(member, context).await?;
            }
        }
        let count = messages.len();
        self.client.publish_all(messages).await?;
        tracing::debug!(count, "member tasks sent from a signature");
        Ok(())
    }

    /// A chord: its size recorded in the result backend (which refuses when it cannot
    /// join chords), then each header task sent with the body in its embed. An empty
    /// header sends the body at once with `[]` (`_chord.run`).
    async fn apply_chord(&self, mut chord: Signature, context: Context) -> Result<()> {
        flatten_header(&mut chord);
        let group_id = chord
            .task_id()
            .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
        let header = chord.decoded_members("header")?;
        let mut body: Signature = match chord.kwargs.get("body") {
            Some(body) => serde_json::from_value(body.clone()).map_err(|error| {
                Error::new(
                    ErrorKind::Decode,
                    format!("the body of chord {group_id} is not a signature: {error}"),
                )
            })?,
            None => {
                return Err(Error::new(
                    ErrorKind::Decode,
                    format!("chord {group_id} has no body"),
                ));
            }
        };
        if header
            .iter()
            .any(|part| part.is_group() || part.subtask_type.as_deref() == Some("chord"))
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "chord {group_id} has a group or chord in its header: Celerity joins \
                     headers of tasks and chains"
                ),
            ));
        }
        // The steps after the chord continue from its body, and what encloses the chord
        // applies to the body: it is the chord's result.
        if !context.chain.is_empty() {
            let mut chain = body.linked("chain");
            chain.splice(0..0, context.chain.iter().cloned());
            body.options.insert("chain".into(), Value::Array(chain));
        }
        if let Some((id, index)) = &context.group {
            body.options
                .insert("group_id".into(), Value::String(id.clone()));
            body.options
                .insert("group_index".into(), Value::from(*index));
        }
        if let Some(outer) = &context.chord {
            body.options.insert("chord".into(), outer.clone());
        }
        body.options
            .entry("group_id")
            .or_insert_with(|| Value::String(group_id.clone()));
        if header.is_empty() {
            let body_context = Context {
                args: vec![Value::Array(Vec::new())],
                ..Context::default()
            };
            return self.apply(body, body_context).await;
        }
        self.client
            .backend()
            .set_chord_size(&group_id, header.len())
            .await?;
        let body = serde_json::to_value(&body).map_err(|error| {
            Error::new(ErrorKind::Encode, "could not encode a chord body").with_source(error)
        })?;
        let mut args = context.args;
        args.extend(chord.args.iter().cloned());
        let parts = header.into_iter().enumerate().map(|(index, part)| {
            let part_context = Context {
                args: args.clone(),
                chain: Vec::new(),
                group: Some((group_id.clone(), index as u64)),
                chord: Some(body.clone()),
            };
            (part, part_context)
        });
        self.apply_members(parts).await
    }

    /// One task: its message published to its queue.
    async fn apply_task(&self, signature: &Signature, context: Context) -> Result<()> {
        let signature = signature.with_partial_args(&context.args);
        let (queue, message) = self.message_for(&signature, context);
        self.client.publish(&queue, &message).await?;
        tracing::debug!(task = %signature.task, id = message.id(), %queue, "task sent from a signature");
        Ok(())
    }

    /// The message Celery's `send_task` writes for `signature`, and its queue:
    /// `options.queue`, else the task's own queue when known, else `celery`.
    pub(crate) fn message_for(
        &self,
        signature: &Signature,
        context: Context,
    ) -> (String, TaskMessage) {
        let spec = (self.lookup)(&signature.task).unwrap_or(&FOREIGN_TASK);
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
        let mut message = self.client.message(
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
        match &context.group {
            Some((id, index)) => {
                headers.group = Some(id.clone());
                headers.group_index = Some(*index);
            }
            None => {
                headers.group = signature.option_str("group_id").map(str::to_owned);
                headers.group_index = option("group_index").and_then(Value::as_u64);
            }
        }
        // The Python client's reply queue travels in the options of every step it built:
        // the rpc backend sends the step's result there.
        if let Some(reply_to) = signature.option_str("reply_to") {
            message.properties.reply_to = Some(reply_to.to_owned());
        }
        let mut chain = context.chain;
        if chain.is_empty() {
            chain = signature.linked("chain");
        }
        let non_empty = |list: Vec<Value>| (!list.is_empty()).then_some(list);
        message.embed = Embed {
            callbacks: non_empty(signature.linked("link")),
            errbacks: non_empty(signature.linked("link_error")),
            chain: non_empty(chain),
            chord: context.chord.or_else(|| option("chord").cloned()),
        };
        let queue = options.queue.unwrap_or_else(|| spec.queue.to_owned());
        (queue, message)
    }
}

/// The enclosing group and chord, set on the last step of a chain: it is the one whose
/// result counts (`prepare_steps` freezes the last task with them).
fn mark_enclosing(last: &mut Signature, context: &Context) {
    if let Some((id, index)) = &context.group {
        last.options
            .insert("group_id".into(), Value::String(id.clone()));
        last.options
            .insert("group_index".into(), Value::from(*index));
    }
    if let Some(chord) = &context.chord {
        last.options.insert("chord".into(), chord.clone());
    }
}

/// The steps of a chain, flattened (a chain in a chain is its steps), with a group
/// followed by a step turned into a chord with that step as body (Celery's upgrade).
fn unroll(chain: Signature) -> Result<Vec<Signature>> {
    let mut flat = Vec::new();
    let mut first = true;
    for step in chain.decoded_members("tasks")? {
        let step = if first {
            step.with_partial_args(&chain.args)
        } else {
            step
        };
        first = false;
        if step.subtask_type.as_deref() == Some("chain") {
            flat.extend(unroll(step)?);
        } else {
            flat.push(step);
        }
    }
    let mut steps: Vec<Signature> = Vec::with_capacity(flat.len());
    for step in flat {
        match steps.last_mut() {
            Some(previous) if previous.is_group() => {
                let group = std::mem::replace(previous, Signature::new("", Vec::new()));
                *previous = Signature::chord_of(group, step);
            }
            _ => steps.push(step),
        }
    }
    Ok(steps)
}

impl Signature {
    /// The member signatures under `kwargs[key]`.
    pub(crate) fn decoded_members(&self, key: &str) -> Result<Vec<Signature>> {
        match self.kwargs.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(values)) => values
                .iter()
                .map(|value| {
                    serde_json::from_value(value.clone()).map_err(|error| {
                        Error::new(
                            ErrorKind::Decode,
                            format!("a member of {} is not a signature: {error}", self.task),
                        )
                    })
                })
                .collect(),
            Some(_) => Err(Error::new(
                ErrorKind::Decode,
                format!("the {key} of {} is not a list", self.task),
            )),
        }
    }

    /// A chord of `header` (a group signature) and `body`, as `group | task` makes.
    pub(crate) fn chord_of(header: Signature, body: Signature) -> Signature {
        let tasks = header.kwargs.get("tasks").cloned().unwrap_or_default();
        let mut kwargs = Map::new();
        kwargs.insert("header".into(), tasks);
        kwargs.insert(
            "body".into(),
            serde_json::to_value(body).unwrap_or(Value::Null),
        );
        kwargs.insert("kwargs".into(), Value::Object(Map::new()));
        let mut chord = Signature::new("celery.chord", header.args.clone());
        chord.kwargs = kwargs;
        chord.subtask_type = Some("chord".into());
        chord.immutable = header.immutable;
        if let Some(id) = header.task_id() {
            chord
                .options
                .insert("task_id".into(), Value::String(id.to_owned()));
        }
        chord
    }
}
