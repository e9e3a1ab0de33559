//! Typed workflows: signatures, chains, groups and chords whose steps the compiler checks.
//!
//! Every piece of a workflow is a [`Canvas`]: it says what it takes from the step before
//! it ([`Canvas::Input`]: `()` for nothing, [`Takes<A>`] for a first argument of type
//! `A`), what it passes on ([`Canvas::Output`]) and what sending it returns
//! ([`Canvas::Handle`]). A chain step must take what the step before returns, so a chain
//! whose types do not fit is a compile error, not a task that fails at run time.

use std::marker::PhantomData;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Signature;
use super::result::{FromFrozen, GroupResult};
use crate::client::{AsyncResult, SendOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::celery_time;
use crate::spec::TaskSpec;

/// The [`Canvas::Input`] of a step that receives the previous step's result, of type `A`,
/// as its first argument (Celery's partial signature, `add.s(4)`).
pub struct Takes<A>(PhantomData<fn(A)>);

impl<A> std::fmt::Debug for Takes<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Takes<{}>", std::any::type_name::<A>())
    }
}

/// A piece of a workflow: a task signature, a chain, a group or a chord.
pub trait Canvas: Sized {
    /// What it takes from the step before it: `()` when it needs nothing (it can start a
    /// workflow), [`Takes<A>`] when the previous result becomes its first argument. An
    /// immutable signature ([`TaskCall::si`](crate::TaskCall::si)) fits any input.
    type Input;
    /// What it passes to the step after it: a task's result, or `Vec<R>` for a group.
    type Output;
    /// What sending it returns: an [`AsyncResult`] of its last task, or a
    /// [`GroupResult`] for a group.
    type Handle: FromFrozen;

    /// The signature as Celery writes it.
    fn into_signature(self) -> Result<Signature>;
}

/// A piece of a workflow that can come after a step returning `R`: its first argument is
/// `R` ([`Takes<R>`]), or it is immutable. `then`, `link` and `chord` bodies ask for it,
/// so a step that does not fit is a compile error that says so.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot follow a step that returns `{R}`",
    label = "this step's first argument is not `{R}`",
    note = "a workflow step receives the previous step's result as its first argument: use \
            `<task>_s(…)` of a task whose first argument is `{R}`, or `.si()` for a step \
            that ignores it"
)]
pub trait Follows<R>: Canvas {}

impl<R, O> Follows<R> for Sig<Takes<R>, O> {}
impl<R, O, H: FromFrozen> Follows<R> for Chain<Takes<R>, O, H> {}
impl<R, O> Follows<R> for Group<Takes<R>, O> {}
impl<R, O, H: FromFrozen> Follows<R> for Chord<Takes<R>, O, H> {}

/// A piece of a workflow that can be an errback: it takes the failed task's id, a
/// `String`, as its first argument (how Celery workers send errbacks).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an errback: an errback receives the failed task's id",
    label = "this step's first argument is not a `String`",
    note = "use `<task>_s(…)` of a task whose first argument is a `string` (the task id), \
            or `.si()` for an errback that ignores it"
)]
pub trait Errback: Canvas {}

impl<O> Errback for Sig<Takes<String>, O> {}
impl<O, H: FromFrozen> Errback for Chain<Takes<String>, O, H> {}
impl<O> Errback for Group<Takes<String>, O> {}
impl<O, H: FromFrozen> Errback for Chord<Takes<String>, O, H> {}

/// The signature of one task call, typed by its input and its result `R`.
///
/// Made by the generated client: `tasks.add(2, 2).s()` (all arguments),
/// `tasks.add_s(2)` (all but the first, which the previous step supplies), or
/// `tasks.add(2, 2).si()` (immutable: the previous result is not passed). A signature is
/// a plain value: clone it, keep it, send it later with
/// [`Client::send`](crate::Client::send) or as part of a [`chain`], [`group`] or
/// [`chord`].
pub struct Sig<I, R> {
    signature: Signature,
    /// An argument that could not be encoded, reported when the signature is sent.
    error: Option<String>,
    _types: PhantomData<fn(I) -> R>,
}

impl<I, R> Clone for Sig<I, R> {
    fn clone(&self) -> Self {
        Sig {
            signature: self.signature.clone(),
            error: self.error.clone(),
            _types: PhantomData,
        }
    }
}

impl<I, R> std::fmt::Debug for Sig<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Sig").field(&self.signature).finish()
    }
}

/// One argument as it travels, for generated partial signatures.
#[doc(hidden)]
pub fn arg<T: Serialize>(value: T) -> Result<Value> {
    serde_json::to_value(value).map_err(|error| {
        Error::new(ErrorKind::Encode, "could not encode a signature argument").with_source(error)
    })
}

impl<I, R> Sig<I, R> {
    /// A signature of the task `spec` with `args` (positional, as they travel) and the
    /// per-call `options`. The task's queue, priority, limits and `ignore_result` go in
    /// the signature's options, so whichever worker sends it routes it as the schema says.
    #[doc(hidden)]
    pub fn of_task(
        spec: &'static TaskSpec,
        args: impl IntoIterator<Item = Result<Value>>,
        kwargs: Map<String, Value>,
        options: &SendOptions,
    ) -> Self {
        let mut error = None;
        let args = args
            .into_iter()
            .filter_map(|arg| {
                arg.map_err(|e| error = Some(format!("{} of `{}`", e, spec.name)))
                    .ok()
            })
            .collect();
        let mut signature = Signature::new(spec.name, args);
        signature.kwargs = kwargs;
        let set = |signature: &mut Signature, name: &str, value: Value| {
            signature.options.insert(name.into(), value);
        };
        set(
            &mut signature,
            "queue",
            Value::from(options.queue.as_deref().unwrap_or(spec.queue)),
        );
        if let Some(priority) = options.priority.or(spec.priority) {
            set(&mut signature, "priority", Value::from(priority));
        }
        if let Some(limit) = spec.time_limit {
            set(
                &mut signature,
                "time_limit",
                Value::from(limit.as_secs_f64()),
            );
        }
        if let Some(limit) = spec.soft_time_limit {
            set(
                &mut signature,
                "soft_time_limit",
                Value::from(limit.as_secs_f64()),
            );
        }
        if spec.ignore_result {
            set(&mut signature, "ignore_result", Value::Bool(true));
        }
        let mut sig = Sig {
            signature,
            error,
            _types: PhantomData,
        };
        sig = sig.with_send_options(options);
        if options.expires.is_none()
            && options.expires_at.is_none()
            && let Some(expires) = spec.expires
        {
            sig = sig.expires(expires);
        }
        sig
    }

    fn with_send_options(mut self, options: &SendOptions) -> Self {
        if let Some(id) = &options.task_id {
            self = self.task_id(id.clone());
        }
        if let Some(delay) = options.countdown {
            self = self.countdown(delay);
        }
        if let Some(at) = options.eta {
            self = self.eta(at);
        }
        if let Some(after) = options.expires {
            self = self.expires(after);
        }
        if let Some(at) = options.expires_at {
            self = self.expires_at(at);
        }
        self
    }

    /// A signature of the task `spec` with `args` and no per-call options: what the
    /// generated `<task>_s(…)` methods build.
    #[doc(hidden)]
    pub fn partial(spec: &'static TaskSpec, args: impl IntoIterator<Item = Result<Value>>) -> Self {
        Sig::of_task(spec, args, Map::new(), &SendOptions::default())
    }

    /// A signature of any task, typed by the caller: for tasks outside the schema (a
    /// Python service's), whose argument and result types only the caller knows.
    ///
    /// ```
    /// use celerity::canvas::{Sig, Signature, Takes};
    /// use celerity::serde_json::json;
    ///
    /// // Python's `add.s(10)`, taking the previous result as its first argument.
    /// let add_ten: Sig<Takes<i64>, i64> =
    ///     Sig::from_signature(Signature::new("tasks.add", vec![json!(10)]));
    /// # let _ = add_ten;
    /// ```
    pub fn from_signature(signature: Signature) -> Self {
        Sig {
            signature,
            error: None,
            _types: PhantomData,
        }
    }

    /// The signature as Celery writes it.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    fn option(mut self, name: &str, value: Value) -> Self {
        self.signature.options.insert(name.into(), value);
        self
    }

    /// Runs no earlier than `delay` after it is sent.
    pub fn countdown(self, delay: std::time::Duration) -> Self {
        self.option("countdown", Value::from(delay.as_secs_f64()))
    }

    /// Runs no earlier than `at`.
    pub fn eta(self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.option("eta", Value::from(celery_time(at)))
    }

    /// Is revoked if not started within `after` of being sent.
    pub fn expires(self, after: std::time::Duration) -> Self {
        self.option("expires", Value::from(after.as_secs_f64()))
    }

    /// Is revoked if not started by `at`.
    pub fn expires_at(self, at: chrono::DateTime<chrono::Utc>) -> Self {
        self.option("expires", Value::from(celery_time(at)))
    }

    /// Sets the message priority (0–9).
    pub fn priority(self, priority: u8) -> Self {
        self.option("priority", Value::from(priority))
    }

    /// Sends to `queue` instead of the task's queue.
    pub fn queue(self, queue: impl Into<String>) -> Self {
        self.option("queue", Value::String(queue.into()))
    }

    /// Uses `id` as the task id.
    pub fn task_id(self, id: impl Into<String>) -> Self {
        self.option("task_id", Value::String(id.into()))
    }

    /// Adds a callback: sent with this task's result as its first argument when this task
    /// succeeds (Celery's `link`). Typed like a chain step.
    pub fn link<C: Follows<R>>(self, callback: C) -> Result<Self> {
        self.add_linked("link", callback.into_signature()?)
    }

    /// Adds an errback: sent with this task's id as its only argument when this task
    /// fails for good (Celery's `link_error`, as a worker sends it). The errback's first
    /// argument must be a string.
    pub fn link_error<C: Errback>(self, errback: C) -> Result<Self> {
        self.add_linked("link_error", errback.into_signature()?)
    }

    fn add_linked(self, option: &str, linked: Signature) -> Result<Self> {
        let mut list = self.signature.linked(option);
        list.push(serde_json::to_value(linked).map_err(|error| {
            Error::new(ErrorKind::Encode, "could not encode a linked signature").with_source(error)
        })?);
        Ok(self.option(option, Value::Array(list)))
    }
}

impl<R> Sig<(), R> {
    /// The same call, immutable: it ignores the previous step's result, so it fits after
    /// any step (Celery's `.si()`).
    pub fn immutable<J>(self) -> Sig<J, R> {
        let mut signature = self.signature;
        signature.immutable = true;
        Sig {
            signature,
            error: self.error,
            _types: PhantomData,
        }
    }
}

impl<I, R> Canvas for Sig<I, R> {
    type Input = I;
    type Output = R;
    type Handle = AsyncResult<R>;

    fn into_signature(self) -> Result<Signature> {
        match self.error {
            Some(error) => Err(Error::new(ErrorKind::Encode, error)),
            None => Ok(self.signature),
        }
    }
}

/// Steps run one after another, each receiving the previous result as its first
/// argument (Celery's `chain`). Made by [`chain`] and [`Chain::then`].
pub struct Chain<I, R, H> {
    steps: Result<Vec<Signature>>,
    _types: PhantomData<fn(I) -> (R, H)>,
}

impl<I, R, H> std::fmt::Debug for Chain<I, R, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Chain").field(&self.steps).finish()
    }
}

/// A chain starting with `first`; add steps with [`Chain::then`].
///
/// ```
/// use celerity::canvas::{chain, Sig, Signature, Takes};
/// use celerity::serde_json::json;
///
/// let add: Sig<(), i64> = Sig::from_signature(Signature::new("tasks.add", vec![json!(2), json!(2)]));
/// let mul: Sig<Takes<i64>, i64> = Sig::from_signature(Signature::new("tasks.mul", vec![json!(4)]));
/// let workflow = chain(add).then(mul); // add(2, 2), then mul(result, 4)
/// # let _ = workflow;
/// ```
pub fn chain<C: Canvas>(first: C) -> Chain<C::Input, C::Output, C::Handle> {
    Chain {
        steps: first.into_signature().map(|step| vec![step]),
        _types: PhantomData,
    }
}

impl<I, R, H> Chain<I, R, H> {
    /// Adds a step that receives this chain's result as its first argument: its
    /// [`Canvas::Input`] must be [`Takes<R>`] (or it is immutable), else this does not
    /// compile. A group then a step becomes a chord, as in Celery.
    pub fn then<C: Follows<R>>(self, next: C) -> Chain<I, C::Output, C::Handle> {
        let steps = self.steps.and_then(|mut steps| {
            steps.push(next.into_signature()?);
            Ok(steps)
        });
        Chain {
            steps,
            _types: PhantomData,
        }
    }
}

impl<I, R, H: FromFrozen> Canvas for Chain<I, R, H> {
    type Input = I;
    type Output = R;
    type Handle = H;

    fn into_signature(self) -> Result<Signature> {
        let steps = self.steps?;
        let mut signature = Signature::new("celery.chain", Vec::new());
        signature.kwargs.insert("tasks".into(), encode_all(steps)?);
        signature.subtask_type = Some("chain".into());
        Ok(signature)
    }
}

/// Calls run side by side; the next step receives their results as a `Vec<R>`, in order
/// (Celery's `group`). Made by [`group`].
pub struct Group<I, R> {
    members: Result<Vec<Signature>>,
    _types: PhantomData<fn(I) -> R>,
}

impl<I, R> std::fmt::Debug for Group<I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Group").field(&self.members).finish()
    }
}

/// A group of `members`, all of one type: task signatures, or chains ending in a task.
/// Sending it returns a [`GroupResult`] whose `get` yields every result, in order.
pub fn group<C>(members: impl IntoIterator<Item = C>) -> Group<C::Input, C::Output>
where
    C: Canvas<Handle = AsyncResult<<C as Canvas>::Output>>,
{
    Group {
        members: members.into_iter().map(Canvas::into_signature).collect(),
        _types: PhantomData,
    }
}

impl<I, R> Canvas for Group<I, R> {
    type Input = I;
    type Output = Vec<R>;
    type Handle = GroupResult<R>;

    fn into_signature(self) -> Result<Signature> {
        let mut signature = Signature::new("celery.group", Vec::new());
        signature
            .kwargs
            .insert("tasks".into(), encode_all(self.members?)?);
        signature.subtask_type = Some("group".into());
        Ok(signature)
    }
}

/// A group whose results, once all are in, go to one body as a `Vec<R>` (Celery's
/// `chord`). Made by [`chord`].
pub struct Chord<I, R, H> {
    signature: Result<Signature>,
    _types: PhantomData<fn(I) -> (R, H)>,
}

impl<I, R, H> std::fmt::Debug for Chord<I, R, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Chord").field(&self.signature).finish()
    }
}

/// A chord: `header` runs side by side, then `body` receives its results as a
/// `Vec<R>`, in header order. A body whose first argument is not `Vec<R>` does not
/// compile. Needs a result backend that can join chords (Redis, or memory within one
/// process); with `rpc://` sending fails, as in Celery. If a header task fails, the body
/// does not run: its result is a `ChordError` FAILURE and its errbacks are sent.
pub fn chord<I, R, B>(header: Group<I, R>, body: B) -> Chord<I, B::Output, B::Handle>
where
    B: Follows<Vec<R>>,
{
    let signature = (|| {
        let header = header.into_signature()?;
        let body = body.into_signature()?;
        Ok(Signature::chord_of(header, body))
    })();
    Chord {
        signature,
        _types: PhantomData,
    }
}

impl<I, R, H: FromFrozen> Canvas for Chord<I, R, H> {
    type Input = I;
    type Output = R;
    type Handle = H;

    fn into_signature(self) -> Result<Signature> {
        self.signature
    }
}

fn encode_all(signatures: Vec<Signature>) -> Result<Value> {
    serde_json::to_value(signatures).map_err(|error| {
        Error::new(ErrorKind::Encode, "could not encode a signature").with_source(error)
    })
}
