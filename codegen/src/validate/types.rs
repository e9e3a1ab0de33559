//! Type expressions and the named types: every reference resolves, every struct has a
//! finite size, and each name under `types:` is either a struct or an enum.

use std::collections::HashSet;

use indexmap::IndexMap;

use crate::checked::{Shape, TypeTable};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::locate::{KeyPath, Segment, display_path};
use crate::report::{Reporter, child};
use crate::schema::{FieldDef, TypeDef};
use crate::types::{self, BUILTINS, CONSTRUCTORS, TypeExpr};

/// Parses a type expression, reporting syntax errors at the character they occur and
/// every name it references that is neither built in nor declared.
pub(super) fn type_expr(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    text: &str,
    table: &TypeTable,
) -> Option<TypeExpr> {
    let expr = match types::parse(text) {
        Ok(expr) => expr,
        Err(error) => {
            let mut position = reporter.locations().value(path);
            let line = reporter
                .source()
                .lines()
                .nth(position.line.saturating_sub(1))
                .unwrap_or("");
            let quoted = matches!(
                line.chars().nth(position.column.saturating_sub(1)),
                Some('"' | '\'')
            );
            position.column += error.offset + usize::from(quoted);
            reporter.push(
                Diagnostic::new(
                    position,
                    display_path(path),
                    format!("invalid type `{text}`: {}", error.message),
                )
                .with_optional_help(error.help),
            );
            return None;
        }
    };
    let mut referenced = Vec::new();
    expr.named(&mut referenced);
    let mut ok = true;
    for name in referenced {
        if !table.contains_key(&name) {
            let candidates: Vec<&str> = table
                .keys()
                .map(String::as_str)
                .chain(BUILTINS.iter().map(|(n, _)| *n))
                .chain(CONSTRUCTORS.iter().copied())
                .collect();
            let help = did_you_mean(&name, candidates)
                .or_else(|| other_language_type(&name))
                .or_else(|| {
                    Some("declare it under `types:`, or use a built-in type (bool, i32, i64, u32, u64, f64, string, bytes, uuid, datetime, date, json)".into())
                });
            reporter.error_at_value(path, format!("unknown type `{name}`"), help);
            ok = false;
        }
    }
    ok.then_some(expr)
}

/// Where a field's type is written: the field itself (`to: string`) or its `type` key.
pub(super) fn type_path(field_path: &[Segment], field: &FieldDef) -> KeyPath {
    if matches!(field, FieldDef::Full(_)) {
        child(field_path, "type")
    } else {
        field_path.to_vec()
    }
}

/// What each name under `types:` is. Field types are resolved once every name is known,
/// so the order of declarations does not matter.
pub(super) fn table(
    reporter: &mut Reporter<'_>,
    types: &[(KeyPath, String, TypeDef)],
) -> TypeTable {
    let mut table = TypeTable::new();
    for (path, key, def) in types {
        let shape = match (&def.fields, &def.variants) {
            (Some(_), Some(_)) | (None, None) => {
                reporter.error_at_key(
                    path,
                    format!("type `{key}` must have either `fields` (a struct) or `enum` (a string enum)"),
                    Some("a struct: `fields: {name: string}`; an enum: `enum: [low, high]`".into()),
                );
                continue;
            }
            (Some(_), None) => Shape::Struct(IndexMap::new()),
            (None, Some(values)) => {
                if values.is_empty() {
                    reporter.error_at_value(
                        &child(path, "enum"),
                        "an enum needs at least one value",
                        None,
                    );
                }
                Shape::Enum(values.clone())
            }
        };
        table.insert(key.clone(), shape);
    }
    let names = table.clone();
    for (path, key, def) in types {
        let Some(fields) = &def.fields else { continue };
        let mut resolved = IndexMap::new();
        for (name, field) in fields {
            let field_path = child(&child(path, "fields"), name);
            let at = type_path(&field_path, field);
            if let Some(expr) = type_expr(reporter, &at, field.ty(), &names) {
                resolved.insert(name.clone(), (expr, field.default().is_some()));
            }
        }
        if let Some(Shape::Struct(fields)) = table.get_mut(key) {
            *fields = resolved;
        }
    }
    check_recursion(reporter, types, &table);
    table
}

/// A struct that contains itself without a list or map in between has infinite size.
fn check_recursion(
    reporter: &mut Reporter<'_>,
    types: &[(KeyPath, String, TypeDef)],
    table: &TypeTable,
) {
    fn direct(expr: &TypeExpr) -> Option<&str> {
        match expr {
            TypeExpr::Named(name) => Some(name),
            TypeExpr::Optional(inner) => direct(inner),
            _ => None,
        }
    }
    for (path, key, _) in types {
        let mut stack = vec![(key.as_str(), vec![key.as_str()])];
        let mut visited = HashSet::new();
        while let Some((name, trail)) = stack.pop() {
            let Some(Shape::Struct(fields)) = table.get(name) else {
                continue;
            };
            for (expr, _) in fields.values() {
                let Some(next) = direct(expr) else { continue };
                if next == key {
                    let cycle = [trail.clone(), vec![next]].concat().join(" → ");
                    reporter.error_at_key(
                        path,
                        format!(
                            "type `{key}` contains itself ({cycle}) and would have infinite size"
                        ),
                        Some("put the recursive field inside `list<…>` or `map<string, …>`".into()),
                    );
                    stack.clear();
                    break;
                }
                if visited.insert(next) {
                    stack.push((next, [trail.clone(), vec![next]].concat()));
                }
            }
        }
    }
}

/// The schema's spelling of a type name from another language (Python, JSON Schema,
/// Rust), which a typo distance does not find: `float` is nowhere near `f64`.
fn other_language_type(name: &str) -> Option<String> {
    let ours = match name.to_ascii_lowercase().as_str() {
        "float" | "double" | "number" | "f32" => "f64",
        "money" | "numeric" | "bigdecimal" => "decimal",
        "int" | "integer" | "long" | "isize" | "i8" | "i16" => "i64",
        "uint" | "usize" | "u8" | "u16" => "u64",
        "str" | "text" | "char" => "string",
        "boolean" => "bool",
        "object" | "dict" | "any" | "value" => "json",
        "timestamp" | "time" => "datetime",
        "bytearray" | "binary" | "blob" => "bytes",
        _ => return None,
    };
    Some(format!("the schema spells it `{ours}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::child;

    fn checked(source: &str) -> (TypeTable, Vec<String>) {
        let root: serde_yaml::Value = serde_yaml::from_str(source).unwrap();
        let mut reporter = Reporter::new(source);
        let types: Vec<(KeyPath, String, TypeDef)> = root
            .get("types")
            .and_then(|t| t.as_mapping())
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let key = k.as_str().unwrap().to_owned();
                (
                    child(&child(&[], "types"), &key),
                    key,
                    serde_yaml::from_value(v.clone()).unwrap(),
                )
            })
            .collect();
        let table = table(&mut reporter, &types);
        let messages = reporter
            .finish()
            .into_iter()
            .map(|d| format!("{}:{} {}", d.position.line, d.position.column, d.message))
            .collect();
        (table, messages)
    }

    #[test]
    fn type_names_of_other_languages_get_the_schema_spelling() {
        assert_eq!(
            other_language_type("float").as_deref(),
            Some("the schema spells it `f64`")
        );
        assert_eq!(
            other_language_type("Integer").as_deref(),
            Some("the schema spells it `i64`")
        );
        assert_eq!(other_language_type("Invoice"), None);
    }

    #[test]
    fn references_resolve_in_any_order() {
        let (table, messages) = checked(
            "types:\n  Order:\n    fields: {lines: list<Line>, state: State?}\n  Line:\n    fields: {sku: string}\n  State:\n    enum: [open, closed]\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        let Some(Shape::Struct(fields)) = table.get("Order") else {
            panic!("Order is a struct")
        };
        assert_eq!(fields["lines"].0.to_string(), "list<Line>");
        assert!(matches!(table.get("State"), Some(Shape::Enum(v)) if v == &["open", "closed"]));
    }

    #[test]
    fn an_unknown_reference_is_reported_at_the_field_with_a_hint() {
        let (_, messages) = checked("types:\n  Order:\n    fields: {total: float}\n");
        assert_eq!(messages, ["3:21 unknown type `float`"]);
    }

    #[test]
    fn a_struct_that_contains_itself_directly_is_infinite() {
        let (_, messages) = checked(
            "types:\n  Node:\n    fields: {next: Node?}\n  Tree:\n    fields: {children: list<Tree>}\n",
        );
        assert_eq!(
            messages,
            ["2:3 type `Node` contains itself (Node → Node) and would have infinite size"]
        );
    }

    #[test]
    fn a_type_is_a_struct_or_an_enum() {
        let (table, messages) = checked(
            "types:\n  Both:\n    fields: {a: string}\n    enum: [x]\n  Empty:\n    enum: []\n",
        );
        assert_eq!(
            messages,
            [
                "2:3 type `Both` must have either `fields` (a struct) or `enum` (a string enum)",
                "6:11 an enum needs at least one value",
            ]
        );
        assert!(!table.contains_key("Both"));
    }
}
