//! The resolved model: every name is a valid Rust identifier, every type expression is a
//! Rust type, every option is merged with `defaults:` and checked. Templates render this and
//! nothing else, so they never have to make a decision.

use serde::Serialize;

/// Everything generated from one schema file.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Model {
    /// The schema file's name, for the header (no directories: output must not depend on
    /// where the project is checked out).
    pub source_name: String,
    /// Module documentation lines.
    pub doc: Vec<String>,
    /// Named types, in declaration order.
    pub structs: Vec<StructModel>,
    /// String enums, in declaration order.
    pub enums: Vec<EnumModel>,
    /// Tasks, in declaration order.
    pub tasks: Vec<TaskModel>,
    /// Worker components, in order of first use.
    pub components: Vec<ComponentModel>,
    /// Periodic tasks, in declaration order.
    pub schedules: Vec<ScheduleModel>,
}

/// A generated struct (a named type, or a task's argument struct).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StructModel {
    /// Rust name.
    pub name: String,
    /// Documentation lines.
    pub doc: Vec<String>,
    /// Fields in order.
    pub fields: Vec<FieldModel>,
}

/// A field of a generated struct, or a task argument.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FieldModel {
    /// Rust identifier (may be raw, e.g. `r#type`).
    pub name: String,
    /// Name on the wire, as a Rust string literal, when it differs from the identifier.
    pub rename: Option<String>,
    /// Name on the wire, as a Rust string literal.
    pub wire_literal: String,
    /// Name on the wire, for documentation.
    pub wire_name: String,
    /// Rust type.
    pub ty: String,
    /// Documentation lines.
    pub doc: Vec<String>,
    /// The function that supplies the default, when there is a default.
    pub default_fn: Option<String>,
    /// Rust expression of the default value.
    pub default_expr: Option<String>,
    /// The default value as the schema gives it (in JSON), for documentation.
    pub default_doc: Option<String>,
    /// `T?` without a default: absent means `None`.
    pub optional: bool,
    /// The caller must supply it (no default and not optional).
    pub required: bool,
    /// For a task argument the caller may leave out: the name of the call's setter
    /// (`with_cc` for `cc`), so that adding such an argument breaks no caller.
    pub setter: Option<String>,
}

/// A generated string enum.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EnumModel {
    /// Rust name.
    pub name: String,
    /// Documentation lines.
    pub doc: Vec<String>,
    /// Variants in order.
    pub variants: Vec<VariantModel>,
}

/// One enum variant.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VariantModel {
    /// Rust name.
    pub name: String,
    /// Wire value as a Rust string literal.
    pub wire_literal: String,
}

/// A task.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskModel {
    /// Wire name as a Rust string literal.
    pub wire_literal: String,
    /// Wire name, for documentation.
    pub wire_name: String,
    /// Method name on the client and the worker trait.
    pub method: String,
    /// The call type the client method returns (`SendEmailCall`).
    pub call: String,
    /// Some argument may be left out by callers, so the call type has setters.
    pub has_setters: bool,
    /// The client method takes more parameters than clippy's `too_many_arguments` allows.
    pub client_many_args: bool,
    /// The worker trait method does.
    pub worker_many_args: bool,
    /// Name of the static `TaskSpec`.
    pub spec: String,
    /// The argument struct.
    pub args: StructModel,
    /// Rust type of the result.
    pub result: String,
    /// Documentation lines.
    pub doc: Vec<String>,
    /// The worker trait that hosts the task.
    pub component: String,
    /// The task's options, for its `TaskSpec`.
    pub options: OptionsModel,
    /// The client method that makes the task's partial signature, for a task that takes
    /// at least one argument.
    pub signature: Option<SignatureModel>,
}

/// The client method that makes a task's partial signature (Celery's `add.s(y)`): a
/// workflow step whose first argument is the previous step's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SignatureModel {
    /// Method name on the client (`add_s`).
    pub method: String,
    /// Wire name of the first argument, which the previous step supplies, for documentation.
    pub input_wire_name: String,
    /// Rust type of the first argument: what the signature takes from the previous step.
    pub input: String,
    /// The arguments after the first, in positional order (copies of the task's fields).
    pub args: Vec<FieldModel>,
    /// Some of them are parameters of the method (the caller must supply them).
    pub has_params: bool,
    /// Some of them take their default (or `None`) instead.
    pub has_defaults: bool,
    /// The method takes more parameters than clippy's `too_many_arguments` allows.
    pub many_args: bool,
}

/// A task's options, each as the Rust literal or expression its `TaskSpec` builder method
/// takes; `None` (or `false`) leaves the builder's default.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct OptionsModel {
    /// The queue, as a string literal, when it is not Celery's default queue.
    pub queue: Option<String>,
    /// The routing key, as a string literal.
    pub routing_key: Option<String>,
    /// The priority, 0 to 9, as an integer literal (a number would be false at 0).
    pub priority: Option<String>,
    /// A `Duration` expression.
    pub expires: Option<String>,
    /// A `Duration` expression.
    pub soft_time_limit: Option<String>,
    /// A `Duration` expression.
    pub time_limit: Option<String>,
    /// Acknowledge after the task ran.
    pub acks_late: bool,
    /// Store no result.
    pub ignore_result: bool,
    /// Report STARTED.
    pub track_started: bool,
    /// The rate limit.
    pub rate_limit: Option<RateModel>,
    /// The retry policy.
    pub retry: Option<RetryModel>,
}

/// A rate limit: `count` tasks per `per`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RateModel {
    /// An integer literal.
    pub count: String,
    /// A `Duration` expression.
    pub per: String,
}

/// A retry policy, as `RetryPolicy` builder arguments.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RetryModel {
    /// An integer literal.
    pub max_retries: String,
    /// A `Duration` expression.
    pub delay: Option<String>,
    /// A `Duration` expression.
    pub max_delay: Option<String>,
    /// Exponential backoff.
    pub exponential: bool,
    /// `true` or `false`, when the schema says.
    pub jitter: Option<String>,
    /// The error type names to retry on, as string literals.
    pub on: Option<Vec<String>>,
}

/// A worker component: one generated trait.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ComponentModel {
    /// Trait name.
    pub name: String,
    /// Registration function name.
    pub register_fn: String,
    /// Its tasks (copies of the entries of `Model::tasks`, which templates iterate here).
    pub tasks: Vec<TaskModel>,
}

/// A periodic task: an entry of the generated `SCHEDULES` table and the function that
/// builds its arguments.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScheduleModel {
    /// The schedule's name, as a Rust string literal.
    pub name_literal: String,
    /// The schedule's name, for documentation.
    pub name: String,
    /// Documentation lines of the arguments function.
    pub doc: Vec<String>,
    /// The task's wire name, for documentation.
    pub task_wire_name: String,
    /// Name of the task's static `TaskSpec`.
    pub spec: String,
    /// The function that builds the arguments (`__schedule_args_0`).
    pub args_fn: String,
    /// The task's argument struct.
    pub args_struct: String,
    /// Each field of the argument struct with the Rust expression of its value.
    pub fields: Vec<ScheduleArgModel>,
    /// The `Recurrence` expression.
    pub recurrence: String,
    /// The queue, as a string literal.
    pub queue: Option<String>,
    /// The priority, as an integer literal.
    pub priority: Option<String>,
    /// A `Duration` expression.
    pub expires: Option<String>,
}

/// A field of a task's argument struct, as a schedule sets it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ScheduleArgModel {
    /// The field's Rust identifier.
    pub name: String,
    /// The Rust expression of its value.
    pub expr: String,
}

/// Documentation text split into lines for `///` comments.
pub(crate) fn doc_lines(text: Option<&str>) -> Vec<String> {
    text.map(|t| {
        t.trim_end()
            .lines()
            .map(|l| l.trim_end().to_owned())
            .collect()
    })
    .unwrap_or_default()
}

/// A Rust string literal for `text`.
pub(crate) fn literal(text: &str) -> String {
    format!("{text:?}")
}

/// A raw Rust string literal for `text` (JSON stays readable), with as few hashes as it
/// needs: none without a `"`, else one more than the longest run of `#` after a `"`, so
/// that nothing in the text ends the literal early (clippy's pedantic
/// `needless_raw_string_hashes` refuses more).
pub(crate) fn raw_literal(text: &str) -> String {
    let hashes = text
        .match_indices('"')
        .map(|(at, _)| 1 + text[at + 1..].chars().take_while(|c| *c == '#').count())
        .max()
        .unwrap_or(0);
    let hashes = "#".repeat(hashes);
    format!("r{hashes}\"{text}\"{hashes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_literals_have_the_fewest_hashes_that_keep_them_whole() {
        assert_eq!(raw_literal("[9900]"), r#"r"[9900]""#);
        assert_eq!(raw_literal(r#"{"a":1}"#), r##"r#"{"a":1}"#"##);
        assert_eq!(raw_literal(r##"["#",1]"##), r###"r##"["#",1]"##"###);
    }
}
