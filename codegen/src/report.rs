//! Collecting a schema's mistakes, each at the key or value it concerns.
//!
//! Validation and lowering both report through one [`Reporter`], so every mistake of a
//! file is listed at once, sorted by position, whichever stage found it.

use std::cell::OnceCell;
use std::collections::HashSet;

use serde_yaml::Value;

use crate::diagnostic::Diagnostic;
use crate::locate::{KeyPath, Locations, Segment, display_path};
use crate::names::NameError;

/// Where the diagnostics of one schema file go.
pub(crate) struct Reporter<'a> {
    /// Where each key and value is; indexed on the first error only, since a valid schema
    /// (the common case in every build) never needs a position.
    locations: OnceCell<Locations>,
    source: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// Fields and arguments written with `default: null`, which serde reads as no default:
    /// remembered so that a non-optional type can be told it has no null.
    pub(crate) null_defaults: HashSet<KeyPath>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(source: &'a str) -> Self {
        Reporter {
            locations: OnceCell::new(),
            source,
            diagnostics: Vec::new(),
            null_defaults: HashSet::new(),
        }
    }

    /// The schema's text.
    pub(crate) fn source(&self) -> &'a str {
        self.source
    }

    pub(crate) fn locations(&self) -> &Locations {
        self.locations.get_or_init(|| Locations::index(self.source))
    }

    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// A mistake in the name of the key at `path`.
    pub(crate) fn error_at_key(
        &mut self,
        path: &[Segment],
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let position = self.locations().key(path);
        self.push(Diagnostic::new(position, display_path(path), message).with_optional_help(help));
    }

    /// A mistake in the value at `path`.
    pub(crate) fn error_at_value(
        &mut self,
        path: &[Segment],
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let position = self.locations().value(path);
        self.push(Diagnostic::new(position, display_path(path), message).with_optional_help(help));
    }

    /// A name at `path` that cannot become a Rust identifier.
    pub(crate) fn name_error(&mut self, path: &[Segment], error: NameError) {
        self.error_at_key(path, error.message, Some(error.help));
    }

    /// The diagnostics in file order, each once; empty when the schema is sound.
    pub(crate) fn finish(self) -> Vec<Diagnostic> {
        let mut diagnostics = self.diagnostics;
        diagnostics.sort_by_key(|d| d.position);
        diagnostics.dedup();
        diagnostics
    }
}

/// `path` with one more key.
pub(crate) fn child(path: &[Segment], key: &str) -> KeyPath {
    let mut path = path.to_vec();
    path.push(Segment::Key(key.to_owned()));
    path
}

/// `path` with one more list index.
pub(crate) fn item(path: &[Segment], index: usize) -> KeyPath {
    let mut path = path.to_vec();
    path.push(Segment::Index(index));
    path
}

/// What kind of YAML value this is, for messages: "a list", "a mapping".
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locate::Position;

    #[test]
    fn diagnostics_come_out_in_file_order_each_once() {
        let source = "version: 1\ntasks:\n  a: {}\n";
        let mut reporter = Reporter::new(source);
        let task = child(&child(&[], "tasks"), "a");
        reporter.error_at_key(&task, "second", None);
        reporter.error_at_key(&child(&[], "version"), "first", None);
        reporter.error_at_key(&task, "second", None);
        let found = reporter.finish();
        let shown: Vec<(&str, Position)> = found
            .iter()
            .map(|d| (d.message.as_str(), d.position))
            .collect();
        assert_eq!(
            shown,
            [
                ("first", Position { line: 1, column: 1 }),
                ("second", Position { line: 3, column: 3 }),
            ]
        );
        assert_eq!(found[1].path, "tasks.a");
    }

    #[test]
    fn values_are_described_for_messages() {
        assert_eq!(describe(&Value::Null), "null");
        assert_eq!(describe(&serde_yaml::from_str("[1]").unwrap()), "a list");
        assert_eq!(
            describe(&serde_yaml::from_str("{a: 1}").unwrap()),
            "a mapping"
        );
    }
}
