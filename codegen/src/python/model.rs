//! The Python model: every name a Python identifier, every type an annotation, every
//! default and option a Python expression. `templates/python.py.hbs` renders it and makes
//! no decision of its own.

use serde::Serialize;

/// The Python module generated from one schema file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyModule {
    /// The schema file's name, for the header.
    pub source_name: String,
    /// The generator's version, for the header.
    pub version: &'static str,
    /// The module docstring.
    pub docstring: String,
    /// The names `__all__` lists, as string literals.
    pub exports: Vec<String>,
    /// String enums, in declaration order.
    pub enums: Vec<PyEnum>,
    /// Dataclasses, in declaration order.
    pub structs: Vec<PyStruct>,
    /// Tasks, in declaration order.
    pub tasks: Vec<PyTask>,
}

/// A string enum: an `enum.Enum` whose values are the wire strings.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyEnum {
    pub name: String,
    /// The class docstring, indented for the class body.
    pub docstring: String,
    pub members: Vec<PyMember>,
}

/// An enum member.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyMember {
    /// `IN_PROGRESS`.
    pub name: String,
    /// The wire value, as a string literal.
    pub value: String,
}

/// A struct: a frozen, keyword-only dataclass.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyStruct {
    pub name: String,
    /// The class docstring, indented for the class body.
    pub docstring: String,
    pub fields: Vec<PyField>,
    /// Some field may be left out of a value.
    pub has_optional: bool,
}

/// A dataclass field.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyField {
    /// Python name.
    pub name: String,
    /// Annotation.
    pub annotation: String,
    /// What follows `=` in the class body, when the field has a default or a wire name
    /// of its own.
    pub declaration: Option<String>,
    /// The wire name, as a string literal.
    pub wire: String,
    /// The expression that decodes the field's wire value.
    pub decoder: String,
    /// A message must carry it.
    pub required: bool,
    /// Comment lines (the schema's description).
    pub doc: Vec<String>,
}

/// A task: its client methods, its worker decorator and its spec.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyTask {
    /// Wire name, for documentation.
    pub wire_name: String,
    /// Wire name, as a string literal.
    pub wire_literal: String,
    /// Method name on `TasksRegistry` and `TasksWorker`.
    pub method: String,
    /// The method that returns the task's full signature (`send_email_sig`).
    pub sig_method: String,
    /// The module constant holding the task's `_TaskSpec` (`_SEND_EMAIL`).
    pub spec: String,
    /// The sending method's docstring, indented for a method body.
    pub docstring: String,
    /// The arguments, in positional order.
    pub params: Vec<PyParam>,
    /// How many arguments come first and are required.
    pub required: usize,
    /// The result's annotation (`None` for a task without a result).
    pub result: String,
    /// The expression that decodes the result.
    pub result_decoder: String,
    /// The type of a Python implementation: `Callable[[args…], result]`.
    pub handler: String,
    /// The arguments' wire names, as a tuple literal.
    pub arg_names: String,
    /// Options every message of the task carries (`send_task`'s keywords), as a dict
    /// literal.
    pub send_options: String,
    /// Options a Python worker registers the task with (`app.task`'s keywords), as a
    /// dict literal.
    pub run_options: String,
    /// The `_Retry(...)` expression of the errors retried automatically, if any.
    pub retry: Option<String>,
    /// The workflow step that takes the previous step's result as the first argument.
    pub partial: Option<PyPartial>,
}

/// A task argument: a parameter of the client methods and of the worker handler.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyParam {
    /// Python name.
    pub name: String,
    /// Wire name, as a string literal.
    pub wire_literal: String,
    /// Annotation.
    pub annotation: String,
    /// What the signature gives as the default of an argument callers may leave out: a
    /// literal, or `_DEFAULT` for a value made per call.
    pub default: Option<String>,
    /// The default's Python expression, for an argument callers may leave out.
    pub fallback: Option<String>,
    /// The expression of the value sent: the parameter, or its default made per call.
    pub value: String,
    /// The expression that decodes the argument's wire value.
    pub decoder: String,
}

/// A task's partial signature, `<task>_s`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PyPartial {
    /// Method name.
    pub method: String,
    /// The annotation of the first argument: what the previous step must return.
    pub input: String,
    /// The arguments after the first.
    pub params: Vec<PyParam>,
}
