//! Parse and validate a schema file, collecting every error, and build the [`Model`].
//!
//! The walk happens in three passes so that one mistake never hides another:
//! 1. YAML syntax (`serde_yaml`), the only error that stops everything;
//! 2. structure: unknown keys at every level (with suggestions), then each task and type
//!    deserialised on its own, so a bad task does not hide the next one;
//! 3. meaning: type references, names, defaults, durations, options.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::locate::{KeyPath, Locations, Position, Segment, display_path};
use crate::model::{
    ComponentModel, EnumModel, FieldModel, Model, StructModel, TaskModel, VariantModel, doc_lines,
    literal,
};
use crate::names::{self, NameError};
use crate::schema::{
    BackoffKind, FieldDef, FieldSpec, RetrySpec, SchemaFile, TaskDef, TaskOptions, TypeDef,
};
use crate::types::{self, BUILTINS, CONSTRUCTORS, Scalar, TypeExpr};

/// The only version of the schema language.
pub const SCHEMA_VERSION: u64 = 1;

/// Component used by tasks that name none, when `defaults.component` is not set either.
pub const DEFAULT_COMPONENT: &str = "Tasks";

/// Celery's default queue (`task_default_queue`).
pub const DEFAULT_QUEUE: &str = "celery";

/// Checks `source` and builds its model; `source_name` is the file name for the header.
pub fn check(source: &str, source_name: &str) -> Result<Model, Vec<Diagnostic>> {
    let root: Value = match serde_yaml::from_str(source) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(value) => value,
        Err(error) => return Err(syntax_errors(&error, source)),
    };
    let mut checker = Checker {
        locations: std::cell::OnceCell::new(),
        source,
        diagnostics: Vec::new(),
        null_defaults: HashSet::new(),
    };
    let model = checker.schema(&root, source_name);
    let mut diagnostics = checker.diagnostics;
    if diagnostics.is_empty() {
        if let Some(model) = model {
            return Ok(model);
        }
    }
    diagnostics.sort_by_key(|d| d.position);
    diagnostics.dedup();
    Err(diagnostics)
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

/// The property names of a schema-language type, read from its JSON Schema so that the
/// list can never drift from the Rust definition. Computed once per type and process:
/// building a JSON Schema is far slower than checking a mapping's keys.
fn known_keys<T: JsonSchema + 'static>() -> Arc<Vec<String>> {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Arc<Vec<String>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(TypeId::of::<T>())
        .or_insert_with(|| {
            let schema = schemars::schema_for!(T);
            let keys = schema
                .as_object()
                .and_then(|o| o.get("properties"))
                .and_then(|p| p.as_object())
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            Arc::new(keys)
        })
        .clone()
}

fn child(path: &[Segment], key: &str) -> KeyPath {
    let mut path = path.to_vec();
    path.push(Segment::Key(key.to_owned()));
    path
}

fn describe(value: &Value) -> &'static str {
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

/// A type table entry: what a name under `types:` is.
#[derive(Clone)]
enum Named {
    Struct {
        rust: String,
        fields: IndexMap<String, (TypeExpr, bool)>,
    },
    Enum {
        rust: String,
        variants: Vec<(String, String)>,
    },
}

impl Named {
    fn rust(&self) -> &str {
        match self {
            Named::Struct { rust, .. } | Named::Enum { rust, .. } => rust,
        }
    }
}

/// What holds a name of the generated module's type namespace.
enum Holder {
    /// A type declared under `types:`, by its key.
    Type(String),
    /// A type generated for a task: its argument struct or its call type.
    Task { key: String, item: &'static str },
}

impl Holder {
    /// For messages: "type `Order`", "the call type of task `send_email`".
    fn describe(&self) -> String {
        match self {
            Holder::Type(key) => format!("type `{key}`"),
            Holder::Task { key, item } => format!("the {item} of task `{key}`"),
        }
    }

    /// What to rename: "the type `Order`", "the task `send_email`".
    fn name(&self) -> String {
        match self {
            Holder::Type(key) => format!("the type `{key}`"),
            Holder::Task { key, .. } => format!("the task `{key}`"),
        }
    }

    fn path(&self) -> KeyPath {
        match self {
            Holder::Type(key) => vec![Segment::Key("types".into()), Segment::Key(key.clone())],
            Holder::Task { key, .. } => {
                vec![Segment::Key("tasks".into()), Segment::Key(key.clone())]
            }
        }
    }
}

/// The function that registers a component's implementation: `Mailer` → `register_mailer`.
fn register_fn(component: &str) -> String {
    let snake = names::snake_case(component).unwrap_or_default();
    format!("register_{}", names::bare(&snake))
}

struct Checker<'a> {
    /// Where each key and value is; indexed on the first error only, since a valid schema
    /// (the common case in every build) never needs a position.
    locations: std::cell::OnceCell<Locations>,
    source: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// Fields and arguments written with `default: null`, which serde reads as no default:
    /// remembered so that a non-optional type can be told it has no null.
    null_defaults: HashSet<KeyPath>,
}

impl Checker<'_> {
    fn locations(&self) -> &Locations {
        self.locations.get_or_init(|| Locations::index(self.source))
    }

    fn error_at_key(&mut self, path: &[Segment], message: impl Into<String>, help: Option<String>) {
        let position = self.locations().key(path);
        self.diagnostics
            .push(Diagnostic::new(position, display_path(path), message).with_optional_help(help));
    }

    fn error_at_value(
        &mut self,
        path: &[Segment],
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let position = self.locations().value(path);
        self.diagnostics
            .push(Diagnostic::new(position, display_path(path), message).with_optional_help(help));
    }

    fn name_error(&mut self, path: &[Segment], error: NameError) {
        self.error_at_key(path, error.message, Some(error.help));
    }

    /// Reports every key of `value` that `T` does not have, then removes those keys so
    /// the rest can still be deserialised and checked. False when `value` is no mapping.
    fn check_keys<T: JsonSchema + 'static>(
        &mut self,
        path: &[Segment],
        value: &mut Value,
        what: &str,
    ) -> bool {
        let Value::Mapping(mapping) = value else {
            self.error_at_value(
                path,
                format!("expected {what} (a mapping), found {}", describe(value)),
                None,
            );
            return false;
        };
        let known = known_keys::<T>();
        let mut unknown = Vec::new();
        for key in mapping.keys() {
            let Some(text) = key.as_str() else {
                self.error_at_value(path, format!("keys of {what} must be strings"), None);
                unknown.push(key.clone());
                continue;
            };
            if !known.iter().any(|k| k == text) {
                // `{type: map<string, T>}` in flow style splits at the comma.
                let split_type = text.contains(['<', '>']).then(|| {
                    "a comma inside `{…}` splits the mapping: quote the type, e.g. `type: \"map<string, T>\"`".to_owned()
                });
                let help = did_you_mean(text, known.iter().map(String::as_str))
                    .or(split_type)
                    .or_else(|| Some(format!("the keys of {what} are: {}", known.join(", "))));
                self.error_at_key(
                    &child(path, text),
                    format!("unknown key `{text}` in {what}"),
                    help,
                );
                unknown.push(key.clone());
            }
        }
        for key in unknown {
            mapping.remove(&key);
        }
        true
    }

    /// Deserialises one piece of the document, reporting a type mismatch at the exact key.
    fn deserialize<T: DeserializeOwned>(&mut self, path: &[Segment], value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let mut full = path.to_vec();
                for segment in error.path().iter() {
                    match segment {
                        serde_path_to_error::Segment::Map { key } => {
                            full.push(Segment::Key(key.clone()))
                        }
                        serde_path_to_error::Segment::Seq { index } => {
                            full.push(Segment::Index(*index))
                        }
                        _ => {}
                    }
                }
                let message = error.into_inner().to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                self.error_at_value(&full, message, None);
                None
            }
        }
    }

    fn check_options_keys(&mut self, path: &[Segment], value: &mut Value) -> bool {
        let ok = self.check_keys::<TaskOptions>(path, value, "task options");
        if let Some(retry) = value.get_mut("retry") {
            if !self.check_keys::<RetrySpec>(&child(path, "retry"), retry, "a retry policy") {
                *retry = Value::Null;
            }
        }
        ok
    }

    /// Checks fields or arguments; an unusable one is reported and removed.
    fn check_fields_keys(&mut self, path: &[Segment], value: &mut Value, what: &str) -> bool {
        let Value::Mapping(fields) = value else {
            self.error_at_value(
                path,
                format!(
                    "expected {what} (a mapping of name to type), found {}",
                    describe(value)
                ),
                None,
            );
            return false;
        };
        let mut unusable = Vec::new();
        for (key, field) in fields.iter_mut() {
            let Some(name) = key.as_str() else { continue };
            let path = child(path, name);
            match field {
                Value::String(_) => {}
                Value::Mapping(_) => {
                    self.check_keys::<FieldSpec>(&path, field, "a field definition");
                    if field.get("default").is_some_and(Value::is_null) {
                        self.null_defaults.insert(child(&path, "default"));
                    }
                    if field.get("type").is_none() {
                        self.error_at_key(
                            &path,
                            format!("`{name}` has no `type`"),
                            Some("add `type: <type expression>`".into()),
                        );
                        unusable.push(key.clone());
                    }
                }
                other => {
                    self.error_at_value(
                        &path,
                        format!(
                            "expected a type expression or a field definition, found {}",
                            describe(other)
                        ),
                        Some(
                            "write `name: string` or `name: {type: string, default: \"…\"}`".into(),
                        ),
                    );
                    unusable.push(key.clone());
                }
            }
        }
        for key in unusable {
            fields.remove(&key);
        }
        true
    }

    fn schema(&mut self, root: &Value, source_name: &str) -> Option<Model> {
        let root_path: KeyPath = Vec::new();
        let mut root = root.clone();
        if !self.check_keys::<SchemaFile>(&root_path, &mut root, "the schema file") {
            return None;
        }
        let root = &root;
        match root.get("version") {
            None => self.error_at_key(
                &root_path,
                "the schema has no `version`",
                Some("add `version: 1` at the top of the file".into()),
            ),
            Some(Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => {}
            Some(other) => {
                let shown = serde_yaml::to_string(other).unwrap_or_default();
                self.error_at_value(
                    &child(&root_path, "version"),
                    format!("unsupported schema version `{}`", shown.trim()),
                    Some(format!(
                        "this celerity-codegen reads version {SCHEMA_VERSION}"
                    )),
                );
            }
        }
        let description: Option<String> = match root.get("description") {
            Some(value) => self.deserialize(&child(&root_path, "description"), value),
            None => None,
        };

        let defaults_path = child(&root_path, "defaults");
        let defaults = match root.get("defaults") {
            Some(value) => {
                let mut value = value.clone();
                self.check_options_keys(&defaults_path, &mut value)
                    .then(|| self.deserialize::<TaskOptions>(&defaults_path, &value))
                    .flatten()
            }
            None => None,
        }
        .unwrap_or_default();

        let types = self.collect::<TypeDef>(root, "types", |checker, path, value| {
            let ok = checker.check_keys::<TypeDef>(path, value, "a type definition");
            if let Some(fields) = value.get_mut("fields") {
                checker.check_fields_keys(&child(path, "fields"), fields, "`fields`");
            }
            ok
        });
        let tasks = self.collect::<TaskDef>(root, "tasks", |checker, path, value| {
            let ok = checker.check_keys::<TaskDef>(path, value, "a task");
            if let Some(args) = value.get_mut("args") {
                checker.check_fields_keys(&child(path, "args"), args, "`args`");
            }
            if let Some(options) = value.get_mut("options") {
                checker.check_options_keys(&child(path, "options"), options);
            }
            ok
        });

        let table = self.type_table(&types);
        let (structs, enums) = self.named_types(&types, &table);
        let (tasks, components) = self.tasks(&tasks, &defaults, &table);
        Some(Model {
            source_name: source_name.to_owned(),
            doc: doc_lines(description.as_deref()),
            structs,
            enums,
            tasks,
            components,
        })
    }

    /// Checks and deserialises each entry of the top-level mapping `section` on its own.
    fn collect<T: DeserializeOwned>(
        &mut self,
        root: &Value,
        section: &str,
        check: impl Fn(&mut Self, &[Segment], &mut Value) -> bool,
    ) -> Vec<(KeyPath, String, T)> {
        let section_path = vec![Segment::Key(section.to_owned())];
        let mut out = Vec::new();
        match root.get(section) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(entries)) => {
                for (key, value) in entries {
                    let Some(key) = key.as_str() else {
                        self.error_at_value(
                            &section_path,
                            format!("the keys of `{section}` must be strings"),
                            None,
                        );
                        continue;
                    };
                    let path = child(&section_path, key);
                    let mut value = value.clone();
                    if check(self, &path, &mut value) {
                        if let Some(parsed) = self.deserialize::<T>(&path, &value) {
                            out.push((path, key.to_owned(), parsed));
                        }
                    }
                }
            }
            Some(other) => self.error_at_value(
                &section_path,
                format!(
                    "expected `{section}` to be a mapping, found {}",
                    describe(other)
                ),
                None,
            ),
        }
        out
    }

    /// Parses a type expression, reporting syntax errors at the character they occur.
    fn type_expr(
        &mut self,
        path: &[Segment],
        text: &str,
        table: &HashMap<String, Named>,
    ) -> Option<TypeExpr> {
        let expr = match types::parse(text) {
            Ok(expr) => expr,
            Err(error) => {
                let mut position = self.locations().value(path);
                let line = self
                    .source
                    .lines()
                    .nth(position.line.saturating_sub(1))
                    .unwrap_or("");
                let quoted = matches!(
                    line.chars().nth(position.column.saturating_sub(1)),
                    Some('"' | '\'')
                );
                position.column += error.offset + usize::from(quoted);
                self.diagnostics.push(
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
                self.error_at_value(path, format!("unknown type `{name}`"), help);
                ok = false;
            }
        }
        ok.then_some(expr)
    }

    fn type_table(&mut self, types: &[(KeyPath, String, TypeDef)]) -> HashMap<String, Named> {
        let mut table = HashMap::new();
        let mut rust_names: HashMap<String, String> = HashMap::new();
        for (path, key, def) in types {
            let rust = match names::pascal_case(key) {
                Ok(rust) => rust,
                Err(error) => {
                    self.name_error(path, error);
                    continue;
                }
            };
            if let Some(keyword) = names::unescapable_keyword(&rust) {
                self.error_at_key(
                    path,
                    format!("type `{key}` cannot become a Rust type: `{keyword}` is a keyword"),
                    Some("rename the type".into()),
                );
            } else if rust == names::CLIENT_STRUCT {
                self.error_at_key(
                    path,
                    format!(
                        "type `{key}` collides with `{rust}`, the generated client that sends this schema's tasks"
                    ),
                    Some("rename the type".into()),
                );
            }
            if let Some(first) = rust_names.insert(rust.clone(), key.clone()) {
                self.error_at_key(
                    path,
                    format!("types `{first}` and `{key}` both become the Rust type `{rust}`"),
                    Some("rename one of them".into()),
                );
            }
            let named = match (&def.fields, &def.variants) {
                (Some(_), Some(_)) | (None, None) => {
                    self.error_at_key(path, format!("type `{key}` must have either `fields` (a struct) or `enum` (a string enum)"), Some("a struct: `fields: {name: string}`; an enum: `enum: [low, high]`".into()));
                    continue;
                }
                (Some(_), None) => Named::Struct {
                    rust,
                    fields: IndexMap::new(),
                },
                (None, Some(values)) => {
                    let variants = self.variants(&child(path, "enum"), values);
                    Named::Enum { rust, variants }
                }
            };
            table.insert(key.clone(), named);
        }
        // Field types are resolved once every name is known, so order does not matter.
        let snapshot = table.clone();
        for (path, key, def) in types {
            let Some(fields) = &def.fields else { continue };
            let mut resolved = IndexMap::new();
            for (name, field) in fields {
                let field_path = child(&child(path, "fields"), name);
                let type_path = if matches!(field, FieldDef::Full(_)) {
                    child(&field_path, "type")
                } else {
                    field_path
                };
                if let Some(expr) = self.type_expr(&type_path, field.ty(), &snapshot) {
                    resolved.insert(name.clone(), (expr, field.default().is_some()));
                }
            }
            if let Some(Named::Struct { fields, .. }) = table.get_mut(key) {
                *fields = resolved;
            }
        }
        self.check_recursion(types, &table);
        table
    }

    fn variants(&mut self, path: &[Segment], values: &[String]) -> Vec<(String, String)> {
        if values.is_empty() {
            self.error_at_value(path, "an enum needs at least one value", None);
        }
        let mut seen: HashMap<String, &str> = HashMap::new();
        let mut out = Vec::new();
        for (index, value) in values.iter().enumerate() {
            let mut item = path.to_vec();
            item.push(Segment::Index(index));
            match names::pascal_case(value) {
                Ok(rust) => {
                    if let Some(first) = seen.insert(rust.clone(), value) {
                        self.error_at_value(&item, format!("enum values `{first}` and `{value}` both become the variant `{rust}`"), Some("remove or rename one of them".into()));
                    }
                    out.push((rust, value.clone()));
                }
                Err(error) => self.error_at_value(&item, error.message, Some(error.help)),
            }
        }
        out
    }

    /// A struct that contains itself without a list or map in between has infinite size.
    fn check_recursion(
        &mut self,
        types: &[(KeyPath, String, TypeDef)],
        table: &HashMap<String, Named>,
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
            let mut visited = std::collections::HashSet::new();
            while let Some((name, trail)) = stack.pop() {
                let Some(Named::Struct { fields, .. }) = table.get(name) else {
                    continue;
                };
                for (expr, _) in fields.values() {
                    let Some(next) = direct(expr) else { continue };
                    if next == key {
                        let cycle = [trail.clone(), vec![next]].concat().join(" → ");
                        self.error_at_key(path, format!("type `{key}` contains itself ({cycle}) and would have infinite size"), Some("put the recursive field inside `list<…>` or `map<string, …>`".into()));
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

    fn named_types(
        &mut self,
        types: &[(KeyPath, String, TypeDef)],
        table: &HashMap<String, Named>,
    ) -> (Vec<StructModel>, Vec<EnumModel>) {
        let mut structs = Vec::new();
        let mut enums = Vec::new();
        for (path, key, def) in types {
            match table.get(key) {
                Some(Named::Struct { rust, .. }) => {
                    let fields = def.fields.as_ref().expect("a struct has fields");
                    let fields = self.fields(&child(path, "fields"), rust, fields, table);
                    structs.push(StructModel {
                        name: rust.clone(),
                        doc: doc_lines(def.description.as_deref()),
                        fields,
                    });
                }
                Some(Named::Enum { rust, variants }) => enums.push(EnumModel {
                    name: rust.clone(),
                    doc: doc_lines(def.description.as_deref()),
                    variants: variants
                        .iter()
                        .map(|(name, wire)| VariantModel {
                            name: name.clone(),
                            wire_literal: literal(wire),
                        })
                        .collect(),
                }),
                None => {}
            }
        }
        (structs, enums)
    }

    /// Builds the fields of a struct (a named type or an argument struct).
    fn fields(
        &mut self,
        path: &[Segment],
        owner: &str,
        fields: &IndexMap<String, FieldDef>,
        table: &HashMap<String, Named>,
    ) -> Vec<FieldModel> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (wire, field) in fields {
            let field_path = child(path, wire);
            let name = match names::snake_case(wire) {
                Ok(name) => name,
                Err(error) => {
                    self.name_error(&field_path, error);
                    continue;
                }
            };
            if let Some(first) = seen.insert(name.clone(), wire) {
                self.error_at_key(
                    &field_path,
                    format!("`{first}` and `{wire}` both become the Rust field `{name}`"),
                    Some("rename one of them".into()),
                );
            }
            let type_path = if matches!(field, FieldDef::Full(_)) {
                child(&field_path, "type")
            } else {
                field_path.clone()
            };
            let Some(expr) = self.type_expr(&type_path, field.ty(), table) else {
                continue;
            };
            let null_default = child(&field_path, "default");
            if !expr.is_optional() && self.null_defaults.contains(&null_default) {
                self.error_at_value(
                    &null_default,
                    format!("`default: null` does not fit the type `{expr}`, which has no null"),
                    Some(format!(
                        "make the type optional (`{expr}?`) for a field that may be null, or remove `default`"
                    )),
                );
            }
            let (default_fn, default_expr) = match field.default() {
                Some(value) => {
                    let default_path = child(&field_path, "default");
                    match check_value(value, &expr, table) {
                        Ok(()) => {
                            let function = format!(
                                "__default_{}_{}",
                                names::snake_case(owner)
                                    .unwrap_or_default()
                                    .trim_start_matches("r#"),
                                names::bare(&name)
                            );
                            (Some(function), Some(default_expr(value, &expr, table)))
                        }
                        Err(problem) => {
                            self.error_at_value(
                                &default_path,
                                format!("default does not match the type `{expr}`: {problem}"),
                                Some(format!(
                                    "give a value of type `{expr}`, or remove `default`"
                                )),
                            );
                            (None, None)
                        }
                    }
                }
                None => (None, None),
            };
            let default_doc = default_fn
                .as_ref()
                .and(field.default())
                .and_then(|value| serde_json::to_string(value).ok());
            let optional = expr.is_optional() && default_fn.is_none();
            let required = default_fn.is_none() && !expr.is_optional();
            let bare = names::bare(&name);
            let setter = (!required).then(|| format!("with_{}", bare.trim_end_matches('_')));
            out.push(FieldModel {
                rename: (bare != wire).then(|| literal(wire)),
                wire_literal: literal(wire),
                wire_name: wire.clone(),
                name,
                ty: rust_type(&expr, table),
                doc: doc_lines(field.description()),
                default_fn,
                default_expr,
                default_doc,
                optional,
                required,
                setter,
            });
        }
        out
    }

    /// Arguments a caller may leave out (a default, or `T?`) come after the required ones,
    /// as in a Python signature: arguments travel by position, so a required argument
    /// after an optional one would take the optional one's place in a message that
    /// leaves it out, and Celery's Python side could not declare the task.
    fn check_argument_order(&mut self, path: &KeyPath, args: &[FieldModel]) {
        let Some(first_optional) = args.iter().position(|a| !a.required) else {
            return;
        };
        let optional = &args[first_optional].wire_name;
        for arg in args[first_optional..].iter().filter(|a| a.required) {
            self.error_at_key(
                &child(path, &arg.wire_name),
                format!(
                    "required argument `{}` comes after `{optional}`, which callers may leave out",
                    arg.wire_name
                ),
                Some(format!(
                    "move `{}` before `{optional}` (arguments travel by position, so required ones come first, as in Python), or give it a default",
                    arg.wire_name
                )),
            );
        }
    }

    fn tasks(
        &mut self,
        tasks: &[(KeyPath, String, TaskDef)],
        defaults: &TaskOptions,
        table: &HashMap<String, Named>,
    ) -> (Vec<TaskModel>, Vec<ComponentModel>) {
        let mut out = Vec::new();
        let mut wire_names: HashMap<String, (String, Position)> = HashMap::new();
        let mut methods: HashMap<String, String> = HashMap::new();
        // The generated module's type namespace: named types, then each task's argument
        // struct and call type, then (after the loop) each component's worker trait.
        let mut type_names: HashMap<String, Holder> = table
            .iter()
            .map(|(key, named)| (named.rust().to_owned(), Holder::Type(key.clone())))
            .collect();
        let mut components: IndexMap<String, Vec<TaskModel>> = IndexMap::new();
        // Each component's key as first written, and where (`None`: the implicit default).
        let mut component_keys: IndexMap<String, (String, Option<KeyPath>)> = IndexMap::new();
        let mut reported_components: HashSet<KeyPath> = HashSet::new();
        let defaults_component = vec![
            Segment::Key("defaults".into()),
            Segment::Key("component".into()),
        ];

        for (path, key, def) in tasks {
            let wire = def.name.clone().unwrap_or_else(|| key.clone());
            let wire_path = if def.name.is_some() {
                child(path, "name")
            } else {
                path.clone()
            };
            if wire.trim().is_empty() {
                self.error_at_value(&wire_path, "a task's wire name cannot be empty", None);
            }
            let position = self.locations().key(path);
            if let Some((first, at)) = wire_names.get(&wire) {
                self.error_at_value(
                    &wire_path,
                    format!(
                        "duplicate wire name `{wire}`: task `{first}` (line {}) already uses it",
                        at.line
                    ),
                    Some("give each task a distinct `name:`".into()),
                );
            } else {
                wire_names.insert(wire.clone(), (key.clone(), position));
            }
            // `tasks.send_email` → `send_email`: the module prefix is Celery's naming habit,
            // not part of the Rust name.
            let last = key.rsplit('.').next().unwrap_or(key);
            let method = match names::snake_case(last) {
                Ok(method) => method,
                Err(error) => {
                    self.name_error(path, error);
                    continue;
                }
            };
            if let Some(first) = methods.insert(method.clone(), key.clone()) {
                self.error_at_key(
                    path,
                    format!("tasks `{first}` and `{key}` both become the Rust method `{method}`"),
                    Some("rename one task's key; set `name:` to keep its wire name".into()),
                );
                continue;
            }
            self.check_method(path, key, def, &wire, last, &method);
            let bare = names::bare(&method);
            let args_name = names::pascal_case(&format!("{bare}_args")).unwrap_or_default();
            let call_name = names::pascal_case(&format!("{bare}_call")).unwrap_or_default();
            for (generated, item) in [(&args_name, "argument struct"), (&call_name, "call type")] {
                if let Some(holder) = type_names.get(generated.as_str()) {
                    self.error_at_key(
                        path,
                        format!(
                            "task `{key}` generates the {item} `{generated}`, which collides with {}",
                            holder.describe()
                        ),
                        Some(format!("rename {} or the task", holder.name())),
                    );
                } else {
                    let holder = Holder::Task {
                        key: key.clone(),
                        item,
                    };
                    type_names.insert(generated.clone(), holder);
                }
            }

            let (component_key, component_path) = match (&def.component, &defaults.component) {
                (Some(own), _) => (own.as_str(), Some(child(path, "component"))),
                (None, Some(default)) => (default.as_str(), Some(defaults_component.clone())),
                (None, None) => (DEFAULT_COMPONENT, None),
            };
            let component = match names::component_name(component_key) {
                Ok(component) => {
                    component_keys
                        .entry(component.clone())
                        .or_insert_with(|| (component_key.to_owned(), component_path));
                    Some(component)
                }
                Err(error) => {
                    // Once for `defaults.component`, not once per task that falls back on it.
                    if let Some(at) =
                        component_path.filter(|at| reported_components.insert(at.clone()))
                    {
                        self.error_at_value(&at, error.message, Some(error.help));
                    }
                    None
                }
            };
            if let Some(options) = &def.options {
                if options.component.is_some() {
                    self.error_at_key(
                        &child(&child(path, "options"), "component"),
                        "`component` has no effect in a task's `options`",
                        Some(
                            "move it up beside `args:`; only `defaults:` sets it for every task"
                                .into(),
                        ),
                    );
                }
            }
            self.check_arguments(&child(path, "args"), &def.args, &method);

            let args = self.fields(&child(path, "args"), &args_name, &def.args, table);
            self.check_argument_order(&child(path, "args"), &args);
            let result = match &def.result {
                Some(text) => match self.type_expr(&child(path, "result"), text, table) {
                    Some(expr) => rust_type(&expr, table),
                    None => continue,
                },
                None => "()".to_owned(),
            };
            let options = merge(defaults, def.options.as_ref());
            let spec_calls =
                self.spec_calls(&child(path, "options"), def.options.as_ref(), &options);
            let has_setters = args.iter().any(|a| a.setter.is_some());
            // Clippy's `too_many_arguments` allows 7 parameters, `self` included.
            let client_many_args = 1 + args.iter().filter(|a| a.required).count() > 7;
            let worker_many_args = 2 + args.len() > 7;
            let task = TaskModel {
                wire_literal: literal(&wire),
                wire_name: wire.clone(),
                spec: names::shouty_snake_case(last).unwrap_or_default(),
                args: StructModel {
                    name: args_name,
                    doc: vec![format!("Arguments of `{wire}`, in positional order.")],
                    fields: args,
                },
                method,
                call: call_name,
                has_setters,
                client_many_args,
                worker_many_args,
                result,
                doc: doc_lines(def.description.as_deref()),
                component: component.clone().unwrap_or_default(),
                spec_calls,
            };
            if let Some(component) = component {
                components.entry(component).or_default().push(task.clone());
            }
            out.push(task);
        }
        self.check_components(&component_keys, &type_names);
        let components = components
            .into_iter()
            .map(|(name, tasks)| ComponentModel {
                register_fn: register_fn(&name),
                name,
                tasks,
            })
            .collect();
        (out, components)
    }

    /// A task's method name, checked against what the generated code already names: the
    /// client's own methods and the static listing every task.
    fn check_method(
        &mut self,
        path: &[Segment],
        key: &str,
        def: &TaskDef,
        wire: &str,
        last: &str,
        method: &str,
    ) {
        let rename = if def.name.is_some() {
            format!("rename the task's key; its `name:` keeps the wire name `{wire}`")
        } else {
            format!("rename the task's key and add `name: {wire}` to keep its wire name")
        };
        if let Some(keyword) = names::unescapable_keyword(method) {
            self.error_at_key(
                path,
                format!(
                    "task `{key}` cannot become a Rust method: `{keyword}` is a keyword, even as `r#{keyword}`"
                ),
                Some(rename.clone()),
            );
        } else if let Some((_, does)) = names::CLIENT_METHODS.iter().find(|(m, _)| *m == method) {
            self.error_at_key(
                path,
                format!(
                    "task `{key}` would become the method `{}::{method}`, which the generated client already has: it {does}",
                    names::CLIENT_STRUCT
                ),
                Some(rename.clone()),
            );
        }
        if names::shouty_snake_case(last).is_ok_and(|spec| spec == names::TASK_LIST_STATIC) {
            self.error_at_key(
                path,
                format!(
                    "task `{key}` generates the static `{0}`, which collides with `{0}`, the generated list of every task",
                    names::TASK_LIST_STATIC
                ),
                Some(rename),
            );
        }
    }

    /// A task's arguments become parameters of its client and worker trait methods, which
    /// already take `&self` and, on the worker side, the task context.
    fn check_arguments(
        &mut self,
        path: &[Segment],
        args: &IndexMap<String, FieldDef>,
        method: &str,
    ) {
        // Celery sends arguments by position: renaming one only matters to callers that
        // pass it by keyword.
        let unaffected = "callers that pass it by position are unaffected";
        for wire in args.keys() {
            // A name that is no identifier at all is reported with the other fields.
            let Ok(name) = names::snake_case(wire) else {
                continue;
            };
            if name == names::CONTEXT_PARAMETER {
                self.error_at_key(
                    &child(path, wire),
                    format!(
                        "argument `{wire}` collides with `{name}`, the parameter through which the worker trait method `{}` receives the task context",
                        names::bare(method)
                    ),
                    Some(format!("rename the argument, e.g. to `context`; {unaffected}")),
                );
            } else if let Some(keyword) = names::unescapable_keyword(&name) {
                self.error_at_key(
                    &child(path, wire),
                    format!(
                        "argument `{wire}` cannot become a Rust parameter: `{keyword}` is a keyword, even as `r#{keyword}`"
                    ),
                    Some(format!("rename the argument; {unaffected}")),
                );
            }
        }
    }

    /// Each component becomes a worker trait and a `register_…` function: checked against
    /// every other name of the module's type namespace and against each other.
    fn check_components(
        &mut self,
        components: &IndexMap<String, (String, Option<KeyPath>)>,
        type_names: &HashMap<String, Holder>,
    ) {
        let mut register_fns: HashMap<String, (&str, Option<&KeyPath>)> = HashMap::new();
        for (component, (key, at)) in components {
            let subject = if key == component {
                format!("component `{key}`")
            } else {
                format!("component `{key}` (the worker trait `{component}`)")
            };
            let holder = type_names
                .get(component)
                .filter(|_| component != names::CLIENT_STRUCT);
            let collision = if let Some(keyword) = names::unescapable_keyword(component) {
                Some(format!(
                    "{subject} cannot become a Rust trait: `{keyword}` is a keyword"
                ))
            } else if component == names::CLIENT_STRUCT {
                Some(format!(
                    "{subject} collides with `{component}`, the generated client that sends this schema's tasks"
                ))
            } else {
                holder.map(|holder| format!("{subject} collides with {}", holder.describe()))
            };
            match (collision, at) {
                (Some(message), Some(at)) => {
                    let help = match holder {
                        Some(holder) => format!("rename the component or {}", holder.name()),
                        None => "rename the component".into(),
                    };
                    self.error_at_value(at, message, Some(help));
                }
                // The implicit component of tasks that name none: the other name moves.
                (Some(_), None) => {
                    if let Some(holder) = type_names.get(component) {
                        self.error_at_key(
                            &holder.path(),
                            format!(
                                "{} collides with `{component}`, the worker trait of the tasks that name no component",
                                holder.describe()
                            ),
                            Some(format!("rename {}, or set `defaults.component`", holder.name())),
                        );
                    }
                }
                (None, _) => {}
            }
            let function = register_fn(component);
            if let Some((first, first_at)) = register_fns.get(&function) {
                if let Some(at) = at.as_ref().or(*first_at) {
                    self.error_at_value(
                        at,
                        format!("components `{first}` and `{key}` both generate the function `{function}`"),
                        Some("rename one of them".into()),
                    );
                }
            } else {
                register_fns.insert(function, (key, at.as_ref()));
            }
        }
    }

    /// The `TaskSpec` builder calls for the merged options; errors point into the task's
    /// own `options` when the value came from there, else into `defaults`.
    fn spec_calls(
        &mut self,
        task_path: &[Segment],
        own: Option<&TaskOptions>,
        options: &TaskOptions,
    ) -> Vec<String> {
        let defaults_path = vec![Segment::Key("defaults".into())];
        let where_ = |key: &str, own_has: bool| {
            if own_has {
                child(task_path, key)
            } else {
                child(&defaults_path, key)
            }
        };
        let own = own.cloned().unwrap_or_default();
        let mut calls = Vec::new();
        let queue = options
            .queue
            .clone()
            .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        if queue.trim().is_empty() {
            self.error_at_value(
                &where_("queue", own.queue.is_some()),
                "a queue name cannot be empty",
                None,
            );
        }
        if queue != DEFAULT_QUEUE {
            calls.push(format!(".queue({})", literal(&queue)));
        }
        if let Some(key) = &options.routing_key {
            calls.push(format!(".routing_key({})", literal(key)));
        }
        if let Some(priority) = options.priority {
            if priority > 9 {
                self.error_at_value(
                    &where_("priority", own.priority.is_some()),
                    format!("priority {priority} is out of range"),
                    Some("use a priority from 0 to 9".into()),
                );
            }
            calls.push(format!(".priority({priority})"));
        }
        let mut durations = BTreeMap::new();
        for (key, value, own_has) in [
            ("expires", &options.expires, own.expires.is_some()),
            (
                "soft_time_limit",
                &options.soft_time_limit,
                own.soft_time_limit.is_some(),
            ),
            ("time_limit", &options.time_limit, own.time_limit.is_some()),
        ] {
            let Some(value) = value else { continue };
            match duration_ms(value) {
                Ok(ms) => {
                    durations.insert(key, ms);
                    calls.push(format!(".{key}({})", duration_expr(ms)));
                }
                Err(message) => {
                    self.error_at_value(&where_(key, own_has), message, Some(DURATION_HELP.into()))
                }
            }
        }
        if let (Some(soft), Some(hard)) = (
            durations.get("soft_time_limit"),
            durations.get("time_limit"),
        ) {
            if soft > hard {
                self.error_at_value(&where_("soft_time_limit", own.soft_time_limit.is_some()), "the soft time limit is longer than the hard time limit", Some("the soft limit warns the task before the hard limit aborts it: make it shorter".into()));
            }
        }
        for (flag, value) in [
            ("acks_late", options.acks_late),
            ("ignore_result", options.ignore_result),
            ("track_started", options.track_started),
        ] {
            if value == Some(true) {
                calls.push(format!(".{flag}(true)"));
            }
        }
        if let Some(rate) = &options.rate_limit {
            match parse_rate(rate) {
                Some((count, per)) => {
                    calls.push(format!(".rate_limit({count}, {})", duration_expr(per)))
                }
                None => self.error_at_value(
                    &where_("rate_limit", own.rate_limit.is_some()),
                    format!("invalid rate limit `{rate}`"),
                    Some("write a count per unit: `10/s`, `100/m`, `1000/h`".into()),
                ),
            }
        }
        if let Some(retry) = &options.retry {
            let retry_path = where_("retry", own.retry.is_some());
            if let Some(call) = self.retry_call(&retry_path, retry) {
                calls.push(call);
            }
        }
        calls
    }

    fn retry_call(&mut self, path: &[Segment], retry: &RetrySpec) -> Option<String> {
        let mut parts = vec![format!(".max_retries({})", retry.max_retries.unwrap_or(3))];
        let mut ok = true;
        let mut delay_ms = 180_000;
        for (key, value) in [("delay", &retry.delay), ("max_delay", &retry.max_delay)] {
            let Some(value) = value else { continue };
            match duration_ms(value) {
                Ok(ms) => {
                    if key == "delay" {
                        delay_ms = ms;
                    }
                    parts.push(format!(".{key}({})", duration_expr(ms)));
                }
                Err(message) => {
                    self.error_at_value(&child(path, key), message, Some(DURATION_HELP.into()));
                    ok = false;
                }
            }
        }
        if let Some(max) = retry.max_delay.as_ref().and_then(|v| duration_ms(v).ok()) {
            if max < delay_ms {
                self.error_at_value(
                    &child(path, "max_delay"),
                    "`max_delay` is shorter than `delay`",
                    Some("raise `max_delay` or lower `delay`".into()),
                );
            }
        }
        match retry.backoff {
            Some(BackoffKind::Exponential) => parts.push(".exponential()".into()),
            Some(BackoffKind::Fixed) | None => {}
        }
        if let Some(jitter) = retry.jitter {
            parts.push(format!(".jitter({jitter})"));
        }
        if let Some(on) = &retry.on {
            for (index, name) in on.iter().enumerate() {
                if name.trim().is_empty() || name.contains(char::is_whitespace) {
                    let mut item = child(path, "on");
                    item.push(Segment::Index(index));
                    self.error_at_value(
                        &item,
                        format!("`{name}` is not an error type name"),
                        Some("list the `exc_type` names to retry, e.g. `ConnectionError`".into()),
                    );
                    ok = false;
                }
            }
            let names: Vec<String> = on.iter().map(|n| literal(n)).collect();
            parts.push(format!(".on(&[{}])", names.join(", ")));
        }
        ok.then(|| format!(".retry(__celerity::RetryPolicy::new(){})", parts.concat()))
    }
}

const DURATION_HELP: &str =
    "write seconds as a number, or a number with a unit: 500ms, 30s, 5m, 2h, 1d";

/// Task options merged key by key: the task's own value wins over `defaults:`.
fn merge(defaults: &TaskOptions, own: Option<&TaskOptions>) -> TaskOptions {
    let Some(own) = own else {
        return defaults.clone();
    };
    let retry = match (&defaults.retry, &own.retry) {
        (Some(base), Some(own)) => Some(RetrySpec {
            max_retries: own.max_retries.or(base.max_retries),
            backoff: own.backoff.or(base.backoff),
            delay: own.delay.clone().or_else(|| base.delay.clone()),
            max_delay: own.max_delay.clone().or_else(|| base.max_delay.clone()),
            jitter: own.jitter.or(base.jitter),
            on: own.on.clone().or_else(|| base.on.clone()),
        }),
        (base, own) => own.clone().or_else(|| base.clone()),
    };
    TaskOptions {
        component: own.component.clone().or_else(|| defaults.component.clone()),
        queue: own.queue.clone().or_else(|| defaults.queue.clone()),
        routing_key: own
            .routing_key
            .clone()
            .or_else(|| defaults.routing_key.clone()),
        priority: own.priority.or(defaults.priority),
        retry,
        expires: own.expires.clone().or_else(|| defaults.expires.clone()),
        soft_time_limit: own
            .soft_time_limit
            .clone()
            .or_else(|| defaults.soft_time_limit.clone()),
        time_limit: own
            .time_limit
            .clone()
            .or_else(|| defaults.time_limit.clone()),
        acks_late: own.acks_late.or(defaults.acks_late),
        ignore_result: own.ignore_result.or(defaults.ignore_result),
        track_started: own.track_started.or(defaults.track_started),
        rate_limit: own
            .rate_limit
            .clone()
            .or_else(|| defaults.rate_limit.clone()),
    }
}

/// A duration in milliseconds: a number of seconds, or `500ms`, `30s`, `5m`, `2h`, `1d`.
pub fn duration_ms(value: &Value) -> Result<u64, String> {
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

/// The schema's spelling of a type name from another language (Python, JSON Schema,
/// Rust), which a typo distance does not find: `float` is nowhere near `f64`.
fn other_language_type(name: &str) -> Option<String> {
    let ours = match name.to_ascii_lowercase().as_str() {
        "float" | "double" | "number" | "f32" => "f64",
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

/// A `Duration` expression for `ms` milliseconds that users' lints accept: whole seconds
/// go through `Duration::new`, because clippy's `duration_suboptimal_units` asks for
/// `from_mins`/`from_hours` (Rust 1.91) on `from_secs(540)`, later than this crate's
/// `rust-version`; digits are grouped for `unreadable_literal`.
fn duration_expr(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("::core::time::Duration::new({}, 0)", grouped(ms / 1000))
    } else {
        format!("::core::time::Duration::from_millis({})", grouped(ms))
    }
}

/// `86400` → `86_400`, as clippy's `unreadable_literal` wants above four digits.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    if digits.len() <= 4 {
        return digits;
    }
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('_');
        }
        out.push(digit);
    }
    out
}

/// Celery's rate limit syntax: `10`, `10/s`, `10/m`, `10/h`. Returns (count, period in ms).
fn parse_rate(text: &str) -> Option<(u32, u64)> {
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

/// The Rust type of an expression.
fn rust_type(expr: &TypeExpr, table: &HashMap<String, Named>) -> String {
    match expr {
        TypeExpr::Scalar(scalar) => match scalar {
            Scalar::Bool => "bool",
            Scalar::I32 => "i32",
            Scalar::I64 => "i64",
            Scalar::U32 => "u32",
            Scalar::U64 => "u64",
            Scalar::F64 => "f64",
            Scalar::String => "::std::string::String",
            // The crates behind these types are re-exported by the runtime, so users name
            // the same types at the same versions (`celerity::chrono::NaiveDate`).
            Scalar::Bytes => "::celerity::Bytes",
            Scalar::Uuid => "::celerity::uuid::Uuid",
            Scalar::DateTime => "::celerity::chrono::DateTime<::celerity::chrono::Utc>",
            Scalar::Date => "::celerity::chrono::NaiveDate",
            Scalar::Json => "::celerity::serde_json::Value",
        }
        .to_owned(),
        TypeExpr::Optional(inner) => format!("::core::option::Option<{}>", rust_type(inner, table)),
        TypeExpr::List(inner) => format!("::std::vec::Vec<{}>", rust_type(inner, table)),
        TypeExpr::Map(inner) => format!(
            "::std::collections::BTreeMap<::std::string::String, {}>",
            rust_type(inner, table)
        ),
        TypeExpr::Named(name) => table
            .get(name)
            .map_or(name.clone(), |n| n.rust().to_owned()),
    }
}

/// Checks that a YAML default value fits a type; returns what is wrong otherwise.
fn check_value(
    value: &Value,
    expr: &TypeExpr,
    table: &HashMap<String, Named>,
) -> Result<(), String> {
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
            Some(Named::Enum { variants, .. }) => match value.as_str() {
                Some(text) if variants.iter().any(|(_, wire)| wire == text) => Ok(()),
                Some(text) => {
                    let values: Vec<&str> = variants.iter().map(|(_, w)| w.as_str()).collect();
                    Err(format!("`{text}` is not one of {}", values.join(", ")))
                }
                None => Err(format!(
                    "expected one of the values of `{name}`, {}",
                    found()
                )),
            },
            Some(Named::Struct { fields, .. }) => {
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

fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([4, 2, 2])
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
        && matches!(parts[1].parse::<u8>(), Ok(1..=12))
        && matches!(parts[2].parse::<u8>(), Ok(1..=31))
}

/// The Rust expression of a (checked) default value.
fn default_expr(value: &Value, expr: &TypeExpr, table: &HashMap<String, Named>) -> String {
    match (expr, value) {
        (TypeExpr::Optional(_), Value::Null) => "::core::option::Option::None".into(),
        (TypeExpr::Optional(inner), _) => format!(
            "::core::option::Option::Some({})",
            default_expr(value, inner, table)
        ),
        (TypeExpr::Scalar(Scalar::Bool), Value::Bool(b)) => b.to_string(),
        (TypeExpr::Scalar(Scalar::F64), Value::Number(n)) => {
            format!("{:?}_f64", n.as_f64().unwrap_or_default())
        }
        (
            TypeExpr::Scalar(Scalar::I32 | Scalar::I64 | Scalar::U32 | Scalar::U64),
            Value::Number(n),
        ) => n.to_string(),
        (TypeExpr::Scalar(Scalar::String), Value::String(s)) => {
            format!("::std::string::String::from({})", literal(s))
        }
        (TypeExpr::List(_), Value::Sequence(items)) if items.is_empty() => {
            "::std::vec::Vec::new()".into()
        }
        (TypeExpr::Map(_), Value::Mapping(entries)) if entries.is_empty() => {
            "::std::collections::BTreeMap::new()".into()
        }
        (TypeExpr::Named(name), Value::String(s))
            if matches!(table.get(name), Some(Named::Enum { .. })) =>
        {
            let Some(Named::Enum { rust, variants }) = table.get(name) else {
                unreachable!()
            };
            let variant = variants
                .iter()
                .find(|(_, wire)| wire == s)
                .map(|(v, _)| v.as_str())
                .unwrap_or_default();
            format!("{rust}::{variant}")
        }
        _ => {
            // Composite values are decoded from their JSON form, which the build already
            // checked against the type.
            let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
            format!("__celerity::default_value(r#\"{json}\"#)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn durations_are_written_in_forms_users_lints_accept() {
        assert_eq!(
            duration_expr(540_000),
            "::core::time::Duration::new(540, 0)"
        );
        assert_eq!(
            duration_expr(86_400_000),
            "::core::time::Duration::new(86_400, 0)"
        );
        assert_eq!(
            duration_expr(1_500),
            "::core::time::Duration::from_millis(1500)"
        );
        assert_eq!(
            duration_expr(90_500),
            "::core::time::Duration::from_millis(90_500)"
        );
        assert_eq!(grouped(1_234_567), "1_234_567");
        assert_eq!(grouped(12_345), "12_345");
        assert_eq!(grouped(9_999), "9999");
    }
}
