//! The JSON Schema of a schema's tasks: what each task's arguments and result look like
//! on the wire, for editors, validators and code generators of other languages.
//!
//! Each named type is a definition of its own; each task has three: `<task>.args` (the
//! positional array the generated clients send), `<task>.kwargs` (the same arguments by
//! name, as Celery callers may send them) and `<task>.result`. The forms are those the
//! Celerity runtime writes: bytes as base64 text, UUIDs, dates and datetimes as text.

use serde_json::{Map, Value, json};

use crate::checked::{Field, Schema, TypeKind};
use crate::types::{Scalar, TypeExpr};

/// The JSON Schema document of `schema`'s tasks, pretty-printed.
pub(crate) fn tasks_json_schema(schema: &Schema, source_name: &str) -> String {
    let mut defs = Map::new();
    for decl in &schema.types {
        let mut def = match &decl.kind {
            TypeKind::Struct(fields) => object(fields),
            TypeKind::Enum(values) => json!({"type": "string", "enum": values}),
        };
        describe(&mut def, decl.description.as_deref());
        defs.insert(decl.key.clone(), def);
    }
    for task in &schema.tasks {
        let required = task.args.iter().take_while(|a| a.required()).count();
        let mut args = json!({
            "type": "array",
            "prefixItems": task.args.iter().map(argument).collect::<Vec<_>>(),
            "minItems": required,
            "maxItems": task.args.len(),
            "items": false,
        });
        describe(
            &mut args,
            Some(&format!("The arguments of `{}`, by position.", task.wire)),
        );
        let mut kwargs = object(&task.args);
        kwargs["additionalProperties"] = Value::Bool(false);
        describe(
            &mut kwargs,
            Some(&format!("The arguments of `{}`, by name.", task.wire)),
        );
        let mut result = task
            .result
            .as_ref()
            .map_or_else(|| json!({"type": "null"}), type_schema);
        describe(
            &mut result,
            Some(&match &task.description {
                Some(text) => format!("The result of `{}`: {}", task.wire, text.trim()),
                None => format!("The result of `{}`.", task.wire),
            }),
        );
        defs.insert(format!("{}.args", task.wire), args);
        defs.insert(format!("{}.kwargs", task.wire), kwargs);
        defs.insert(format!("{}.result", task.wire), result);
    }
    let mut document = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": format!("Tasks of {source_name}"),
    });
    describe(&mut document, schema.description.as_deref());
    document["$defs"] = Value::Object(defs);
    let mut text = serde_json::to_string_pretty(&document).expect("a JSON value always serialises");
    text.push('\n');
    text
}

/// An object with `fields` as its properties.
fn object(fields: &[Field]) -> Value {
    let properties: Map<String, Value> = fields
        .iter()
        .map(|field| (field.wire.clone(), argument(field)))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .filter(|f| f.required())
        .map(|f| f.wire.as_str())
        .collect();
    json!({"type": "object", "properties": properties, "required": required})
}

/// A field or argument: its type, titled with its name, with its description and default.
fn argument(field: &Field) -> Value {
    let mut schema = type_schema(&field.ty);
    schema["title"] = Value::String(field.wire.clone());
    describe(&mut schema, field.description.as_deref());
    if let Some(default) = &field.default {
        schema["default"] = serde_json::to_value(default).unwrap_or(Value::Null);
    }
    schema
}

fn describe(schema: &mut Value, description: Option<&str>) {
    if let Some(text) = description {
        schema["description"] = Value::String(text.trim().to_owned());
    }
}

/// The wire form of a (checked) type expression.
fn type_schema(expr: &TypeExpr) -> Value {
    match expr {
        TypeExpr::Scalar(scalar) => scalar_schema(*scalar),
        TypeExpr::Optional(inner) => json!({"anyOf": [type_schema(inner), {"type": "null"}]}),
        TypeExpr::List(inner) => json!({"type": "array", "items": type_schema(inner)}),
        TypeExpr::Map(inner) => {
            json!({"type": "object", "additionalProperties": type_schema(inner)})
        }
        TypeExpr::Named(name) => json!({"$ref": format!("#/$defs/{}", pointer_escape(name))}),
    }
}

fn scalar_schema(scalar: Scalar) -> Value {
    match scalar {
        Scalar::Bool => json!({"type": "boolean"}),
        Scalar::I32 => json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX}),
        Scalar::I64 => json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}),
        Scalar::U32 => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        Scalar::U64 => json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
        Scalar::F64 => json!({"type": "number"}),
        // kombu's envelope, as the runtime writes it (`celerity::Decimal`).
        Scalar::Decimal => json!({
            "type": "object",
            "properties": {
                "__type__": {"const": "decimal"},
                "__value__": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"},
            },
            "required": ["__type__", "__value__"],
        }),
        Scalar::String => json!({"type": "string"}),
        Scalar::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Scalar::Uuid => json!({"type": "string", "format": "uuid"}),
        Scalar::DateTime => json!({"type": "string", "format": "date-time"}),
        Scalar::Date => json!({"type": "string", "format": "date"}),
        Scalar::Json => json!({}),
    }
}

/// A key as a JSON Pointer segment (RFC 6901).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use crate::report::Reporter;
    use crate::validate::validate;

    fn document(source: &str) -> Value {
        let root = parse(source).unwrap();
        let mut reporter = Reporter::new(source);
        let schema = validate(&mut reporter, &root);
        assert!(reporter.finish().is_empty());
        serde_json::from_str(&tasks_json_schema(&schema, "test.yaml")).unwrap()
    }

    #[test]
    fn each_task_has_its_arguments_by_position_and_by_name_and_its_result() {
        let doc = document(
            "version: 1\ntypes:\n  Level: {enum: [low, high]}\n\
             tasks:\n  notify:\n    args:\n      to: string\n      level: {type: Level, default: low}\n      at: datetime?\n    result: list<uuid>\n",
        );
        let defs = &doc["$defs"];
        assert_eq!(
            defs["Level"],
            json!({"type": "string", "enum": ["low", "high"]})
        );
        let args = &defs["notify.args"];
        assert_eq!(
            (args["minItems"].clone(), args["maxItems"].clone()),
            (json!(1), json!(3))
        );
        assert_eq!(args["prefixItems"][1]["$ref"], "#/$defs/Level");
        assert_eq!(args["prefixItems"][1]["default"], "low");
        assert_eq!(
            args["prefixItems"][2]["anyOf"][0],
            json!({"type": "string", "format": "date-time"})
        );
        assert_eq!(defs["notify.kwargs"]["required"], json!(["to"]));
        assert_eq!(defs["notify.kwargs"]["additionalProperties"], json!(false));
        assert_eq!(defs["notify.result"]["items"]["format"], "uuid");
    }
}
