//! A signature: one task call as a value (`celery/canvas.py::Signature`, a dict subclass).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// One task call as a value, in exactly the JSON Celery writes for it:
///
/// ```json
/// {"task": "tasks.add", "args": [2], "kwargs": {}, "options": {"task_id": "…", "queue": "math"},
///  "subtask_type": null, "immutable": false}
/// ```
///
/// Signatures travel in a task message's embed (`callbacks`, `errbacks`, `chain`,
/// `chord`) and inside other signatures' options (`link`, `link_error`). `options` holds
/// what Celery's `apply_async` takes: `task_id`, `queue`, `priority`, `countdown`, `eta`,
/// `expires`, `link`, `link_error`, `reply_to`, `group_id`, `group_index`, `chord`, …
///
/// ```
/// use celerity::canvas::Signature;
/// use serde_json::json;
///
/// let next: Signature = serde_json::from_value(json!({
///     "task": "tasks.add", "args": [3], "kwargs": {}, "options": {"task_id": "a1"},
///     "subtask_type": null, "immutable": false,
/// }))?;
/// assert_eq!(next.task_id(), Some("a1"));
/// assert_eq!(next.with_parent_result(&json!(7)).args, vec![json!(7), json!(3)]);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The registered task name.
    pub task: String,
    /// Positional arguments; a parent's result is prepended to them unless `immutable`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default, deserialize_with = "null_as_default")]
    pub kwargs: Map<String, Value>,
    /// `apply_async` options (`task_id`, `queue`, `link`, `link_error`, `reply_to`, …).
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: Map<String, Value>,
    /// `null` for one task; `"chain"`, `"group"` or `"chord"` for composite signatures,
    /// whose members are in `kwargs`.
    #[serde(default)]
    pub subtask_type: Option<String>,
    /// Whether a parent's result is left out of the arguments (Celery's `.si()`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub immutable: bool,
    /// The number of header tasks of a chord, when Celery recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chord_size: Option<u64>,
    /// Any other key, kept so a signature goes on unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Signature {
    /// A call of `task` with `args`, no options, mutable (Celery's `task.s(*args)`).
    pub fn new(task: impl Into<String>, args: Vec<Value>) -> Self {
        Signature {
            task: task.into(),
            args,
            kwargs: Map::new(),
            options: Map::new(),
            subtask_type: None,
            immutable: false,
            chord_size: None,
            extra: Map::new(),
        }
    }

    /// The same signature, immutable (Celery's `task.si(*args)`).
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// The same signature with option `name` set (`"queue"`, `"task_id"`, …).
    pub fn option(mut self, name: impl Into<String>, value: Value) -> Self {
        self.options.insert(name.into(), value);
        self
    }

    /// The id the task will have, when one was chosen (`options.task_id`).
    pub fn task_id(&self) -> Option<&str> {
        self.option_str("task_id")
    }

    /// The queue named in the options, if any.
    pub fn queue(&self) -> Option<&str> {
        self.option_str("queue")
    }

    /// Whether this is one task call rather than a chain, group or chord.
    pub fn is_simple(&self) -> bool {
        self.subtask_type.is_none()
    }

    /// Whether this is a group (`subtask_type` `"group"`), its tasks in `kwargs.tasks`.
    pub fn is_group(&self) -> bool {
        self.subtask_type.as_deref() == Some("group")
    }

    /// Option `name` when it is a string.
    pub fn option_str(&self, name: &str) -> Option<&str> {
        self.options.get(name).and_then(Value::as_str)
    }

    /// The signature as a parent with result `result` applies it: the result prepended to
    /// the arguments unless the signature is immutable (`Signature._merge`).
    pub fn with_parent_result(&self, result: &Value) -> Signature {
        self.with_partial_args(std::slice::from_ref(result))
    }

    /// The signature with `args` prepended to its arguments unless it is immutable, as a
    /// group passes its arguments to each of its tasks.
    pub fn with_partial_args(&self, args: &[Value]) -> Signature {
        let mut applied = self.clone();
        if !self.immutable {
            applied.args.splice(0..0, args.iter().cloned());
        }
        applied
    }

    /// The signatures an option holds: Celery accepts one signature or a list of them
    /// for `link` and `link_error` (`maybe_list`).
    pub fn linked(&self, option: &str) -> Vec<Value> {
        match self.options.get(option) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(one) => vec![one.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_writes_celery_json_unchanged() {
        // `add.s(3).set(queue='q1')` from `celery/canvas.py`, through `kombu.utils.json`.
        let text = r#"{"task": "tasks.add", "args": [3], "kwargs": {}, "options": {"task_id": "ch3", "reply_to": "77a7", "queue": "q1"}, "subtask_type": null, "immutable": false}"#;
        let signature: Signature = serde_json::from_str(text).unwrap();
        assert_eq!(signature.queue(), Some("q1"));
        assert_eq!(signature.task_id(), Some("ch3"));
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&signature).unwrap(), original);
    }

    #[test]
    fn keeps_unknown_keys_and_chord_size() {
        let original = json!({"task": "celery.chord", "args": [], "kwargs": {"header": []},
            "options": {}, "subtask_type": "chord", "immutable": false, "chord_size": 2,
            "extra": 1});
        let signature: Signature = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(signature.chord_size, Some(2));
        assert!(!signature.is_simple());
        assert_eq!(serde_json::to_value(&signature).unwrap(), original);
    }

    #[test]
    fn immutable_signatures_ignore_the_parent_result() {
        let signature = Signature::new("tasks.add", vec![json!(1), json!(2)]).immutable();
        assert_eq!(
            signature.with_parent_result(&json!(9)).args,
            vec![json!(1), json!(2)]
        );
    }

    #[test]
    fn link_takes_one_signature_or_a_list() {
        let one = json!({"task": "t", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false});
        let signature = Signature::new("a", vec![]).option("link", one.clone());
        assert_eq!(signature.linked("link"), vec![one.clone()]);
        let signature = signature.option("link_error", json!([one.clone(), one.clone()]));
        assert_eq!(signature.linked("link_error").len(), 2);
        assert!(signature.linked("nothing").is_empty());
    }

    #[test]
    fn null_fields_read_as_empty() {
        let signature: Signature = serde_json::from_value(
            json!({"task": "t", "args": null, "kwargs": null, "options": null}),
        )
        .unwrap();
        assert!(signature.args.is_empty() && signature.options.is_empty());
        assert!(!signature.immutable);
    }
}
