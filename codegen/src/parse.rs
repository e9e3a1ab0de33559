//! Reading a schema file's YAML: the one mistake that stops every later stage.

use serde_yaml::Value;

use crate::diagnostic::Diagnostic;
use crate::locate::{Locations, Position, Segment, display_path};

/// The document of `source`; an empty file is an empty mapping. On a syntax error, the
/// diagnostics that say where: every duplicated key, or the one place YAML stopped.
pub(crate) fn parse(source: &str) -> Result<Value, Vec<Diagnostic>> {
    match serde_yaml::from_str(source) {
        Ok(Value::Null) => Ok(Value::Mapping(Default::default())),
        Ok(value) => Ok(value),
        Err(error) => Err(syntax_errors(&error, source)),
    }
}

/// The errors of a document `serde_yaml` refuses. A key written twice is reported where
/// it is written again (`serde_yaml` points at the start of its mapping), with every other
/// duplicate of the file.
fn syntax_errors(error: &serde_yaml::Error, source: &str) -> Vec<Diagnostic> {
    if error.to_string().contains("duplicate entry") {
        let duplicates: Vec<Diagnostic> = Locations::index(source)
            .duplicates()
            .iter()
            .map(|duplicate| {
                let key = match duplicate.path.last() {
                    Some(Segment::Key(key)) => key.as_str(),
                    _ => "",
                };
                Diagnostic::new(
                    duplicate.again,
                    display_path(&duplicate.path),
                    format!("duplicate key `{key}`"),
                )
                .with_help(format!(
                    "`{key}` is already defined at line {}: keep one of the two",
                    duplicate.first.line
                ))
            })
            .collect();
        if !duplicates.is_empty() {
            return duplicates;
        }
    }
    vec![syntax_error(error)]
}

fn syntax_error(error: &serde_yaml::Error) -> Diagnostic {
    let position = error
        .location()
        .map_or(Position { line: 1, column: 1 }, |l| Position {
            line: l.line(),
            column: l.column(),
        });
    let text = error.to_string();
    let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
    Diagnostic::new(position, "", format!("invalid YAML: {message}"))
        .with_help("check the indentation and quoting around this position")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_an_empty_schema() {
        assert_eq!(parse("").unwrap(), Value::Mapping(Default::default()));
        assert_eq!(
            parse("# nothing yet\n").unwrap(),
            Value::Mapping(Default::default())
        );
    }

    #[test]
    fn a_syntax_error_is_located_without_the_parsers_position_text() {
        let errors = parse("version: 1\ntasks:\n  a: [1, 2\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.starts_with("invalid YAML: "),
            "{}",
            errors[0].message
        );
        assert!(!errors[0].message.contains(" at line "));
        assert!(errors[0].position.line >= 3, "{:?}", errors[0].position);
    }

    #[test]
    fn every_duplicate_key_is_reported_where_it_is_written_again() {
        let source = "version: 1\ntasks:\n  a: {}\n  a: {}\ntypes:\n  T: {enum: [x]}\n  T: {fields: {a: string}}\n";
        let errors = parse(source).unwrap_err();
        let found: Vec<(usize, &str)> = errors
            .iter()
            .map(|d| (d.position.line, d.message.as_str()))
            .collect();
        assert_eq!(found, [(4, "duplicate key `a`"), (7, "duplicate key `T`")]);
        assert_eq!(
            errors[0].help.as_deref(),
            Some("`a` is already defined at line 3: keep one of the two")
        );
    }
}
