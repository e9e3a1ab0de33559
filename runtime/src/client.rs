//! Sending tasks and reading their results.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::backend::ResultBackend;
use crate::broker::Broker;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{
    Embed, ExceptionInfo, Headers, Properties, ResultMeta, TaskMessage, TaskState, args_repr,
    celery_time, kwargs_repr,
};
use crate::spec::TaskSpec;

/// Sends tasks and opens their results. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
    /// `(parent_id, root_id)` when sending from inside a task.
    lineage: Option<(String, String)>,
}

struct ClientInner {
    broker: Arc<dyn Broker>,
    backend: Arc<dyn ResultBackend>,
    /// `gen<pid>@<host>`, Celery's `origin` header.
    origin: String,
    /// This client's `reply_to` (Celery's `app.thread_oid`).
    oid: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("broker", &self.inner.broker.describe())
            .field("backend", &self.inner.backend.describe())
            .finish()
    }
}

/// Per-call options, over the task's schema defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendOptions {
    /// Use this id instead of a new UUID.
    pub task_id: Option<String>,
    /// Run no earlier than this.
    pub eta: Option<DateTime<Utc>>,
    /// Run no earlier than this long from now (turned into `eta`, as Celery's client does).
    pub countdown: Option<Duration>,
    /// Revoke if not started by this time.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoke if not started within this long from now.
    pub expires: Option<Duration>,
    /// Message priority (0–9).
    pub priority: Option<u8>,
    /// Send to this queue instead of the task's.
    pub queue: Option<String>,
}

impl Client {
    /// A client publishing to `broker` and reading results from `backend`.
    pub fn new(broker: Arc<dyn Broker>, backend: Arc<dyn ResultBackend>) -> Self {
        let host = crate::host::hostname();
        // The rpc backend's reply queue, else an id of this client's own.
        let oid = backend
            .reply_to()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        Client {
            inner: Arc::new(ClientInner {
                broker,
                backend,
                origin: format!("gen{}@{host}", std::process::id()),
                oid,
            }),
            lineage: None,
        }
    }

    /// A client whose messages are children of task `parent_id` in workflow `root_id`.
    pub(crate) fn child_of(&self, parent_id: &str, root_id: &str) -> Client {
        Client {
            inner: self.inner.clone(),
            lineage: Some((parent_id.to_owned(), root_id.to_owned())),
        }
    }

    /// The broker this client publishes to.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The backend this client reads results from.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.inner.backend
    }

    /// Builds the protocol v2 message for a task, with every header Celery sets.
    pub fn message(
        &self,
        spec: &TaskSpec,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: &SendOptions,
    ) -> TaskMessage {
        let id = options
            .task_id
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let now = Utc::now();
        let eta = options.eta.or_else(|| {
            options
                .countdown
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or_default())
        });
        let expires_at = options.expires_at.or_else(|| {
            options
                .expires
                .or(spec.expires)
                .map(|d| now + chrono::Duration::from_std(d).unwrap_or_default())
        });
        let priority = options.priority.or(spec.priority);
        let (parent_id, root_id) = match &self.lineage {
            Some((parent, root)) => (Some(parent.clone()), root.clone()),
            None => (None, id.clone()),
        };
        let headers = Headers {
            lang: Some("rs".into()),
            task: spec.name.to_owned(),
            id: id.clone(),
            shadow: None,
            eta: eta.map(celery_time),
            expires: expires_at.map(celery_time),
            group: None,
            group_index: None,
            retries: 0,
            timelimit: (
                spec.time_limit.map(|d| d.as_secs_f64()),
                spec.soft_time_limit.map(|d| d.as_secs_f64()),
            ),
            root_id: Some(root_id),
            parent_id,
            argsrepr: Some(args_repr(&args)),
            kwargsrepr: Some(kwargs_repr(&kwargs)),
            origin: Some(self.inner.origin.clone()),
            ignore_result: Some(spec.ignore_result),
            replaced_task_nesting: Some(0),
            stamped_headers: None,
            stamps: Some(Value::Object(Map::new())),
            extra: Map::new(),
        };
        let expiration = expires_at.map(|at| (at - now).num_milliseconds().max(0).to_string());
        TaskMessage {
            headers,
            properties: Properties {
                correlation_id: Some(id),
                reply_to: Some(self.inner.oid.clone()),
                delivery_mode: Some(2),
                priority: Some(priority.unwrap_or(0)),
                expiration,
            },
            args,
            kwargs,
            embed: Embed::default(),
        }
    }

    /// Publishes an already built message to `queue`.
    pub async fn publish(&self, queue: &str, message: &TaskMessage) -> Result<()> {
        self.inner.broker.publish(queue, encode(message)?).await
    }

    /// Publishes built messages, each to its queue, in as few round trips as the broker
    /// allows (one batch per queue, in order).
    pub(crate) async fn publish_all(&self, messages: Vec<(String, TaskMessage)>) -> Result<()> {
        let mut by_queue: Vec<(String, Vec<crate::protocol::RawMessage>)> = Vec::new();
        for (queue, message) in messages {
            let raw = encode(&message)?;
            match by_queue.iter_mut().find(|(q, _)| *q == queue) {
                Some((_, batch)) => batch.push(raw),
                None => by_queue.push((queue, vec![raw])),
            }
        }
        for (queue, batch) in by_queue {
            self.inner.broker.publish_batch(&queue, batch).await?;
        }
        Ok(())
    }

    /// A call of a task with untyped positional arguments: the escape hatch for tasks
    /// that are not in a schema (for example, tasks of a Python service). Set options and
    /// keyword arguments on the call, then `.await` it, as with a generated call.
    ///
    /// ```
    /// # use celerity::{App, TaskSpec};
    /// # use serde_json::json;
    /// static RESIZE: TaskSpec = TaskSpec::new("images.resize", &[]);
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> celerity::Result<()> {
    /// let client = App::memory().client();
    /// let sent = client
    ///     .send_task::<bool>(&RESIZE, vec![json!("cat.png")])
    ///     .kwarg("width", json!(640))
    ///     .queue("images")
    ///     .await?;
    /// # let _ = sent; Ok(()) }
    /// ```
    pub fn send_task<R: Send + 'static>(
        &self,
        spec: &'static TaskSpec,
        args: Vec<Value>,
    ) -> TaskCall<Vec<Value>, R> {
        TaskCall::new(self, spec, args)
    }

    /// Publishes a call's message and returns its result handle.
    async fn send_call<R>(
        &self,
        spec: &TaskSpec,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: SendOptions,
    ) -> Result<AsyncResult<R>> {
        let message = self.message(spec, args, kwargs, &options);
        let queue = options.queue.as_deref().unwrap_or(spec.queue);
        self.publish(queue, &message).await?;
        tracing::debug!(task = spec.name, id = message.id(), queue, "task sent");
        Ok(self.result_of(spec, message.headers.id))
    }

    /// Sends many calls at once: their messages are built first, then published per
    /// queue in as few round trips as the broker allows (one pipeline on Redis). Results
    /// come back in the order of `calls`.
    ///
    /// ```
    /// # use celerity::{App, ArgSpec, TaskCall, TaskSpec};
    /// # static ADD: TaskSpec = TaskSpec::new("tasks.add", &[ArgSpec::new("x", true), ArgSpec::new("y", true)]);
    /// # #[derive(serde::Serialize)] struct AddArgs { x: i64, y: i64 }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> celerity::Result<()> {
    /// let client = App::memory().client();
    /// let calls = (0..100).map(|i| TaskCall::<_, i64>::new(&client, &ADD, AddArgs { x: i, y: i }));
    /// let results = client.send_batch(calls).await?;
    /// assert_eq!(results.len(), 100);
    /// # Ok(()) }
    /// ```
    pub async fn send_batch<C: IntoTaskCall>(
        &self,
        calls: impl IntoIterator<Item = C>,
    ) -> Result<Vec<AsyncResult<C::Output>>> {
        let mut by_queue: Vec<(String, Vec<crate::protocol::RawMessage>)> = Vec::new();
        let mut results = Vec::new();
        for call in calls {
            let call = call.into_task_call();
            let args = call.encode_args()?;
            let message = self.message(call.spec, args, call.kwargs.clone(), &call.options);
            let queue = call.options.queue.as_deref().unwrap_or(call.spec.queue);
            let raw = encode(&message)?;
            match by_queue.iter_mut().find(|(q, _)| q == queue) {
                Some((_, messages)) => messages.push(raw),
                None => by_queue.push((queue.to_owned(), vec![raw])),
            }
            results.push(self.result_of(call.spec, message.headers.id));
        }
        for (queue, messages) in by_queue {
            self.inner.broker.publish_batch(&queue, messages).await?;
        }
        Ok(results)
    }

    /// The result handle of task `id`.
    pub fn result<R>(&self, id: impl Into<String>) -> AsyncResult<R> {
        AsyncResult {
            id: id.into(),
            backend: self.inner.backend.clone(),
            broker: self.inner.broker.clone(),
            ignored_by: None,
            parent: None,
            _result: PhantomData,
        }
    }

    /// Sends a workflow: a signature, [`chain`](crate::canvas::chain),
    /// [`group`](crate::canvas::group) or [`chord`](crate::canvas::chord) that needs no
    /// input. Every task gets its id before anything is published, and the handle comes
    /// back: the [`AsyncResult`] of the last task (with its parents), or a
    /// [`GroupResult`](crate::canvas::GroupResult).
    ///
    /// ```
    /// # use celerity::{App, ArgSpec, TaskSpec, TaskCall};
    /// use celerity::canvas::{chain, Sig, Signature, Takes};
    /// # static ADD: TaskSpec = TaskSpec::new("tasks.add", &[ArgSpec::new("x", true), ArgSpec::new("y", true)]);
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> celerity::Result<()> {
    /// let client = App::memory().client();
    /// let first: Sig<(), i64> = TaskCall::new(&client, &ADD, [2, 2]).s();
    /// let then: Sig<Takes<i64>, i64> = Sig::from_signature(Signature::new("tasks.add", vec![4.into()]));
    /// let last = client.send(chain(first).then(then)).await?;
    /// assert!(last.parent().is_some());
    /// # Ok(()) }
    /// ```
    pub async fn send<C>(&self, canvas: C) -> Result<C::Handle>
    where
        C: crate::canvas::Canvas<Input = ()>,
    {
        use crate::canvas::FromFrozen;
        let mut signature = canvas.into_signature()?;
        crate::canvas::freeze(&mut signature);
        let handle = C::Handle::from_frozen(&signature, self);
        let applier = crate::canvas::Applier {
            client: self,
            lookup: &|_| None,
        };
        applier
            .apply(signature, crate::canvas::Context::default())
            .await?;
        Ok(handle)
    }

    /// The result handle of task `id`, sent as a call of `spec`.
    fn result_of<R>(&self, spec: &TaskSpec, id: String) -> AsyncResult<R> {
        AsyncResult {
            ignored_by: spec.ignore_result.then_some(spec.name),
            ..self.result(id)
        }
    }
}

/// The arguments of a call of `spec` as Celery sends them: positionally, in schema order
/// (an argument struct), or as given (a list).
pub fn encode_args<A: Serialize + ?Sized>(spec: &TaskSpec, args: &A) -> Result<Vec<Value>> {
    match serde_json::to_value(args) {
        Ok(Value::Object(map)) => Ok(map.into_iter().map(|(_, v)| v).collect()),
        Ok(Value::Array(items)) => Ok(items),
        Ok(_) => Err(Error::new(
            ErrorKind::Encode,
            format!("arguments of `{}` are not a struct", spec.name),
        )),
        Err(e) => Err(Error::new(
            ErrorKind::Encode,
            format!("could not encode the arguments of `{}`", spec.name),
        )
        .with_source(e)),
    }
}

fn encode(message: &TaskMessage) -> Result<crate::protocol::RawMessage> {
    message.to_raw().map_err(|e| {
        Error::new(ErrorKind::Encode, "could not encode the task message").with_source(e)
    })
}

/// Types that can be built from a [`Client`]; the generated `TasksRegistry` is one, which
/// is how tasks get a typed client injected.
pub trait FromClient {
    /// Wraps `client`.
    fn from_client(client: Client) -> Self;
}

impl FromClient for Client {
    fn from_client(client: Client) -> Self {
        client
    }
}

/// A task call being prepared: set per-call options, then `.await` it (or call
/// [`send`](TaskCall::send)) to publish it.
#[must_use = "a task call does nothing until it is awaited"]
pub struct TaskCall<A, R> {
    client: Client,
    spec: &'static TaskSpec,
    args: A,
    kwargs: Map<String, Value>,
    options: SendOptions,
    _result: PhantomData<fn() -> R>,
}

impl<A, R> std::fmt::Debug for TaskCall<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskCall")
            .field("task", &self.spec.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<A: Serialize + Send + 'static, R: Send + 'static> TaskCall<A, R> {
    /// A call of the task `spec` with `args` (a generated argument struct).
    pub fn new(client: &Client, spec: &'static TaskSpec, args: A) -> Self {
        TaskCall {
            client: client.clone(),
            spec,
            args,
            kwargs: Map::new(),
            options: SendOptions::default(),
            _result: PhantomData,
        }
    }

    /// Runs no earlier than `delay` from now.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.options.countdown = Some(delay);
        self
    }

    /// Runs no earlier than `at`.
    pub fn eta(mut self, at: DateTime<Utc>) -> Self {
        self.options.eta = Some(at);
        self
    }

    /// Is revoked if not started within `after` from now.
    pub fn expires(mut self, after: Duration) -> Self {
        self.options.expires = Some(after);
        self
    }

    /// Is revoked if not started by `at`.
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.options.expires_at = Some(at);
        self
    }

    /// Sets the message priority (0–9).
    pub fn priority(mut self, priority: u8) -> Self {
        self.options.priority = Some(priority);
        self
    }

    /// Sends to `queue` instead of the task's queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options.queue = Some(queue.into());
        self
    }

    /// Uses `id` as the task id.
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.options.task_id = Some(id.into());
        self
    }

    /// Sets every option at once.
    pub fn with_options(mut self, options: SendOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a keyword argument, sent beside the positional ones: for tasks outside a
    /// schema (a schema's arguments all travel by position, as Celery sends them).
    pub fn kwarg(mut self, name: impl Into<String>, value: Value) -> Self {
        self.kwargs.insert(name.into(), value);
        self
    }

    /// Adds keyword arguments, as [`kwarg`](Self::kwarg) does one.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs.extend(kwargs);
        self
    }

    /// The options set so far.
    pub fn options(&self) -> &SendOptions {
        &self.options
    }

    /// The arguments as they will be sent.
    pub fn args(&self) -> &A {
        &self.args
    }

    /// The arguments to send; the generated setters of optional arguments change them.
    pub fn args_mut(&mut self) -> &mut A {
        &mut self.args
    }

    /// Arguments as Celery sends them: positionally, in schema order (an argument struct),
    /// or as given (a list).
    pub fn encode_args(&self) -> Result<Vec<Value>> {
        encode_args(self.spec, &self.args)
    }

    /// This call as a signature, to send later or as a step of a workflow (Celery's
    /// `.s()` with every argument). Its options go with it.
    pub fn s(self) -> crate::canvas::Sig<(), R> {
        let args = match self.encode_args() {
            Ok(args) => args.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        };
        crate::canvas::Sig::of_task(self.spec, args, self.kwargs, &self.options)
    }

    /// This call as an immutable signature: as a workflow step it ignores the previous
    /// step's result, so it fits after any step (Celery's `.si()`).
    pub fn si<I>(self) -> crate::canvas::Sig<I, R> {
        self.s().immutable()
    }

    /// Publishes the task and returns its result handle.
    pub async fn send(self) -> Result<AsyncResult<R>> {
        let args = self.encode_args()?;
        self.client
            .send_call(self.spec, args, self.kwargs, self.options)
            .await
    }
}

/// A prepared call that [`Client::send_batch`] can send: a [`TaskCall`], or the call type
/// generated for each task of a schema (e.g. `SendEmailCall`), which wraps one.
pub trait IntoTaskCall {
    /// The task's argument struct.
    type Args: Serialize + Send + 'static;
    /// The task's result type.
    type Output: Send + 'static;

    /// The call as a [`TaskCall`].
    fn into_task_call(self) -> TaskCall<Self::Args, Self::Output>;
}

impl<A: Serialize + Send + 'static, R: Send + 'static> IntoTaskCall for TaskCall<A, R> {
    type Args = A;
    type Output = R;

    fn into_task_call(self) -> TaskCall<A, R> {
        self
    }
}

impl<A: Serialize + Send + 'static, R: Send + 'static> IntoFuture for TaskCall<A, R> {
    type Output = Result<AsyncResult<R>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A failure as the worker recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The exception type name, e.g. `SmtpUnavailable` or Python's `ValueError`.
    pub exc_type: String,
    /// The module of the exception type, when recorded.
    pub exc_module: Option<String>,
    /// The exception message, as Python's `str(exc)` prints it: `card declined` for one
    /// argument, `('account acme over quota', 5)` for several.
    pub message: String,
    /// The exception's arguments (Python's `exc.args`), as values: `["account acme over
    /// quota", 5]` for `ValueError('account acme over quota', 5)`.
    pub args: Vec<Value>,
    /// The traceback text, when recorded.
    pub traceback: Option<String>,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.exc_type, self.message)
    }
}

impl TaskFailure {
    fn from_meta(meta: &ResultMeta) -> TaskFailure {
        let exception = meta.exception_info().unwrap_or_else(|| ExceptionInfo {
            exc_type: "Exception".into(),
            exc_message: Value::Array(vec![meta.result.clone()]),
            exc_module: None,
        });
        TaskFailure {
            message: exception.message(),
            args: exception.args(),
            exc_type: exception.exc_type,
            exc_module: exception.exc_module,
            traceback: meta.traceback.clone(),
        }
    }
}

/// Why [`AsyncResult::get`] returned no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// The task failed.
    #[error("task failed: {0}")]
    Failed(TaskFailure),
    /// The task was revoked or expired before it ran.
    #[error("task was revoked: {0}")]
    Revoked(TaskFailure),
    /// No ready result within the timeout.
    #[error("no result within {0:?}")]
    Timeout(Duration),
    /// The stored result does not decode as the task's result type.
    #[error("the result does not decode as the task's result type: {0}")]
    Decode(String),
    /// The task is declared with `ignore_result`: its worker stores no result, so there is
    /// nothing to wait for (its state stays PENDING). Returned at once instead of waiting
    /// out the timeout.
    #[error("the task `{0}` ignores its result (`ignore_result`): nothing is stored to wait for")]
    Ignored(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] Error),
}

/// What [`AsyncResult::poll`] found.
#[derive(Debug)]
pub enum TaskProgress<R> {
    /// Not finished: PENDING (unknown ids too, as in Celery), RECEIVED, STARTED or RETRY.
    Running(TaskState),
    /// Finished in this state, with what [`AsyncResult::get`] returns: the typed result
    /// of a SUCCESS, or why there is none (FAILURE, REVOKED, a result that does not
    /// decode).
    Finished(TaskState, Result<R, ResultError>),
}

impl<R> TaskProgress<R> {
    /// The task's state.
    pub fn state(&self) -> &TaskState {
        match self {
            TaskProgress::Running(state) | TaskProgress::Finished(state, _) => state,
        }
    }
}

/// The handle of a sent task: its state and, once ready, its typed result.
pub struct AsyncResult<R> {
    id: String,
    backend: Arc<dyn ResultBackend>,
    broker: Arc<dyn Broker>,
    /// The task's name when it was sent as a call of an `ignore_result` task: no result
    /// will ever be stored.
    ignored_by: Option<&'static str>,
    /// The result of the chain step before this one, for a step of a sent chain.
    parent: Option<Box<AsyncResult<Value>>>,
    _result: PhantomData<fn() -> R>,
}

impl<R> Clone for AsyncResult<R> {
    fn clone(&self) -> Self {
        AsyncResult {
            id: self.id.clone(),
            backend: self.backend.clone(),
            broker: self.broker.clone(),
            ignored_by: self.ignored_by,
            parent: self.parent.clone(),
            _result: PhantomData,
        }
    }
}

impl<R> AsyncResult<R> {
    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The result of the step before this one in the chain it was sent in (Celery's
    /// `AsyncResult.parent`), untyped since each step has its own result type; `None` for
    /// a first step or a single task.
    pub fn parent(&self) -> Option<&AsyncResult<Value>> {
        self.parent.as_deref()
    }

    pub(crate) fn with_parent(mut self, parent: Option<AsyncResult<Value>>) -> Self {
        self.parent = parent.map(Box::new);
        self
    }
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("id", &self.id).finish()
    }
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// The current state; PENDING when nothing is stored yet.
    pub async fn state(&self) -> Result<TaskState> {
        Ok(self
            .backend
            .get(&self.id)
            .await?
            .map_or(TaskState::Pending, |m| m.status))
    }

    /// Whether the task has finished (SUCCESS, FAILURE or REVOKED).
    pub async fn ready(&self) -> Result<bool> {
        Ok(self.state().await?.is_ready())
    }

    /// Whether the task finished with SUCCESS.
    pub async fn successful(&self) -> Result<bool> {
        Ok(self.state().await? == TaskState::Success)
    }

    /// Waits up to `timeout` for the task to finish and returns its typed result.
    pub async fn get(&self, timeout: Duration) -> Result<R, ResultError> {
        if let Some(task) = self.ignored_by {
            return Err(ResultError::Ignored(task.to_owned()));
        }
        let meta = tokio::time::timeout(timeout, self.backend.wait_ready(&self.id))
            .await
            .map_err(|_| ResultError::Timeout(timeout))??;
        Self::outcome(meta)
    }

    /// The current state and, once the task has finished, its typed outcome, from one
    /// read of the backend and without waiting: for status endpoints that clients poll.
    pub async fn poll(&self) -> Result<TaskProgress<R>> {
        Ok(match self.backend.get(&self.id).await? {
            Some(meta) if meta.status.is_ready() => {
                let state = meta.status.clone();
                TaskProgress::Finished(state, Self::outcome(meta))
            }
            Some(meta) => TaskProgress::Running(meta.status),
            None => TaskProgress::Running(TaskState::Pending),
        })
    }

    /// The typed outcome of a finished task's stored result.
    fn outcome(meta: ResultMeta) -> Result<R, ResultError> {
        match meta.status {
            // Results of Python tasks carry dates, times and UUIDs in kombu's envelopes.
            TaskState::Success => {
                crate::protocol::decode_kombu(meta.result, serde_json::from_value)
                    .map_err(|e| ResultError::Decode(e.to_string()))
            }
            TaskState::Revoked => Err(ResultError::Revoked(TaskFailure::from_meta(&meta))),
            _ => Err(ResultError::Failed(TaskFailure::from_meta(&meta))),
        }
    }

    /// Revokes the task: every worker that has not started it yet discards it and records
    /// REVOKED. A task already running is not interrupted.
    pub async fn revoke(&self) -> Result<()> {
        self.broker
            .broadcast(crate::broker::Control::Revoke {
                task_ids: vec![self.id.clone()],
            })
            .await
    }

    /// Deletes the stored result.
    pub async fn forget(&self) -> Result<()> {
        self.backend.forget(&self.id).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{App, ArgSpec, ResultError, TaskCall, TaskSpec};

    static NOTE: TaskSpec =
        TaskSpec::new("tasks.note", &[ArgSpec::new("text", true)]).ignore_result(true);
    static ECHO: TaskSpec = TaskSpec::new("tasks.echo", &[ArgSpec::new("text", true)]);

    #[derive(serde::Serialize)]
    struct TextArgs {
        text: String,
    }

    fn call(app: &App, spec: &'static TaskSpec) -> TaskCall<TextArgs, String> {
        TaskCall::new(&app.client(), spec, TextArgs { text: "hi".into() })
    }

    #[tokio::test]
    async fn waiting_for_a_task_that_ignores_its_result_fails_at_once() {
        let app = App::memory();
        let sent = call(&app, &NOTE).await.unwrap();
        // A timeout of an hour: the test would hang if `get` waited for it.
        match sent.get(Duration::from_secs(3600)).await {
            Err(ResultError::Ignored(task)) => assert_eq!(task, "tasks.note"),
            other => panic!("expected Ignored, got {other:?}"),
        }
        let batch = app.client().send_batch([call(&app, &NOTE)]).await.unwrap();
        assert!(matches!(
            batch[0].get(Duration::from_secs(3600)).await,
            Err(ResultError::Ignored(_))
        ));
    }

    #[test]
    fn a_failure_keeps_the_exception_args_as_values() {
        // Written by a Celery 5.7 worker for `raise ValueError('account acme over quota', 5)`.
        let captured = r#"{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["account acme over quota", 5], "exc_module": "builtins"}, "traceback": "Traceback (most recent call last):\n  File \"/tmp/cap/capapp.py\", line 14, in fail\n    raise ValueError('account acme over quota', 5)\nValueError: ('account acme over quota', 5)\n", "children": [], "date_done": "2026-11-29T19:56:58.553402+00:00", "task_id": "cap-fail"}"#;
        let meta = serde_json::from_str(captured).unwrap();
        let failure = super::TaskFailure::from_meta(&meta);
        assert_eq!(
            failure.args,
            [
                serde_json::json!("account acme over quota"),
                serde_json::json!(5)
            ]
        );
        assert_eq!(failure.message, "('account acme over quota', 5)");
        assert_eq!(
            failure.to_string(),
            "ValueError: ('account acme over quota', 5)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_another_task_waits_out_its_timeout() {
        let app = App::memory();
        let sent = call(&app, &ECHO).await.unwrap();
        assert!(matches!(
            sent.get(Duration::from_secs(5)).await,
            Err(ResultError::Timeout(_))
        ));
    }
}
