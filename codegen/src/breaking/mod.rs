//! Which changes between two versions of a schema break the wire, in the manner of
//! `buf breaking`: during a rolling deploy, senders and workers of both versions share the
//! queues, so a change is breaking when a message or result written by one version cannot
//! be read by the other.
//!
//! Breaking: a task removed or its wire name changed; an argument removed, re-typed,
//! moved (arguments travel by position) or added without a default; a result re-typed; an
//! enum value removed; a struct field removed or re-typed, or a required one added.
//! Warned: a task's queue changed, an enum value added (readers of the old version reject
//! it). Not breaking: a task added, an argument added with a default or optional, a
//! description or a default changed.
//!
//! Types are compared by shape where they are used, not by name: type names do not travel,
//! so a type renamed with the same fields breaks nothing.

mod rules;

use std::fmt;

use crate::build::{Error, Failure, analyse};
use crate::checked::Schema;
use crate::diagnostic::{Report, Snippet};
use crate::locate::{Locations, Position};

/// How serious a change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Severity {
    /// Senders or workers of one version cannot read what the other writes.
    Breaking,
    /// Safe only if deployed in the right order, or with care.
    Warning,
}

/// One change between two versions of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Breaking, or a warning.
    pub severity: Severity,
    /// The rule, buf-style: `ARGUMENT_RETYPED`.
    pub rule: &'static str,
    /// What changed.
    pub message: String,
    /// Where it is in the old schema, when it is there.
    pub old: Option<Position>,
    /// Where it is in the new schema, when it is there.
    pub new: Option<Position>,
    /// The key path of what changed: in the new schema, or in the old one for a removal.
    pub path: String,
    /// Why it matters and what to do instead.
    pub help: String,
}

/// The changes from one version of a schema to another. `Display` prints each, with the
/// lines of both files it concerns, then a verdict.
#[derive(Debug, Clone)]
pub struct Changes {
    changes: Vec<Change>,
    old: (String, String),
    new: (String, String),
}

impl Changes {
    /// Every change found, breaking ones and warnings, in the order of the old schema.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Whether any change is breaking.
    pub fn is_breaking(&self) -> bool {
        self.count(Severity::Breaking) > 0
    }

    fn count(&self, severity: Severity) -> usize {
        self.changes
            .iter()
            .filter(|c| c.severity == severity)
            .count()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            let level = match change.severity {
                Severity::Breaking => "error",
                Severity::Warning => "warning",
            };
            let old = change.old.map(|p| snippet(&self.old, p));
            let new = change.new.map(|p| snippet(&self.new, p));
            // A removal is shown first where it was; anything else where it is now.
            let (first, second) = if change.rule.ends_with("_REMOVED") {
                (old, new)
            } else {
                (new, old)
            };
            let (Some(primary), secondary) = (first.or(second), first.and(second)) else {
                continue;
            };
            let report = Report {
                headline: format!("{level}[{}]: {}", change.rule, change.message),
                primary,
                path: &change.path,
                secondary,
                help: Some(&change.help),
            };
            writeln!(f, "{}", report.render())?;
        }
        let (breaking, warnings) = (
            self.count(Severity::Breaking),
            self.count(Severity::Warning),
        );
        let plural = |n: usize, what: &str| match n {
            1 => format!("1 {what}"),
            n => format!("{n} {what}s"),
        };
        let (old, new) = (&self.old.0, &self.new.0);
        match (breaking, warnings) {
            (0, 0) => writeln!(f, "no breaking change from `{old}` to `{new}`"),
            (0, w) => writeln!(
                f,
                "warning: no breaking change from `{old}` to `{new}`, {}",
                plural(w, "warning")
            ),
            (b, 0) => writeln!(
                f,
                "error: {} from `{old}` to `{new}`",
                plural(b, "breaking change")
            ),
            (b, w) => writeln!(
                f,
                "error: {} and {} from `{old}` to `{new}`",
                plural(b, "breaking change"),
                plural(w, "warning")
            ),
        }
    }
}

fn snippet((file, source): &(String, String), position: Position) -> Snippet<'_> {
    Snippet {
        file,
        source,
        position,
    }
}

/// The changes from the schema `old_source` (named `old_file` in reports) to
/// `new_source`. Either schema having mistakes is an [`Error::Schema`] with the mistakes
/// of both.
pub fn breaking_changes(
    old_source: &str,
    old_file: &str,
    new_source: &str,
    new_file: &str,
) -> Result<Changes, Error> {
    let checked = |source: &str, file: &str| {
        analyse(source, file, file, |_, schema: Schema, _| {
            rules::Side::new(schema, Locations::index(source))
        })
    };
    let (old, new) = match (checked(old_source, old_file), checked(new_source, new_file)) {
        (Ok(old), Ok(new)) => (old, new),
        (old, new) => {
            let mut mistakes = Vec::new();
            for failure in [old.err(), new.err()].into_iter().flatten() {
                match failure {
                    Failure::Schema(Error::Schema(files)) => mistakes.extend(files),
                    Failure::Schema(other) => return Err(other),
                    Failure::Render(_) => {}
                }
            }
            return Err(Error::Schema(mistakes));
        }
    };
    Ok(Changes {
        changes: rules::compare(&old, &new),
        old: (old_file.to_owned(), old_source.to_owned()),
        new: (new_file.to_owned(), new_source.to_owned()),
    })
}
