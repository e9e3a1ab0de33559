//! Values written in the schema: defaults checked against their types, durations and
//! rate limits read into numbers.

use indexmap::IndexMap;
use serde_yaml::Value;

use crate::checked::{Field, Shape, TypeTable};
use crate::locate::Segment;
use crate::report::{Reporter, child, describe};
use crate::schema::FieldDef;
use crate::types::{Scalar, TypeExpr};

use super::types::{type_expr, type_path};

/// The fields of a struct, or the arguments of a task, with their types resolved and
/// their defaults checked. A field whose type is unusable is reported and left out.
pub(super) fn fields(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    fields: &IndexMap<String, FieldDef>,
    table: &TypeTable,
) -> Vec<Field> {
    let mut out = Vec::new();
    for (wire, field) in fields {
        let field_path = child(path, wire);
        let Some(ty) = type_expr(reporter, &type_path(&field_path, field), field.ty(), table)
        else {
            continue;
        };
        let default_path = child(&field_path, "default");
        if !ty.is_optional() && reporter.null_defaults.contains(&default_path) {
            reporter.error_at_value(
                &default_path,
                format!("`default: null` does not fit the type `{ty}`, which has no null"),
                Some(format!(
                    "make the type optional (`{ty}?`) for a field that may be null, or remove `default`"
                )),
            );
        }
        let default = field
            .default()
            .and_then(|value| match check_value(value, &ty, table) {
                Ok(()) => Some(value.clone()),
                Err(problem) => {
                    reporter.error_at_value(
                        &default_path,
                        format!("default does not match the type `{ty}`: {problem}"),
                        Some(format!("give a value of type `{ty}`, or remove `default`")),
                    );
                    None
                }
            });
        out.push(Field {
            path: field_path,
            wire: wire.clone(),
            ty,
            default,
            description: field.description().map(str::to_owned),
        });
    }
    out
}

/// Checks that a YAML value fits a type; returns what is wrong otherwise.
pub(super) fn check_value(value: &Value, expr: &TypeExpr, table: &TypeTable) -> Result<(), String> {
    let found = || format!("found {}", describe(value));
    match expr {
        TypeExpr::Optional(inner) => match value {
            Value::Null => Ok(()),
            _ => check_value(value, inner, table),
        },
        TypeExpr::List(inner) => match value {
            Value::Sequence(items) => items.iter().enumerate().try_for_each(|(i, item)| {
                check_value(item, inner, table).map_err(|e| format!("item {i}: {e}"))
            }),
            _ => Err(format!("expected a list, {}", found())),
        },
        TypeExpr::Map(inner) => match value {
            Value::Mapping(entries) => entries.iter().try_for_each(|(key, item)| {
                let key = key.as_str().ok_or("map keys must be strings")?;
                check_value(item, inner, table).map_err(|e| format!("key `{key}`: {e}"))
            }),
            _ => Err(format!("expected a mapping, {}", found())),
        },
        TypeExpr::Named(name) => match table.get(name) {
            Some(Shape::Enum(values)) => match value.as_str() {
                Some(text) if values.iter().any(|wire| wire == text) => Ok(()),
                Some(text) => Err(format!("`{text}` is not one of {}", values.join(", "))),
                None => Err(format!(
                    "expected one of the values of `{name}`, {}",
                    found()
                )),
            },
            Some(Shape::Struct(fields)) => {
                let Value::Mapping(entries) = value else {
                    return Err(format!("expected a mapping for `{name}`, {}", found()));
                };
                for key in entries.keys() {
                    let key = key.as_str().unwrap_or_default();
                    if !fields.contains_key(key) {
                        return Err(format!("`{name}` has no field `{key}`"));
                    }
                }
                for (field, (ty, has_default)) in fields {
                    match entries.get(field.as_str()) {
                        Some(item) => check_value(item, ty, table)
                            .map_err(|e| format!("field `{field}`: {e}"))?,
                        None if *has_default || ty.is_optional() => {}
                        None => return Err(format!("missing field `{field}` of `{name}`")),
                    }
                }
                Ok(())
            }
            None => Err(format!("unknown type `{name}`")),
        },
        TypeExpr::Scalar(scalar) => check_scalar(value, *scalar),
    }
}
fn check_scalar(value: &Value, scalar: Scalar) -> Result<(), String> {
    let found = format!("found {}", describe(value));
    let integer = |min: i128, max: i128, name: &str| -> Result<(), String> {
        let Value::Number(n) = value else {
            return Err(format!("expected {name}, {found}"));
        };
        let v = n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from));
        match v {
            Some(v) if (min..=max).contains(&v) => Ok(()),
            Some(v) => Err(format!("{v} does not fit in {name}")),
            None => Err(format!("expected {name}, found the number {n}")),
        }
    };
    let text = |what: &str, valid: fn(&str) -> bool| -> Result<(), String> {
        match value.as_str() {
            Some(s) if valid(s) => Ok(()),
            Some(s) => Err(format!("`{s}` is not {what}")),
            None => Err(format!("expected {what}, {found}")),
        }
    };
    match scalar {
        Scalar::Bool => value
            .as_bool()
            .map(|_| ())
            .ok_or(format!("expected a boolean, {found}")),
        Scalar::I32 => integer(i32::MIN.into(), i32::MAX.into(), "i32"),
        Scalar::I64 => integer(i64::MIN.into(), i64::MAX.into(), "i64"),
        Scalar::U32 => integer(0, u32::MAX.into(), "u32"),
        Scalar::U64 => integer(0, u64::MAX.into(), "u64"),
        Scalar::F64 => match value {
            Value::Number(_) => Ok(()),
            _ => Err(format!("expected a number, {found}")),
        },
        Scalar::Decimal => match value {
            Value::Number(_) => Ok(()),
            _ => text("a decimal number (\"19.99\")", is_decimal),
        },
        Scalar::String => value
            .as_str()
            .map(|_| ())
            .ok_or(format!("expected a string, {found}")),
        Scalar::Json => Ok(()),
        Scalar::Bytes => text("base64 text", |s| {
            s.len() % 4 == 0
                && s.trim_end_matches('=')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
        }),
        Scalar::Uuid => text("a UUID", |s| {
            let groups: Vec<&str> = s.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
                && groups
                    .iter()
                    .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
        }),
        Scalar::Date => text("a date (YYYY-MM-DD)", is_date),
        Scalar::DateTime => text("a date-time with an offset (2026-01-31T12:00:00Z)", |s| {
            let Some((date, time)) = s.split_once('T') else {
                return false;
            };
            let zoned = time.ends_with('Z') || time.rfind(['+', '-']).is_some_and(|i| i >= 8);
            is_date(date) && time.len() >= 8 && time.as_bytes()[2] == b':' && zoned
        }),
    }
}
/// `19.99`, `-0.5`, `100`: what Python's `Decimal` and the runtime's `Decimal` both read,
/// within the runtime's 28 significant digits.
fn is_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction) && whole.len() + fraction.len() <= 28
}

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([4, 2, 2])
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
        && matches!(parts[1].parse::<u8>(), Ok(1..=12))
        && matches!(parts[2].parse::<u8>(), Ok(1..=31))
}

pub(super) const DURATION_HELP: &str =
    "write seconds as a number, or a number with a unit: 500ms, 30s, 5m, 2h, 1d";

/// A duration in milliseconds: a number of seconds, or `500ms`, `30s`, `5m`, `2h`, `1d`.
pub(super) fn duration_ms(value: &Value) -> Result<u64, String> {
    let shown = || {
        serde_yaml::to_string(value)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let (number, unit_ms) = match value {
        Value::Number(n) => (n.as_f64().unwrap_or(-1.0), 1000.0),
        Value::String(text) => {
            let text = text.trim();
            let split = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(text.len());
            let (digits, unit) = text.split_at(split);
            let unit_ms = match unit.trim() {
                "ms" => 1.0,
                "s" | "" => 1000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                "d" => 86_400_000.0,
                _ => {
                    return Err(format!(
                        "invalid duration `{text}`: unknown unit `{}`",
                        unit.trim()
                    ));
                }
            };
            match digits.parse::<f64>() {
                Ok(number) => (number, unit_ms),
                Err(_) => return Err(format!("invalid duration `{text}`")),
            }
        }
        _ => {
            return Err(format!(
                "invalid duration `{}`: expected a number or a string",
                shown()
            ));
        }
    };
    if !(number.is_finite() && number >= 0.0) {
        return Err(format!(
            "invalid duration `{}`: it must be a positive number",
            shown()
        ));
    }
    Ok((number * unit_ms).round() as u64)
}

/// Celery's rate limit syntax: `10`, `10/s`, `10/m`, `10/h`. Returns (count, period in ms).
pub(super) fn parse_rate(text: &str) -> Option<(u32, u64)> {
    let (count, per) = text.trim().split_once('/').unwrap_or((text.trim(), "s"));
    let count: u32 = count.trim().parse().ok().filter(|c| *c > 0)?;
    let per = match per.trim() {
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some((count, per))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    fn fits(yaml: &str, ty: &str, table: &TypeTable) -> Result<(), String> {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        check_value(&value, &types::parse(ty).unwrap(), table)
    }

    #[test]
    fn defaults_are_checked_against_scalars() {
        let none = TypeTable::new();
        assert_eq!(fits("3", "u32", &none), Ok(()));
        assert_eq!(
            fits("-1", "u32", &none),
            Err("-1 does not fit in u32".into())
        );
        assert_eq!(
            fits("1.5", "i64", &none),
            Err("expected i64, found the number 1.5".into())
        );
        assert_eq!(
            fits("\"x\"", "bool", &none),
            Err("expected a boolean, found a string".into())
        );
        assert_eq!(
            fits("2026-02-30", "date", &none),
            Ok(()),
            "the day range is 1 to 31"
        );
        assert_eq!(
            fits("2026-13-01", "date", &none),
            Err("`2026-13-01` is not a date (YYYY-MM-DD)".into())
        );
        assert_eq!(fits("2026-01-31T12:00:00Z", "datetime", &none), Ok(()));
        assert!(
            fits("2026-01-31T12:00:00", "datetime", &none).is_err(),
            "an offset is needed"
        );
        assert_eq!(fits("aGk=", "bytes", &none), Ok(()));
        assert_eq!(fits("\"19.99\"", "decimal", &none), Ok(()));
        assert_eq!(fits("19.99", "decimal", &none), Ok(()));
        assert_eq!(
            fits("\"19,99\"", "decimal", &none),
            Err("`19,99` is not a decimal number (\"19.99\")".into())
        );
        assert_eq!(fits("null", "string?", &none), Ok(()));
    }

    #[test]
    fn defaults_are_checked_through_containers_and_named_types() {
        let mut table = TypeTable::new();
        table.insert(
            "Level".into(),
            Shape::Enum(vec!["low".into(), "high".into()]),
        );
        let mut fields = IndexMap::new();
        fields.insert("level".to_owned(), (types::parse("Level").unwrap(), false));
        fields.insert("note".to_owned(), (types::parse("string?").unwrap(), false));
        table.insert("Alert".into(), Shape::Struct(fields));
        assert_eq!(fits("[{level: low}]", "list<Alert>", &table), Ok(()));
        assert_eq!(
            fits("[{level: mid}]", "list<Alert>", &table),
            Err("item 0: field `level`: `mid` is not one of low, high".into())
        );
        assert_eq!(
            fits("{note: x}", "Alert", &table),
            Err("missing field `level` of `Alert`".into())
        );
        assert_eq!(
            fits("{level: low, x: 1}", "Alert", &table),
            Err("`Alert` has no field `x`".into())
        );
        assert_eq!(fits("{a: 1}", "map<string, u32>", &table), Ok(()));
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        let ms = |yaml: &str| duration_ms(&serde_yaml::from_str(yaml).unwrap());
        assert_eq!(ms("30"), Ok(30_000));
        assert_eq!(ms("1.5"), Ok(1_500));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("5m"), Ok(300_000));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert_eq!(
            ms("3w"),
            Err("invalid duration `3w`: unknown unit `w`".into())
        );
        assert_eq!(
            ms("-1"),
            Err("invalid duration `-1`: it must be a positive number".into())
        );
        assert_eq!(
            ms("[1]"),
            Err("invalid duration `- 1`: expected a number or a string".into())
        );
    }

    #[test]
    fn rate_limits_are_a_count_per_unit() {
        assert_eq!(parse_rate("10/s"), Some((10, 1000)));
        assert_eq!(parse_rate("100/m"), Some((100, 60_000)));
        assert_eq!(parse_rate("7"), Some((7, 1000)));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("10/d"), None);
    }
}
