//! Task states and stored results in Celery's format (`celery/backends/base.py`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::json::{python_str, tuple_repr};

/// A task's state, as Celery names it (`celery/states.py`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Unknown to the backend: waiting, or never sent.
    Pending,
    /// Received by a worker (Celery writes this only with events).
    Received,
    /// Running (written only when the task tracks it).
    Started,
    /// Failed and will be retried.
    Retry,
    /// Failed for good.
    Failure,
    /// Finished with a result.
    Success,
    /// Revoked or expired; never ran.
    Revoked,
    /// A state this version does not know (custom states set by Python tasks).
    Other(String),
}

impl TaskState {
    /// Celery's name of the state.
    pub fn as_str(&self) -> &str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Retry => "RETRY",
            TaskState::Failure => "FAILURE",
            TaskState::Success => "SUCCESS",
            TaskState::Revoked => "REVOKED",
            TaskState::Other(name) => name,
        }
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> TaskState {
        match name {
            "PENDING" => TaskState::Pending,
            "RECEIVED" => TaskState::Received,
            "STARTED" => TaskState::Started,
            "RETRY" => TaskState::Retry,
            "FAILURE" => TaskState::Failure,
            "SUCCESS" => TaskState::Success,
            "REVOKED" => TaskState::Revoked,
            other => TaskState::Other(other.to_owned()),
        }
    }

    /// Whether the task is finished (`celery.states.READY_STATES`).
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked
        )
    }

    /// Whether the state fails what depends on it: FAILURE or REVOKED (Celery's
    /// `PROPAGATE_STATES`).
    pub fn propagates(&self) -> bool {
        matches!(self, TaskState::Failure | TaskState::Revoked)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TaskState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(TaskState::parse(&String::deserialize(deserializer)?))
    }
}

/// An exception as Celery stores it: `{"exc_type", "exc_message": [...], "exc_module"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionInfo {
    /// The exception's class name, e.g. `ValueError`.
    pub exc_type: String,
    /// The exception's args; Celery always writes a list.
    pub exc_message: Value,
    /// The module of the class, e.g. `builtins`.
    #[serde(default)]
    pub exc_module: Option<String>,
}

impl ExceptionInfo {
    /// An exception `exc_type` from `module` with one message argument.
    pub fn new(
        exc_type: impl Into<String>,
        module: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ExceptionInfo {
            exc_type: exc_type.into(),
            exc_message: Value::Array(vec![Value::String(message.into())]),
            exc_module: Some(module.into()),
        }
    }

    /// The exception's args, as Python's `exception_to_python` passes them to the class:
    /// the list Celery writes, or a lone value (very old Celery wrote a string) as the
    /// only one.
    pub fn args(&self) -> Vec<Value> {
        match &self.exc_message {
            Value::Array(args) => args.clone(),
            other => vec![other.clone()],
        }
    }

    /// The message as Python's `str(exc)` prints it (`BaseException.__str__`): nothing
    /// for no args, the one arg's `str()` (`a` for `ValueError('a')`), else the tuple's
    /// `repr` (`('a', 5)` for `ValueError('a', 5)`). Classes with their own `__str__`
    /// (`KeyError` quotes its key) are not imitated; [`args`](Self::args) has the values.
    pub fn message(&self) -> String {
        match &self.exc_message {
            Value::Array(args) => match args.as_slice() {
                [] => String::new(),
                [one] => python_str(one),
                several => tuple_repr(several),
            },
            other => python_str(other),
        }
    }

    /// Python's `repr()` of the exception, `ValueError('boom')`, as Celery's `ChordError`
    /// message quotes a failed part's.
    pub fn python_repr(&self) -> String {
        let args = match &self.exc_message {
            Value::Array(args) => crate::protocol::args_repr(args),
            other => crate::protocol::args_repr(std::slice::from_ref(other)),
        };
        let args = args
            .strip_suffix(",)")
            .map_or(args.clone(), |a| format!("{a})"));
        format!("{}{args}", self.exc_type)
    }
}

/// A time as Celery writes it in `eta`, `expires` and `date_done`: ISO 8601 with
/// microseconds and an explicit `+00:00` offset (Python's `isoformat()` of an aware UTC time).
pub fn celery_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

/// Reads a time as Celery writes or accepts it: RFC 3339, or a naive ISO 8601 time, which
/// Celery treats as UTC (`celery/utils/time.py::maybe_make_aware`).
pub fn parse_celery_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// What a result backend stores under `celery-task-meta-<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMeta {
    /// The state.
    pub status: TaskState,
    /// The return value, the exception (FAILURE, RETRY, REVOKED) or state metadata.
    #[serde(default)]
    pub result: Value,
    /// Formatted traceback, for failures that have one.
    #[serde(default)]
    pub traceback: Option<String>,
    /// Tasks sent by this one, as `[[id, parent], null]` tuples.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub children: Vec<Value>,
    /// ISO 8601 time the task became ready; `null` until then.
    #[serde(default)]
    pub date_done: Option<String>,
    /// Fields Celery adds when set: `group_id`, `parent_id`, and the extended fields
    /// (`name`, `args`, `kwargs`, `worker`, `retries`, `queue`), in that order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The task id. Written last, after the fields above, as Celery adds it to the meta
    /// `_get_result_meta` built (`BaseKeyValueStoreBackend._store_result`).
    pub task_id: String,
}

/// What Celery's `Backend._get_result_meta` records about the request a result belongs
/// to: its group and parent, when it has them, and with `result_extended` the request's
/// own fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RequestMeta {
    /// The group the task is a member of; written only when set (`request.group`).
    pub group_id: Option<String>,
    /// The task that sent this one; written only when set (`request.parent_id`).
    pub parent_id: Option<String>,
    /// The extended fields, when the worker has `result_extended` on.
    pub extended: Option<ExtendedMeta>,
}

/// The fields `result_extended` adds, in Celery's order. A field the request lacks is
/// written `null`, as Celery writes it: an unknown task's request has none of them, a
/// chain step failed by an earlier step has no worker and no queue yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct ExtendedMeta {
    /// The task name (`request.task`).
    pub name: Option<String>,
    /// The positional arguments, as the message carried them.
    pub args: Option<Vec<Value>>,
    /// The keyword arguments.
    pub kwargs: Option<Map<String, Value>>,
    /// The node name of the worker that ran it (`request.hostname`).
    pub worker: Option<String>,
    /// How many times it had been retried.
    pub retries: Option<u32>,
    /// Where it was delivered from (`request.delivery_info['routing_key']`).
    pub queue: Option<String>,
}

/// Celery 5.7 writes `"children": null` when a worker records REVOKED for a task revoked
/// before it arrived (`celery/worker/control.py::_revoke` stores it without a request).
fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Value>, D::Error> {
    Ok(Option::<Vec<Value>>::deserialize(deserializer)?.unwrap_or_default())
}

impl ResultMeta {
    /// A result in `status` with `result`; `date_done` is set for ready states.
    pub fn new(task_id: impl Into<String>, status: TaskState, result: Value) -> Self {
        let date_done = status.is_ready().then(|| celery_time(chrono::Utc::now()));
        ResultMeta {
            status,
            result,
            traceback: None,
            children: Vec::new(),
            date_done,
            extra: Map::new(),
            task_id: task_id.into(),
        }
    }

    /// The same result with what Celery records about its `request`: `group_id` and
    /// `parent_id` when it has them (with or without `result_extended`), then the
    /// extended fields when there are any.
    pub(crate) fn with_request(mut self, request: &RequestMeta) -> Self {
        // Celery tests truthiness (`if request and getattr(request, 'group', None)`).
        let lineage = [
            ("group_id", &request.group_id),
            ("parent_id", &request.parent_id),
        ];
        for (key, id) in lineage {
            if let Some(id) = id.as_deref().filter(|id| !id.is_empty()) {
                self.extra
                    .insert(key.to_owned(), Value::String(id.to_owned()));
            }
        }
        if let Some(extended) = &request.extended
            && let Ok(Value::Object(fields)) = serde_json::to_value(extended)
        {
            self.extra.extend(fields);
        }
        self
    }

    /// A FAILURE (or RETRY/REVOKED) result carrying `exception`.
    pub fn exception(
        task_id: impl Into<String>,
        status: TaskState,
        exception: &ExceptionInfo,
        traceback: Option<String>,
    ) -> Self {
        let mut meta = ResultMeta::new(
            task_id,
            status,
            serde_json::to_value(exception).unwrap_or(Value::Null),
        );
        meta.traceback = traceback;
        meta
    }

    /// The exception stored in a FAILURE, RETRY or REVOKED result.
    pub fn exception_info(&self) -> Option<ExceptionInfo> {
        ExceptionInfo::deserialize(&self.result).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stores_failures_in_celerys_format() {
        let meta = ResultMeta::exception(
            "id-1",
            TaskState::Failure,
            &ExceptionInfo::new("ValueError", "builtins", "bad"),
            Some("Traceback".into()),
        );
        let json = serde_json::to_value(&meta).unwrap();
        assert_eq!(json["status"], "FAILURE");
        assert_eq!(
            json["result"],
            json!({"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"})
        );
        assert_eq!(json["children"], json!([]));
        assert!(json["date_done"].as_str().unwrap().ends_with("+00:00"));
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "status",
                "result",
                "traceback",
                "children",
                "date_done",
                "task_id"
            ]
        );
    }

    /// `meta` as the Redis backend writes it, its `date_done` set to `date_done`.
    fn written(mut meta: ResultMeta, date_done: Option<&str>) -> String {
        meta.date_done = date_done.map(str::to_owned);
        String::from_utf8(crate::protocol::to_python_json(&meta).unwrap()).unwrap()
    }

    fn extended(args: Value, kwargs: Value, worker: Option<&str>) -> ExtendedMeta {
        ExtendedMeta {
            name: Some("cap.add".into()),
            args: serde_json::from_value(args).unwrap(),
            kwargs: serde_json::from_value(kwargs).unwrap(),
            worker: worker.map(str::to_owned),
            retries: Some(0),
            queue: worker.map(|_| "capq".to_owned()),
        }
    }

    #[test]
    fn writes_group_and_parent_ids_as_celery_does_without_result_extended() {
        // Written by a Celery 5.7 worker (default settings) for a task sent with
        // `parent_id='cap-parent'`, and for a member of `group(...)()`.
        let with_parent = r#"{"status": "SUCCESS", "result": 3, "traceback": null, "children": [], "date_done": "2026-11-29T20:04:01.530955+00:00", "parent_id": "cap-parent", "task_id": "cap2-parent"}"#;
        let in_group = r#"{"status": "SUCCESS", "result": 2, "traceback": null, "children": [], "date_done": "2026-11-29T20:04:01.556117+00:00", "group_id": "d09d2307-725e-45da-af59-a6f158f0f403", "task_id": "cap2-g1"}"#;
        let request = RequestMeta {
            parent_id: Some("cap-parent".into()),
            ..RequestMeta::default()
        };
        let meta =
            ResultMeta::new("cap2-parent", TaskState::Success, json!(3)).with_request(&request);
        assert_eq!(
            written(meta, Some("2026-11-29T20:04:01.530955+00:00")),
            with_parent
        );
        let request = RequestMeta {
            group_id: Some("d09d2307-725e-45da-af59-a6f158f0f403".into()),
            // Celery writes neither for an empty id.
            parent_id: Some(String::new()),
            extended: None,
        };
        let meta = ResultMeta::new("cap2-g1", TaskState::Success, json!(2)).with_request(&request);
        assert_eq!(
            written(meta, Some("2026-11-29T20:04:01.556117+00:00")),
            in_group
        );
    }

    #[test]
    fn writes_extended_results_byte_for_byte_as_celery_does() {
        // Written by a Celery 5.7 worker named capw@vm with `result_extended=True`,
        // consuming `capq`: a task sent with `parent_id`, a group member, and the second
        // step of a chain whose first step failed (`Backend._fail_chain` stores it from
        // the signature: no worker, no queue).
        let with_parent = r#"{"status": "SUCCESS", "result": 3, "traceback": null, "children": [], "date_done": "2026-11-29T19:56:58.487819+00:00", "parent_id": "cap-parent", "name": "cap.add", "args": [1], "kwargs": {"y": 2}, "worker": "capw@vm", "retries": 0, "queue": "capq", "task_id": "cap-success"}"#;
        let in_group = r#"{"status": "SUCCESS", "result": 2, "traceback": null, "children": [], "date_done": "2026-11-29T19:56:58.507416+00:00", "group_id": "b6c9ca9e-ffef-4f3e-b467-4a57a94968ff", "name": "cap.add", "args": [1, 1], "kwargs": {}, "worker": "capw@vm", "retries": 0, "queue": "capq", "task_id": "cap-g1"}"#;
        let chain_step = r#"{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["account acme over quota", 5], "exc_module": "builtins"}, "traceback": "Traceback (most recent call last):\n  File \"/tmp/cap/capapp.py\", line 14, in fail\n    raise ValueError('account acme over quota', 5)\nValueError: ('account acme over quota', 5)\n", "children": [], "date_done": "2026-11-29T19:56:59.615019+00:00", "name": "cap.add", "args": [1], "kwargs": {}, "worker": null, "retries": 0, "queue": null, "task_id": "cap-c2"}"#;

        let request = RequestMeta {
            parent_id: Some("cap-parent".into()),
            extended: Some(extended(json!([1]), json!({"y": 2}), Some("capw@vm"))),
            ..RequestMeta::default()
        };
        let meta =
            ResultMeta::new("cap-success", TaskState::Success, json!(3)).with_request(&request);
        assert_eq!(
            written(meta, Some("2026-11-29T19:56:58.487819+00:00")),
            with_parent
        );

        let request = RequestMeta {
            group_id: Some("b6c9ca9e-ffef-4f3e-b467-4a57a94968ff".into()),
            extended: Some(extended(json!([1, 1]), json!({}), Some("capw@vm"))),
            ..RequestMeta::default()
        };
        let meta = ResultMeta::new("cap-g1", TaskState::Success, json!(2)).with_request(&request);
        assert_eq!(
            written(meta, Some("2026-11-29T19:56:58.507416+00:00")),
            in_group
        );

        let request = RequestMeta {
            extended: Some(extended(json!([1]), json!({}), None)),
            ..RequestMeta::default()
        };
        let exception = ExceptionInfo {
            exc_type: "ValueError".into(),
            exc_message: json!(["account acme over quota", 5]),
            exc_module: Some("builtins".into()),
        };
        let traceback = "Traceback (most recent call last):\n  File \"/tmp/cap/capapp.py\", line 14, in fail\n    raise ValueError('account acme over quota', 5)\nValueError: ('account acme over quota', 5)\n";
        let meta = ResultMeta::exception(
            "cap-c2",
            TaskState::Failure,
            &exception,
            Some(traceback.into()),
        )
        .with_request(&request);
        assert_eq!(
            written(meta, Some("2026-11-29T19:56:59.615019+00:00")),
            chain_step
        );

        // What is read back is what was written.
        let read: ResultMeta = serde_json::from_str(with_parent).unwrap();
        assert_eq!(
            written(read, Some("2026-11-29T19:56:58.487819+00:00")),
            with_parent
        );
    }

    #[test]
    fn writes_an_unknown_tasks_extended_fields_as_null_as_celery_does() {
        // Celery records NotRegistered with a request that has none of the fields
        // (`celery/worker/consumer/consumer.py::on_unknown_task`).
        let captured = r#"{"status": "FAILURE", "result": {"exc_type": "NotRegistered", "exc_message": ["cap.nothere"], "exc_module": "celery.exceptions"}, "traceback": null, "children": [], "date_done": "2026-11-29T19:56:59.631077+00:00", "name": null, "args": null, "kwargs": null, "worker": null, "retries": null, "queue": null, "task_id": "cap-unknown"}"#;
        let request = RequestMeta {
            extended: Some(ExtendedMeta::default()),
            ..RequestMeta::default()
        };
        let exception = ExceptionInfo::new("NotRegistered", "celery.exceptions", "cap.nothere");
        let meta = ResultMeta::exception("cap-unknown", TaskState::Failure, &exception, None)
            .with_request(&request);
        assert_eq!(
            written(meta, Some("2026-11-29T19:56:59.631077+00:00")),
            captured
        );
    }

    #[test]
    fn messages_read_as_pythons_str_of_the_exception() {
        let exception = |args: Value| ExceptionInfo {
            exc_type: "ValueError".into(),
            exc_message: args,
            exc_module: Some("builtins".into()),
        };
        // str(ValueError('account acme over quota', 5)), str(ValueError('a')), …
        let quota = exception(json!(["account acme over quota", 5]));
        assert_eq!(quota.message(), "('account acme over quota', 5)");
        assert_eq!(quota.args(), [json!("account acme over quota"), json!(5)]);
        assert_eq!(exception(json!(["a"])).message(), "a");
        assert_eq!(exception(json!([])).message(), "");
        assert_eq!(exception(json!([5])).message(), "5");
        assert_eq!(exception(json!([null])).message(), "None");
        assert_eq!(
            exception(json!(["it's", true])).message(),
            "(\"it's\", True)"
        );
        // Very old Celery wrote the message as a string.
        let old = exception(json!("bad"));
        assert_eq!(
            (old.message(), old.args()),
            ("bad".into(), vec![json!("bad")])
        );
    }

    #[test]
    fn reads_a_revoked_result_with_null_children() {
        // Written by a Celery 5.7 worker for a task revoked with `AsyncResult.revoke()`.
        let captured = r#"{"status": "REVOKED", "result": {"exc_type": "TaskRevokedError", "exc_message": ["revoked"], "exc_module": "celery.exceptions"}, "traceback": null, "children": null, "date_done": "2026-11-21T13:26:42.779377+00:00", "task_id": "3d0ff299-73b2-4645-82fa-9d194a1c7709"}"#;
        let meta: ResultMeta = serde_json::from_str(captured).unwrap();
        assert_eq!(meta.status, TaskState::Revoked);
        assert!(meta.children.is_empty());
        assert_eq!(meta.exception_info().unwrap().message(), "revoked");
    }

    #[test]
    fn reads_unknown_states_and_pending_without_date() {
        let meta: ResultMeta = serde_json::from_value(
            json!({"status": "PROGRESS", "result": {"done": 3}, "task_id": "x"}),
        )
        .unwrap();
        assert_eq!(meta.status, TaskState::Other("PROGRESS".into()));
        assert_eq!(
            ResultMeta::new("x", TaskState::Started, json!(null)).date_done,
            None
        );
    }
}
