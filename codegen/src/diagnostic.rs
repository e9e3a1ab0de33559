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
        Report {
            headline: format!("error: {}", self.message),
            primary: Snippet {
                file,
                source,
                position: self.position,
            },
            path: &self.path,
            secondary: None,
            help: self.help.as_deref(),
        }
        .render()
    }
}

/// A place in a file, for a report to quote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snippet<'a> {
    /// The file as reports name it.
    pub file: &'a str,
    /// Its text.
    pub source: &'a str,
    pub position: Position,
}

/// A rustc-style report: a headline, the place it is about (`-->`) with its key path,
/// optionally a second place in another file (`:::`), and a hint.
pub(crate) struct Report<'a> {
    /// `error: …`, `warning[RULE]: …`.
    pub headline: String,
    pub primary: Snippet<'a>,
    /// The key path of the primary place; empty for none.
    pub path: &'a str,
    pub secondary: Option<Snippet<'a>>,
    pub help: Option<&'a str>,
}

impl Report<'_> {
    pub(crate) fn render(&self) -> String {
        let width = [Some(self.primary), self.secondary]
            .iter()
            .flatten()
            .map(|snippet| snippet.position.line.to_string().len())
            .max()
            .unwrap_or(1);
        let gutter = " ".repeat(width);
        let mut out = format!("{}\n", self.headline);
        quote(&mut out, &gutter, "-->", &self.primary);
        if !self.path.is_empty() {
            out.push_str(&format!("{gutter} = note: at {}\n", self.path));
        }
        if let Some(secondary) = &self.secondary {
            quote(&mut out, &gutter, ":::", secondary);
        }
        if let Some(help) = self.help {
            out.push_str(&format!("{gutter} = help: {help}\n"));
        }
        out
    }
}

/// `--> file:line:column`, then the line with a caret under the token at the position.
fn quote(out: &mut String, gutter: &str, arrow: &str, snippet: &Snippet<'_>) {
    let Position { line, column } = snippet.position;
    out.push_str(&format!(
        "{gutter}{arrow} {}:{line}:{column}\n",
        snippet.file
    ));
    if let Some(text) = snippet.source.lines().nth(line.saturating_sub(1)) {
        let width = token_width(text, column);
        let number = format!("{line:>width$}", width = gutter.len());
        out.push_str(&format!("{gutter} |\n"));
        out.push_str(&format!("{number} | {text}\n"));
        let pad: String = text
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("{gutter} | {pad}{}\n", "^".repeat(width)));
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
