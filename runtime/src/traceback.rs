//! The traceback a Celerity worker records with a failure, shaped like the one Python
//! prints, so that what shows Celery tracebacks (`AsyncResult.traceback`, Flower, log
//! pipelines that read the last line) shows it the same way:
//!
//! ```text
//! connection reset by peer
//!
//! The above exception was the direct cause of the following exception:
//!
//! Traceback (most recent call last):
//!   File "src/billing.rs", line 42, in billing.charge
//! celerity.exceptions.CardDeclined: card 4242 declined
//! ```
//!
//! A Rust error has no stack of frames to show, so the traceback has one frame: where the
//! error was made (the `TaskError` constructor's caller, or where the task panicked), "in"
//! the task. Its last line is the exception as Python's `traceback` module writes it. The
//! error's `source()` chain comes first, innermost first, each cause on a line of its own,
//! as Python prints an exception raised `from` another that has no traceback of its own;
//! a cause's type is not known, only its message.

use std::borrow::Cow;
use std::fmt::Write;
use std::panic::Location;

use crate::protocol::{ExceptionInfo, bounded};

/// The modules whose exception types Python's `traceback` module writes without the
/// module name (`TracebackException.format_exception_only`).
const UNQUALIFIED_MODULES: [&str; 2] = ["builtins", "__main__"];

/// How many causes of an error are kept: a chain longer than this is cut, not followed
/// for ever.
const MAX_CAUSES: usize = 16;

/// The longest task name a frame shows, in characters: a name is only context there, and
/// one from a hostile message can be as long as the message.
const MAX_FRAME_NAME: usize = 256;

/// A place in the source: a file and a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    file: Cow<'static, str>,
    line: u32,
}

impl Frame {
    /// The place `location` names.
    pub(crate) fn at(location: &'static Location<'static>) -> Frame {
        Frame {
            file: Cow::Borrowed(location.file()),
            line: location.line(),
        }
    }

    /// Line `line` of `file`.
    pub(crate) fn new(file: String, line: u32) -> Frame {
        Frame {
            file: Cow::Owned(file),
            line,
        }
    }
}

/// What a failure's traceback is written from.
#[derive(Debug, Clone)]
pub(crate) struct Traceback {
    /// A traceback the task gave (`TaskError::with_traceback`): written as it is.
    given: Option<String>,
    /// Where the error was made, when known.
    frame: Option<Frame>,
    /// The messages of what caused the error, outermost first.
    causes: Vec<String>,
}

/// Two tracebacks are equal when they were given the same text: where an error was made
/// is not part of what it is, so `TaskError`s made alike on different lines are equal.
impl PartialEq for Traceback {
    fn eq(&self, other: &Self) -> bool {
        self.given == other.given
    }
}

impl Traceback {
    /// The traceback of an error made where the caller is.
    #[track_caller]
    pub(crate) fn here() -> Traceback {
        Traceback::at(Some(Frame::at(Location::caller())))
    }

    /// The traceback of an error made at `frame`, or somewhere unknown.
    pub(crate) fn at(frame: Option<Frame>) -> Traceback {
        Traceback {
            given: None,
            frame,
            causes: Vec::new(),
        }
    }

    /// The same traceback, with `error`'s `source()` chain as its causes.
    pub(crate) fn with_sources_of(mut self, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut source = error.source();
        while let Some(cause) = source {
            if self.causes.len() == MAX_CAUSES {
                break;
            }
            self.causes.push(cause.to_string());
            source = cause.source();
        }
        self
    }

    /// The same traceback, with `cause` as the innermost cause so far.
    pub(crate) fn caused_by(mut self, cause: impl Into<String>) -> Self {
        self.causes.push(cause.into());
        self
    }

    /// The task gave `text` as its traceback: it is written as it is, unless empty.
    pub(crate) fn give(&mut self, text: String) {
        self.given = Some(text).filter(|text| !text.trim().is_empty());
    }

    /// The text recorded for `exception`, raised by the task `task`.
    pub(crate) fn render(&self, task: &str, exception: &ExceptionInfo) -> String {
        if let Some(given) = &self.given {
            return given.clone();
        }
        let mut out = String::new();
        for cause in self.causes.iter().rev() {
            out.push_str(cause);
            out.push_str(
                "\n\nThe above exception was the direct cause of the following exception:\n\n",
            );
        }
        if let Some(frame) = &self.frame {
            out.push_str("Traceback (most recent call last):\n");
            let task = bounded(task, MAX_FRAME_NAME);
            let _ = writeln!(
                out,
                "  File \"{}\", line {}, in {task}",
                frame.file, frame.line
            );
        }
        out.push_str(&exception_line(exception));
        out.push('\n');
        out
    }
}

/// The last line of a Python traceback for `exception`: its type, qualified by its module
/// unless that is `builtins`, then `: ` and `str(exc)` unless that is empty
/// (`ValueError: bad`, `celery.exceptions.NotRegistered: tasks.x`).
pub(crate) fn exception_line(exception: &ExceptionInfo) -> String {
    let module = exception
        .exc_module
        .as_deref()
        .filter(|module| !module.is_empty() && !UNQUALIFIED_MODULES.contains(module));
    let kind = match module {
        Some(module) => format!("{module}.{}", exception.exc_type),
        None => exception.exc_type.clone(),
    };
    match exception.message() {
        message if message.is_empty() => kind,
        message => format!("{kind}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, thiserror::Error)]
    #[error("card 4242 declined")]
    struct CardDeclined(#[source] GatewayError);

    #[derive(Debug, thiserror::Error)]
    #[error("the gateway did not answer")]
    struct GatewayError(#[source] std::io::Error);

    fn declined() -> ExceptionInfo {
        ExceptionInfo::new("CardDeclined", "celerity.exceptions", "card 4242 declined")
    }

    #[test]
    fn a_rust_error_reads_like_the_end_of_a_python_traceback() {
        let traceback = Traceback::at(Some(Frame::new("src/billing.rs".into(), 42)));
        assert_eq!(
            traceback.render("billing.charge", &declined()),
            "Traceback (most recent call last):\n  File \"src/billing.rs\", line 42, in billing.charge\ncelerity.exceptions.CardDeclined: card 4242 declined\n"
        );
    }

    #[test]
    fn causes_come_first_innermost_first_as_python_prints_a_chain() {
        let error = CardDeclined(GatewayError(std::io::Error::other("connection reset")));
        let traceback =
            Traceback::at(Some(Frame::new("src/billing.rs".into(), 42))).with_sources_of(&error);
        let text = traceback.render("billing.charge", &declined());
        let direct = "\n\nThe above exception was the direct cause of the following exception:\n\n";
        assert_eq!(
            text,
            format!(
                "connection reset{direct}the gateway did not answer{direct}Traceback (most recent call last):\n  File \"src/billing.rs\", line 42, in billing.charge\ncelerity.exceptions.CardDeclined: card 4242 declined\n"
            )
        );
    }

    #[test]
    fn the_last_line_is_the_exception_as_python_writes_it() {
        let exception = |exc_type: &str, module: Option<&str>, args| ExceptionInfo {
            exc_type: exc_type.into(),
            exc_message: args,
            exc_module: module.map(str::to_owned),
        };
        // As `traceback.format_exception_only` writes them in Python 3.11.
        let quota = exception(
            "ValueError",
            Some("builtins"),
            json!(["account acme over quota", 5]),
        );
        assert_eq!(
            exception_line(&quota),
            "ValueError: ('account acme over quota', 5)"
        );
        let soft = exception(
            "SoftTimeLimitExceeded",
            Some("billiard.exceptions"),
            json!([]),
        );
        assert_eq!(
            exception_line(&soft),
            "billiard.exceptions.SoftTimeLimitExceeded"
        );
        let unknown = exception("Oops", None, json!(["x"]));
        assert_eq!(exception_line(&unknown), "Oops: x");
    }

    #[test]
    fn an_unknown_place_leaves_only_the_exception_and_a_given_text_is_kept() {
        let nowhere = Traceback::at(None);
        assert_eq!(
            nowhere.render("billing.charge", &declined()),
            "celerity.exceptions.CardDeclined: card 4242 declined\n"
        );
        let mut given = Traceback::here();
        given.give("Traceback (from the task)\n".into());
        assert_eq!(
            given.render("billing.charge", &declined()),
            "Traceback (from the task)\n"
        );
        let mut blank = Traceback::at(None);
        blank.give("  \n".into());
        assert!(
            blank
                .render("billing.charge", &declined())
                .starts_with("celerity.")
        );
    }

    #[test]
    fn a_frame_names_at_most_the_beginning_and_end_of_a_long_task_name() {
        let name = "n".repeat(100_000);
        let text = Traceback::here().render(&name, &declined());
        let frame = text.lines().nth(1).unwrap();
        assert!(frame.len() < MAX_FRAME_NAME + 100, "{} bytes", frame.len());
    }

    #[test]
    fn here_is_the_callers_line() {
        let traceback = Traceback::here();
        let text = traceback.render("t", &declined());
        assert!(
            text.contains(&format!("File \"{}\", line {}, in t", file!(), line!() - 3)),
            "{text}"
        );
    }
}
