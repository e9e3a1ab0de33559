//! Turning schema names into Rust identifiers.
//!
//! Dashes, dots and spaces become word breaks and keywords get a raw identifier or a
//! trailing underscore: those are safe rewrites, and the wire name is kept through a serde
//! rename. A name that cannot be made into an identifier without guessing (empty, starting
//! with a digit, other punctuation) is an error.

/// Rust keywords, strict and reserved (2024 edition).
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "try", "typeof", "unsized", "virtual", "yield",
];

/// Keywords that cannot be raw identifiers.
const NOT_RAW: &[&str] = &["crate", "self", "Self", "super", "_"];

/// The generated client struct (`templates/client.rs.hbs`): no type or component may take
/// its name.
pub(crate) const CLIENT_STRUCT: &str = "TasksRegistry";

/// The client's own inherent methods, beside one per task, with what each does.
pub(crate) const CLIENT_METHODS: &[(&str, &str)] = &[
    ("new", "builds the registry from a `Client`"),
    ("client", "returns the `Client` it sends through"),
];

/// The static listing every task's spec (`templates/tasks.rs.hbs`), in the namespace of
/// the per-task statics (`SEND_EMAIL`).
pub(crate) const TASK_LIST_STATIC: &str = "TASKS";

/// The static listing every schedule (`templates/schedules.rs.hbs`), in the same namespace.
pub(crate) const SCHEDULE_LIST_STATIC: &str = "SCHEDULES";

/// The parameter through which every worker trait method receives its task context
/// (`templates/worker.rs.hbs`), before the task's arguments.
pub(crate) const CONTEXT_PARAMETER: &str = "ctx";

/// Why a name cannot become an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameError {
    /// What is wrong.
    pub message: String,
    /// A suggested fix.
    pub help: String,
}

fn words(name: &str) -> Result<Vec<String>, NameError> {
    if name.trim().is_empty() {
        return Err(NameError {
            message: "an empty name cannot become a Rust identifier".into(),
            help: "give it a name made of letters, digits and underscores".into(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ')))
    {
        return Err(NameError {
            message: format!("`{name}` cannot become a Rust identifier: it contains `{bad}`"),
            help: "use letters, digits, `_`, `-` or `.`; set `name:` to keep another wire name"
                .into(),
        });
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(NameError {
            message: format!("`{name}` cannot become a Rust identifier: it starts with a digit"),
            help: "start the name with a letter".into(),
        });
    }
    // Split on separators and on lower→upper case changes ("sendEmail" → send, Email).
    let mut out = Vec::new();
    for part in name.split(['_', '-', '.', ' ']).filter(|p| !p.is_empty()) {
        let mut word = String::new();
        let mut previous_lower = false;
        for c in part.chars() {
            if c.is_ascii_uppercase() && previous_lower && !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            word.push(c);
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    if out.is_empty() {
        return Err(NameError {
            message: format!("`{name}` cannot become a Rust identifier"),
            help: "use letters, digits and underscores".into(),
        });
    }
    Ok(out)
}

fn escape_keyword(ident: String) -> String {
    if NOT_RAW.contains(&ident.as_str()) {
        format!("{ident}_")
    } else if KEYWORDS.contains(&ident.as_str()) {
        format!("r#{ident}")
    } else {
        ident
    }
}

/// `send-email`, `sendEmail`, `send_email` → `send_email`; `type` → `r#type`.
pub(crate) fn snake_case(name: &str) -> Result<String, NameError> {
    lower_words(name).map(escape_keyword)
}

/// The words of `name` in lower case, joined by `_`: a snake-case name before keywords
/// are escaped, which Rust and Python do differently.
fn lower_words(name: &str) -> Result<String, NameError> {
    let words = words(name)?;
    Ok(words
        .iter()
        .map(|w| w.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("_"))
}

/// `email_result`, `email-result`, `EmailResult` → `EmailResult`.
pub(crate) fn pascal_case(name: &str) -> Result<String, NameError> {
    let words = words(name)?;
    let joined: String = words
        .iter()
        .map(|w| {
            let mut chars = w.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            first.into_iter().chain(chars).collect::<String>()
        })
        .collect();
    Ok(escape_keyword(joined))
}

/// `send_email` → `SEND_EMAIL`.
pub(crate) fn shouty_snake_case(name: &str) -> Result<String, NameError> {
    Ok(snake_case(name)?
        .trim_start_matches("r#")
        .trim_end_matches('_')
        .to_ascii_uppercase())
}

/// The identifier without a raw prefix, for building other names from it.
pub(crate) fn bare(ident: &str) -> &str {
    ident.trim_start_matches("r#")
}

/// The keyword behind an identifier that [`snake_case`] or [`pascal_case`] escaped with a
/// trailing underscore (`self` → `self_`), because a raw identifier cannot spell it.
pub(crate) fn unescapable_keyword(ident: &str) -> Option<&'static str> {
    let stem = ident.strip_suffix('_')?;
    NOT_RAW.iter().copied().find(|keyword| *keyword == stem)
}

/// Python's keywords, and the builtin types the generated Python module names in
/// annotations: a field or method spelled like one would shadow it inside its class.
const PYTHON_RESERVED: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield", "self", "bool", "int", "float", "str", "bytes", "list", "dict", "object",
];

/// The names the generated Python module defines besides the schema's types: no type may
/// take one.
pub(crate) const PYTHON_MODULE_NAMES: &[&str] = &[
    "TasksRegistry",
    "TasksWorker",
    "TaskResult",
    "GroupResult",
    "Sig",
    "PartialSig",
    "GroupSig",
    "JsonValue",
];

/// The Python client's own methods, beside those of each task.
pub(crate) const PYTHON_CLIENT_METHODS: &[&str] = &["options"];

/// A Python identifier for a schema name, in snake case: `unit-price` → `unit_price`;
/// keywords and the builtin types the module names get a trailing underscore (`from` →
/// `from_`, `list` → `list_`), as PEP 8 suggests.
pub(crate) fn python_snake_case(name: &str) -> Result<String, NameError> {
    lower_words(name).map(python_escape)
}

/// An enum member's Python name: `in-progress` → `IN_PROGRESS`.
pub(crate) fn python_constant_case(name: &str) -> Result<String, NameError> {
    let words = words(name)?;
    Ok(words
        .iter()
        .map(|w| w.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("_"))
}

fn python_escape(ident: String) -> String {
    if PYTHON_RESERVED.contains(&ident.as_str()) {
        format!("{ident}_")
    } else {
        ident
    }
}

/// A component's worker trait name: `Mailer`, `email-worker` or `email_worker` →
/// `EmailWorker`.
///
/// A component names Rust items only (a trait and its `register_…` function) and never
/// travels on the wire, so the only conversion applied is the one type names get, from
/// kebab or snake case to PascalCase. Spaces and dots are refused rather than read as word
/// breaks: `crunch worker` or `jobs.Worker` is more likely a slip (a description in the
/// wrong key, a Python path) than a trait name, and nothing on the wire needs them.
pub(crate) fn component_name(name: &str) -> Result<String, NameError> {
    if let Some(bad) = name.trim().chars().find(|c| matches!(c, ' ' | '.')) {
        let what = if bad == ' ' { "a space" } else { "a dot" };
        let help = match pascal_case(name) {
            Ok(rust) if unescapable_keyword(&rust).is_none() => format!(
                "a component names a Rust trait: write `{rust}` (letters, digits, `_` or `-`)"
            ),
            _ => "a component names a Rust trait: use letters, digits, `_` or `-`".into(),
        };
        return Err(NameError {
            message: format!("component `{name}` contains {what}"),
            help,
        });
    }
    pascal_case(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitises_dashes_case_and_keywords() {
        assert_eq!(snake_case("send-email").unwrap(), "send_email");
        assert_eq!(snake_case("sendEmail").unwrap(), "send_email");
        assert_eq!(snake_case("type").unwrap(), "r#type");
        assert_eq!(snake_case("self").unwrap(), "self_");
        assert_eq!(pascal_case("email_result").unwrap(), "EmailResult");
        assert_eq!(pascal_case("in-progress").unwrap(), "InProgress");
        assert_eq!(pascal_case("HTTPError").unwrap(), "HTTPError");
        assert_eq!(pascal_case("self").unwrap(), "Self_");
        assert_eq!(shouty_snake_case("type").unwrap(), "TYPE");
    }

    #[test]
    fn python_names_escape_keywords_and_the_builtin_types_annotations_name() {
        assert_eq!(python_snake_case("unit-price").unwrap(), "unit_price");
        assert_eq!(python_snake_case("from").unwrap(), "from_");
        assert_eq!(python_snake_case("list").unwrap(), "list_");
        assert_eq!(python_snake_case("type").unwrap(), "type");
        assert_eq!(python_snake_case("camelCase").unwrap(), "camel_case");
        assert_eq!(python_constant_case("in-progress").unwrap(), "IN_PROGRESS");
        assert_eq!(python_constant_case("on hold").unwrap(), "ON_HOLD");
    }

    #[test]
    fn tells_keywords_escaped_with_an_underscore() {
        assert_eq!(unescapable_keyword("self_"), Some("self"));
        assert_eq!(unescapable_keyword("Self_"), Some("Self"));
        assert_eq!(unescapable_keyword("super_"), Some("super"));
        assert_eq!(unescapable_keyword("r#type"), None);
        assert_eq!(unescapable_keyword("value_"), None);
    }

    #[test]
    fn component_names_convert_case_but_refuse_spaces_and_dots() {
        assert_eq!(component_name("Mailer").unwrap(), "Mailer");
        assert_eq!(component_name("beta-team").unwrap(), "BetaTeam");
        assert_eq!(component_name("email_worker").unwrap(), "EmailWorker");
        let spaced = component_name("crunch worker").unwrap_err();
        assert_eq!(spaced.message, "component `crunch worker` contains a space");
        assert!(spaced.help.contains("`CrunchWorker`"));
        assert!(component_name("jobs.Worker").is_err());
    }

    #[test]
    fn reports_names_that_cannot_be_identifiers() {
        assert!(
            snake_case("2fa")
                .unwrap_err()
                .message
                .contains("starts with a digit")
        );
        assert!(
            snake_case("a/b")
                .unwrap_err()
                .message
                .contains("contains `/`")
        );
        assert!(snake_case("").is_err());
        assert!(snake_case("--").is_err());
    }
}
