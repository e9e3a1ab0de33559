//! Errors in a user's schema, rendered the way rustc renders its own.
//!
//! ```text
//! error: unknown type `EmailReslt`
//!   --> schemas/tasks.yaml:12:13
//!    |
//! 12 |     result: EmailReslt
//!    |             ^^^^^^^^^^
//!    = note: at tasks.send_email.result
//!    = help: did you mean `EmailResult`?
//! ```

use std::fmt;

use crate::locate::Position;

/// One problem found in a schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is.
    pub position: Position,
    /// Key path of the node, e.g. `tasks.send_email.args.to`; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when that can be said.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `position` about the node at `path`.
    pub fn new(position: Position, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            position,
            path: path.into(),
            message: message.into(),
            help: None,
        }
    }

    /// Adds a suggestion.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a suggestion when there is one.
    pub fn with_optional_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Renders the diagnostic against the file it came from.
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = String::new();
        let Position { line, column } = self.position;
        let number = line.to_string();
        let gutter = " ".repeat(number.len());
        out.push_str(&format!("error: {}\n", self.message));
        out.push_str(&format!("{gutter}--> {file}:{line}:{column}\n"));
        if let Some(text) = source.lines().nth(line.saturating_sub(1)) {
            let width = token_width(text, column);
            out.push_str(&format!("{gutter} |\n"));
            out.push_str(&format!("{number} | {text}\n"));
            let pad: String = text
                .chars()
                .take(column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("{gutter} | {pad}{}\n", "^".repeat(width)));
        }
        if !self.path.is_empty() {
            out.push_str(&format!("{gutter} = note: at {}\n", self.path));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("{gutter} = help: {help}\n"));
        }
        out
    }
}

/// Width of the token starting at 1-based `column` of `line`: up to the end of a quoted
/// string, or up to the next delimiter of flow YAML, at least one character.
fn token_width(line: &str, column: usize) -> usize {
    let rest: Vec<char> = line.chars().skip(column.saturating_sub(1)).collect();
    let width = match rest.first() {
        Some(quote @ ('"' | '\'')) => rest[1..]
            .iter()
            .position(|c| c == quote)
            .map_or(rest.len(), |end| end + 2),
        Some(_) => {
            let end = rest
                .iter()
                .position(|c| matches!(c, ',' | ']' | '}' | '#' | ':'))
                .unwrap_or(rest.len());
            rest[..end]
                .iter()
                .collect::<String>()
                .trim_end()
                .chars()
                .count()
        }
        None => 1,
    };
    width.max(1)
}

/// Every diagnostic of one schema file, ready to print.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The file as diagnostics name it: relative to the workspace root in a build script,
    /// else as it was given.
    pub file: String,
    /// The file's text, for the quoted source lines.
    pub source: String,
    /// The problems, in the order they appear in the file.
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            writeln!(f, "{}", item.render(&self.file, &self.source))?;
        }
        let count = self.items.len();
        let plural = if count == 1 { "" } else { "s" };
        write!(
            f,
            "error: could not generate tasks from `{}` due to {count} previous error{plural}",
            self.file
        )
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            let score = strsim::jaro_winkler(&lower, &candidate.to_ascii_lowercase());
            (score, candidate)
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| format!("did you mean `{candidate}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc_with_caret_under_the_token() {
        let source = "tasks:\n  ping:\n    result: Strin\n";
        let diagnostic = Diagnostic::new(
            Position {
                line: 3,
                column: 13,
            },
            "tasks.ping.result",
            "unknown type `Strin`",
        )
        .with_help("did you mean `string`?");
        assert_eq!(
            diagnostic.render("schemas/tasks.yaml", source),
            "error: unknown type `Strin`\n --> schemas/tasks.yaml:3:13\n  |\n3 |     result: Strin\n  |             ^^^^^\n  = note: at tasks.ping.result\n  = help: did you mean `string`?\n"
        );
    }

    #[test]
    fn suggests_only_close_names() {
        assert_eq!(
            did_you_mean("EmailReslt", ["EmailResult", "Order"]).as_deref(),
            Some("did you mean `EmailResult`?")
        );
        assert_eq!(did_you_mean("zzz", ["EmailResult", "Order"]), None);
    }
}
