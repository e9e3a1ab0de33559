//! Lowering the checked schema into the Rust [`Model`]: the one place that decides Rust
//! names, Rust types and the Rust expressions of defaults and options, and that reports
//! the mistakes only Rust sees (keywords, names two things would share, the generated
//! code's own names).

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use serde_yaml::Value;

use crate::checked::{self, Field, Options, Recurrence, Schema, Shape, Task, TypeKind};
use crate::locate::{KeyPath, Segment};
use crate::model::{
    ComponentModel, EnumModel, FieldModel, Model, OptionsModel, RateModel, RetryModel,
    ScheduleArgModel, ScheduleModel, SignatureModel, StructModel, TaskModel, VariantModel,
    doc_lines, literal, raw_literal,
};
use crate::names;
use crate::report::{Reporter, child, item};
use crate::types::{Scalar, TypeExpr};

/// The Rust model of `schema`; `source_name` is the file name for the header.
pub(crate) fn lower(reporter: &mut Reporter<'_>, schema: &Schema, source_name: &str) -> Model {
    let mut lowering = Lowering {
        reporter,
        table: &schema.table,
        rust_types: HashMap::new(),
    };
    lowering.type_names(schema);
    let (structs, enums) = lowering.named_types(schema);
    let (tasks, components) = lowering.tasks(schema);
    let schedules = lowering.schedules(schema, &tasks);
    Model {
        source_name: source_name.to_owned(),
        doc: doc_lines(schema.description.as_deref()),
        structs,
        enums,
        tasks,
        components,
        schedules,
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

struct Lowering<'r, 'a, 's> {
    reporter: &'r mut Reporter<'a>,
    table: &'s checked::TypeTable,
    /// The Rust name of each type under `types:` that has one, by key.
    rust_types: HashMap<String, String>,
}

impl Lowering<'_, '_, '_> {
    /// Names each type under `types:`, reporting names Rust cannot take or two types share.
    fn type_names(&mut self, schema: &Schema) {
        let mut taken: HashMap<String, String> = HashMap::new();
        for decl in &schema.types {
            let (path, key) = (&decl.path, &decl.key);
            let rust = match names::pascal_case(key) {
                Ok(rust) => rust,
                Err(error) => {
                    self.reporter.name_error(path, error);
                    continue;
                }
            };
            if let Some(keyword) = names::unescapable_keyword(&rust) {
                self.reporter.error_at_key(
                    path,
                    format!("type `{key}` cannot become a Rust type: `{keyword}` is a keyword"),
                    Some("rename the type".into()),
                );
            } else if rust == names::CLIENT_STRUCT {
                self.reporter.error_at_key(
                    path,
                    format!(
                        "type `{key}` collides with `{rust}`, the generated client that sends this schema's tasks"
                    ),
                    Some("rename the type".into()),
                );
            }
            if let Some(first) = taken.insert(rust.clone(), key.clone()) {
                self.reporter.error_at_key(
                    path,
                    format!("types `{first}` and `{key}` both become the Rust type `{rust}`"),
                    Some("rename one of them".into()),
                );
            }
            self.rust_types.insert(key.clone(), rust);
        }
    }

    fn named_types(&mut self, schema: &Schema) -> (Vec<StructModel>, Vec<EnumModel>) {
        let mut structs = Vec::new();
        let mut enums = Vec::new();
        for decl in &schema.types {
            let Some(rust) = self.rust_types.get(&decl.key).cloned() else {
                continue;
            };
            let doc = doc_lines(decl.description.as_deref());
            match &decl.kind {
                TypeKind::Struct(fields) => {
                    let fields = self.fields(&rust, fields);
                    structs.push(StructModel {
                        name: rust,
                        doc,
                        fields,
                    });
                }
                TypeKind::Enum(values) => {
                    let variants = self.variants(&child(&decl.path, "enum"), values);
                    enums.push(EnumModel {
                        name: rust,
                        doc,
                        variants,
                    });
                }
            }
        }
        (structs, enums)
    }

    fn variants(&mut self, path: &[Segment], values: &[String]) -> Vec<VariantModel> {
        let mut seen: HashMap<String, &str> = HashMap::new();
        let mut out = Vec::new();
        for (index, value) in values.iter().enumerate() {
            let at = item(path, index);
            match names::pascal_case(value) {
                Ok(rust) => {
                    if let Some(first) = seen.insert(rust.clone(), value) {
                        self.reporter.error_at_value(
                            &at,
                            format!("enum values `{first}` and `{value}` both become the variant `{rust}`"),
                            Some("remove or rename one of them".into()),
                        );
                    }
                    out.push(VariantModel {
                        name: rust,
                        wire_literal: literal(value),
                    });
                }
                Err(error) => self
                    .reporter
                    .error_at_value(&at, error.message, Some(error.help)),
            }
        }
        out
    }

    /// The fields of a struct (a named type or an argument struct) named `owner`.
    fn fields(&mut self, owner: &str, fields: &[Field]) -> Vec<FieldModel> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, &str> = HashMap::new();
        for field in fields {
            let wire = &field.wire;
            let name = match names::snake_case(wire) {
                Ok(name) => name,
                Err(error) => {
                    self.reporter.name_error(&field.path, error);
                    continue;
                }
            };
            if let Some(first) = seen.insert(name.clone(), wire) {
                self.reporter.error_at_key(
                    &field.path,
                    format!("`{first}` and `{wire}` both become the Rust field `{name}`"),
                    Some("rename one of them".into()),
                );
            }
            let bare = names::bare(&name);
            let default_fn = field.default.as_ref().map(|_| {
                format!(
                    "__default_{}_{}",
                    names::snake_case(owner)
                        .unwrap_or_default()
                        .trim_start_matches("r#"),
                    bare
                )
            });
            let required = field.required();
            out.push(FieldModel {
                rename: (bare != wire).then(|| literal(wire)),
                wire_literal: literal(wire),
                wire_name: wire.clone(),
                ty: self.rust_type(&field.ty),
                doc: doc_lines(field.description.as_deref()),
                default_expr: field
                    .default
                    .as_ref()
                    .map(|v| self.default_expr(v, &field.ty)),
                default_doc: field
                    .default
                    .as_ref()
                    .and_then(|value| serde_json::to_string(value).ok()),
                default_fn,
                optional: field.ty.is_optional() && field.default.is_none(),
                required,
                setter: (!required).then(|| format!("with_{}", bare.trim_end_matches('_'))),
                name,
            });
        }
        out
    }

    fn tasks(&mut self, schema: &Schema) -> (Vec<TaskModel>, Vec<ComponentModel>) {
        let mut out = Vec::new();
        let mut methods: HashMap<String, String> = HashMap::new();
        // Each signature method (`add_s`) with its task, checked against every task's
        // method once all are known, whichever comes first in the file.
        let mut signature_methods: Vec<(String, &Task)> = Vec::new();
        // The generated module's type namespace: named types, then each task's argument
        // struct and call type, then (after the loop) each component's worker trait.
        let mut type_names: HashMap<String, Holder> = self
            .rust_types
            .iter()
            .map(|(key, rust)| (rust.clone(), Holder::Type(key.clone())))
            .collect();
        let mut components: IndexMap<String, Vec<TaskModel>> = IndexMap::new();
        // Each component's key as first written, and where (`None`: the implicit default).
        let mut component_keys: IndexMap<String, (String, Option<KeyPath>)> = IndexMap::new();
        let mut reported_components: HashSet<KeyPath> = HashSet::new();

        for task in &schema.tasks {
            let (path, key) = (&task.path, &task.key);
            // `tasks.send_email` → `send_email`: the module prefix is Celery's naming habit,
            // not part of the Rust name.
            let last = key.rsplit('.').next().unwrap_or(key);
            let method = match names::snake_case(last) {
                Ok(method) => method,
                Err(error) => {
                    self.reporter.name_error(path, error);
                    continue;
                }
            };
            if let Some(first) = methods.insert(method.clone(), key.clone()) {
                self.reporter.error_at_key(
                    path,
                    format!("tasks `{first}` and `{key}` both become the Rust method `{method}`"),
                    Some("rename one task's key; set `name:` to keep its wire name".into()),
                );
                continue;
            }
            self.check_method(task, last, &method);
            let bare = names::bare(&method);
            let args_name = names::pascal_case(&format!("{bare}_args")).unwrap_or_default();
            let call_name = names::pascal_case(&format!("{bare}_call")).unwrap_or_default();
            for (generated, item) in [(&args_name, "argument struct"), (&call_name, "call type")] {
                if let Some(holder) = type_names.get(generated.as_str()) {
                    self.reporter.error_at_key(
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

            let (component_key, component_path) = &task.component;
            let component = match names::component_name(component_key) {
                Ok(component) => {
                    component_keys
                        .entry(component.clone())
                        .or_insert_with(|| (component_key.clone(), component_path.clone()));
                    Some(component)
                }
                Err(error) => {
                    // Once for `defaults.component`, not once per task that falls back on it.
                    if let Some(at) = component_path
                        .as_ref()
                        .filter(|at| reported_components.insert((*at).clone()))
                    {
                        self.reporter
                            .error_at_value(at, error.message, Some(error.help));
                    }
                    None
                }
            };
            self.check_arguments(task, &method);

            let args = self.fields(&args_name, &task.args);
            let signature = signature(&method, &args);
            if let Some(signature) = &signature {
                signature_methods.push((signature.method.clone(), task));
            }
            let has_setters = args.iter().any(|a| a.setter.is_some());
            // Clippy's `too_many_arguments` allows 7 parameters, `self` included.
            let client_many_args = 1 + args.iter().filter(|a| a.required).count() > 7;
            let worker_many_args = 2 + args.len() > 7;
            let wire = &task.wire;
            let model = TaskModel {
                wire_literal: literal(wire),
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
                result: task
                    .result
                    .as_ref()
                    .map_or_else(|| "()".to_owned(), |expr| self.rust_type(expr)),
                doc: doc_lines(task.description.as_deref()),
                component: component.clone().unwrap_or_default(),
                options: options(&task.options),
                signature,
            };
            if let Some(component) = component {
                components.entry(component).or_default().push(model.clone());
            }
            out.push(model);
        }
        self.check_signature_methods(&signature_methods, &methods);
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

    /// Each schedule as an entry of `SCHEDULES`: its task's static, and the function that
    /// builds the task's argument struct from the values the schedule gives (the others
    /// take their default, as the client's call would).
    fn schedules(&mut self, schema: &Schema, tasks: &[TaskModel]) -> Vec<ScheduleModel> {
        let mut out = Vec::new();
        for (index, schedule) in schema.schedules.iter().enumerate() {
            let task = &schema.tasks[schedule.task];
            // A task that could not be lowered is reported already.
            let Some(model) = tasks.iter().find(|model| model.wire_name == task.wire) else {
                continue;
            };
            let mut fields = Vec::new();
            for (arg, value) in task.args.iter().zip(&schedule.args) {
                let Some(field) = model.args.fields.iter().find(|f| f.wire_name == arg.wire) else {
                    continue;
                };
                let expr = match (value, &field.default_fn) {
                    (Some(value), _) => self.default_expr(value, &arg.ty),
                    (None, Some(default_fn)) => format!("{default_fn}()"),
                    (None, None) => "::core::option::Option::None".into(),
                };
                fields.push(ScheduleArgModel {
                    name: field.name.clone(),
                    expr,
                });
            }
            let mut doc = vec![format!(
                "The arguments the schedule `{}` sends the task `{}` with.",
                schedule.name, task.wire
            )];
            let description = doc_lines(schedule.description.as_deref());
            if !description.is_empty() {
                doc.push(String::new());
                doc.extend(description);
            }
            out.push(ScheduleModel {
                name_literal: literal(&schedule.name),
                name: schedule.name.clone(),
                doc,
                task_wire_name: task.wire.clone(),
                spec: model.spec.clone(),
                args_fn: format!("__schedule_args_{index}"),
                args_struct: model.args.name.clone(),
                fields,
                recurrence: recurrence_expr(&schedule.recurrence),
                queue: schedule.queue.as_deref().map(literal),
                priority: schedule.priority.map(|p| p.to_string()),
                expires: schedule.expires.map(duration_expr),
            });
        }
        out
    }

    /// A task's method name, checked against what the generated code already names: the
    /// client's own methods and the static listing every task.
    fn check_method(&mut self, task: &Task, last: &str, method: &str) {
        let (path, key, wire) = (&task.path, &task.key, &task.wire);
        let rename = if task.renamed {
            format!("rename the task's key; its `name:` keeps the wire name `{wire}`")
        } else {
            format!("rename the task's key and add `name: {wire}` to keep its wire name")
        };
        if let Some(keyword) = names::unescapable_keyword(method) {
            self.reporter.error_at_key(
                path,
                format!(
                    "task `{key}` cannot become a Rust method: `{keyword}` is a keyword, even as `r#{keyword}`"
                ),
                Some(rename.clone()),
            );
        } else if let Some((_, does)) = names::CLIENT_METHODS.iter().find(|(m, _)| *m == method) {
            self.reporter.error_at_key(
                path,
                format!(
                    "task `{key}` would become the method `{}::{method}`, which the generated client already has: it {does}",
                    names::CLIENT_STRUCT
                ),
                Some(rename.clone()),
            );
        }
        let spec = names::shouty_snake_case(last).unwrap_or_default();
        for (list, of) in [
            (names::TASK_LIST_STATIC, "task"),
            (names::SCHEDULE_LIST_STATIC, "schedule"),
        ] {
            if spec == list {
                self.reporter.error_at_key(
                    path,
                    format!(
                        "task `{key}` generates the static `{list}`, which collides with `{list}`, the generated list of every {of}"
                    ),
                    Some(rename.clone()),
                );
            }
        }
    }

    /// Each signature method (`add_s`, of the task `add`) is a method of the client beside
    /// the tasks' own: a task whose method has that name would be defined twice.
    fn check_signature_methods(
        &mut self,
        signature_methods: &[(String, &Task)],
        methods: &HashMap<String, String>,
    ) {
        for (method, task) in signature_methods {
            let Some(other) = methods.get(method) else {
                continue;
            };
            self.reporter.error_at_key(
                &task.path,
                format!(
                    "task `{}` generates the method `{}::{method}`, its signature for workflows, which collides with the method of task `{other}`",
                    task.key,
                    names::CLIENT_STRUCT
                ),
                Some(format!(
                    "rename the task `{other}` or `{}`; set `name:` to keep its wire name",
                    task.key
                )),
            );
        }
    }

    /// A task's arguments become parameters of its client and worker trait methods, which
    /// already take `&self` and, on the worker side, the task context.
    fn check_arguments(&mut self, task: &Task, method: &str) {
        // Celery sends arguments by position: renaming one only matters to callers that
        // pass it by keyword.
        let unaffected = "callers that pass it by position are unaffected";
        for arg in &task.args {
            let wire = &arg.wire;
            // A name that is no identifier at all is reported with the other fields.
            let Ok(name) = names::snake_case(wire) else {
                continue;
            };
            if name == names::CONTEXT_PARAMETER {
                self.reporter.error_at_key(
                    &arg.path,
                    format!(
                        "argument `{wire}` collides with `{name}`, the parameter through which the worker trait method `{}` receives the task context",
                        names::bare(method)
                    ),
                    Some(format!("rename the argument, e.g. to `context`; {unaffected}")),
                );
            } else if let Some(keyword) = names::unescapable_keyword(&name) {
                self.reporter.error_at_key(
                    &arg.path,
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
                    self.reporter.error_at_value(at, message, Some(help));
                }
                // The implicit component of tasks that name none: the other name moves.
                (Some(_), None) => {
                    if let Some(holder) = type_names.get(component) {
                        self.reporter.error_at_key(
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
                    self.reporter.error_at_value(
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

    /// The Rust type of a (checked) type expression.
    fn rust_type(&self, expr: &TypeExpr) -> String {
        match expr {
            TypeExpr::Scalar(scalar) => rust_scalar(*scalar).to_owned(),
            TypeExpr::Optional(inner) => {
                format!("::core::option::Option<{}>", self.rust_type(inner))
            }
            TypeExpr::List(inner) => format!("::std::vec::Vec<{}>", self.rust_type(inner)),
            TypeExpr::Map(inner) => format!(
                "::std::collections::BTreeMap<::std::string::String, {}>",
                self.rust_type(inner)
            ),
            TypeExpr::Named(name) => self.rust_types.get(name).unwrap_or(name).clone(),
        }
    }

    /// The Rust expression of a (checked) default value.
    fn default_expr(&self, value: &Value, expr: &TypeExpr) -> String {
        match (expr, value) {
            (TypeExpr::Optional(_), Value::Null) => "::core::option::Option::None".into(),
            (TypeExpr::Optional(inner), _) => format!(
                "::core::option::Option::Some({})",
                self.default_expr(value, inner)
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
                if matches!(self.table.get(name), Some(Shape::Enum(_))) =>
            {
                let rust = self.rust_types.get(name).unwrap_or(name);
                let variant = names::pascal_case(s).unwrap_or_default();
                format!("{rust}::{variant}")
            }
            _ => {
                // Composite values are decoded from their JSON form, which validation
                // already checked against the type.
                let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
                format!("__celerity::default_value({})", raw_literal(&json))
            }
        }
    }
}

/// The `Recurrence` expression of a schedule: an interval, or a crontab whose fields are
/// listed expanded (a field that is `*` is left at the builder's "every value").
fn recurrence_expr(recurrence: &Recurrence) -> String {
    match recurrence {
        Recurrence::Every(ms) => format!("__celerity::Recurrence::Every({})", duration_expr(*ms)),
        Recurrence::Crontab {
            expression,
            fields,
            timezone,
        } => {
            let mut expr = format!(
                "__celerity::Crontab::new({}, {})",
                literal(expression),
                literal(timezone)
            );
            for (setter, field) in [
                ("minutes", &fields.minutes),
                ("hours", &fields.hours),
                ("days_of_month", &fields.days_of_month),
                ("months", &fields.months),
                ("days_of_week", &fields.days_of_week),
            ] {
                if let Some(values) = field {
                    let values: Vec<String> = values.iter().map(u8::to_string).collect();
                    expr.push_str(&format!(".{setter}(&[{}])", values.join(", ")));
                }
            }
            format!("__celerity::Recurrence::Crontab({expr})")
        }
    }
}

/// The partial signature of a task called `method` taking `args`, when it takes any: the
/// client method `<method>_s`, whose first argument the previous workflow step supplies.
fn signature(method: &str, args: &[FieldModel]) -> Option<SignatureModel> {
    let (first, rest) = args.split_first()?;
    let params = rest.iter().filter(|a| a.required).count();
    Some(SignatureModel {
        method: format!("{}_s", names::bare(method)),
        input_wire_name: first.wire_name.clone(),
        input: first.ty.clone(),
        args: rest.to_vec(),
        has_params: params > 0,
        has_defaults: params < rest.len(),
        // Clippy's `too_many_arguments` allows 7 parameters, `self` included.
        many_args: 1 + params > 7,
    })
}

/// The Rust type of a built-in scalar.
fn rust_scalar(scalar: Scalar) -> &'static str {
    match scalar {
        Scalar::Bool => "bool",
        Scalar::I32 => "i32",
        Scalar::I64 => "i64",
        Scalar::U32 => "u32",
        Scalar::U64 => "u64",
        Scalar::F64 => "f64",
        Scalar::String => "::std::string::String",
        // The crates behind these types are re-exported by the runtime, so users name the
        // same types at the same versions (`celerity::chrono::NaiveDate`).
        Scalar::Bytes => "::celerity::Bytes",
        Scalar::Decimal => "::celerity::Decimal",
        Scalar::Uuid => "::celerity::uuid::Uuid",
        Scalar::DateTime => "::celerity::chrono::DateTime<::celerity::chrono::Utc>",
        Scalar::Date => "::celerity::chrono::NaiveDate",
        Scalar::Json => "::celerity::serde_json::Value",
    }
}

/// The `TaskSpec` builder arguments of a task's options.
fn options(options: &Options) -> OptionsModel {
    let duration = |ms: Option<u64>| ms.map(duration_expr);
    OptionsModel {
        queue: options.queue.as_deref().map(literal),
        routing_key: options.routing_key.as_deref().map(literal),
        priority: options.priority.map(|p| p.to_string()),
        expires: duration(options.expires),
        soft_time_limit: duration(options.soft_time_limit),
        time_limit: duration(options.time_limit),
        acks_late: options.acks_late,
        ignore_result: options.ignore_result,
        track_started: options.track_started,
        rate_limit: options.rate_limit.map(|(count, per)| RateModel {
            count: count.to_string(),
            per: duration_expr(per),
        }),
        retry: options.retry.as_ref().map(|retry| RetryModel {
            max_retries: retry.max_retries.to_string(),
            delay: duration(retry.delay),
            max_delay: duration(retry.max_delay),
            exponential: retry.exponential,
            jitter: retry.jitter.map(|j| j.to_string()),
            on: retry
                .on
                .as_ref()
                .map(|on| on.iter().map(|name| literal(name)).collect()),
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use crate::validate::validate;

    fn lowered(source: &str) -> (Model, Vec<String>) {
        let root = parse(source).unwrap();
        let mut reporter = Reporter::new(source);
        let schema = validate(&mut reporter, &root);
        let model = lower(&mut reporter, &schema, "test.yaml");
        let messages = reporter
            .finish()
            .into_iter()
            .map(|d| format!("{}:{} {}", d.position.line, d.position.column, d.message))
            .collect();
        (model, messages)
    }

    #[test]
    fn lowering_decides_every_rust_name_and_type() {
        let (model, messages) = lowering_sample();
        assert!(messages.is_empty(), "{messages:?}");
        let task = &model.tasks[0];
        assert_eq!(
            (task.method.as_str(), task.call.as_str(), task.spec.as_str()),
            ("send_email", "SendEmailCall", "SEND_EMAIL")
        );
        assert_eq!(task.args.name, "SendEmailArgs");
        let fields: Vec<(&str, &str, Option<&str>)> = task
            .args
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.ty.as_str(), f.setter.as_deref()))
            .collect();
        assert_eq!(
            fields,
            [
                ("to", "::std::string::String", None),
                ("r#type", "MailKind", Some("with_type")),
                (
                    "cc",
                    "::core::option::Option<::std::vec::Vec<::std::string::String>>",
                    Some("with_cc")
                ),
            ]
        );
        assert_eq!(
            task.args.fields[1].default_expr.as_deref(),
            Some("MailKind::Plain")
        );
        assert_eq!(
            task.result,
            "::core::option::Option<::celerity::uuid::Uuid>"
        );
        assert_eq!(model.components[0].register_fn, "register_mailer");
        assert_eq!(model.enums[0].variants[1].name, "HtmlOnly");
        let signature = task.signature.as_ref().expect("a task with arguments");
        assert_eq!(
            (
                signature.method.as_str(),
                signature.input_wire_name.as_str(),
                signature.input.as_str()
            ),
            ("send_email_s", "to", "::std::string::String")
        );
        let rest: Vec<&str> = signature.args.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(rest, ["r#type", "cc"]);
        assert_eq!(
            (signature.has_params, signature.has_defaults),
            (false, true)
        );
    }

    #[test]
    fn a_task_without_arguments_has_no_signature_method() {
        let (model, messages) =
            lowered("version: 1\ntasks:\n  ping: {}\n  type: {args: {x: i64}}\n");
        assert!(messages.is_empty(), "{messages:?}");
        assert!(model.tasks[0].signature.is_none());
        let signature = model.tasks[1].signature.as_ref().expect("a signature");
        assert_eq!(
            signature.method, "type_s",
            "no raw prefix inside a longer name"
        );
        assert!(signature.args.is_empty());
    }

    fn lowering_sample() -> (Model, Vec<String>) {
        lowered(
            "version: 1\ntypes:\n  mail-kind: {enum: [plain, html-only]}\n\
             tasks:\n  mail.send_email:\n    component: mailer\n    args:\n      to: string\n      type: {type: mail-kind, default: plain}\n      cc: list<string>?\n    result: uuid?\n",
        )
    }

    #[test]
    fn options_become_builder_arguments_in_lint_clean_forms() {
        let model = options(&Options {
            queue: Some("email".into()),
            priority: Some(0),
            expires: Some(86_400_000),
            time_limit: Some(1_500),
            rate_limit: Some((10, 60_000)),
            retry: Some(checked::Retry {
                max_retries: 5,
                jitter: Some(false),
                on: Some(vec!["IOError".into()]),
                ..Default::default()
            }),
            ..Options::default()
        });
        assert_eq!(model.queue.as_deref(), Some("\"email\""));
        assert_eq!(
            model.priority.as_deref(),
            Some("0"),
            "priority 0 is still written"
        );
        assert_eq!(
            model.expires.as_deref(),
            Some("::core::time::Duration::new(86_400, 0)")
        );
        assert_eq!(
            model.time_limit.as_deref(),
            Some("::core::time::Duration::from_millis(1500)")
        );
        let rate = model.rate_limit.unwrap();
        assert_eq!(
            (rate.count.as_str(), rate.per.as_str()),
            ("10", "::core::time::Duration::new(60, 0)")
        );
        let retry = model.retry.unwrap();
        assert_eq!(retry.jitter.as_deref(), Some("false"));
        assert_eq!(retry.on, Some(vec!["\"IOError\"".to_owned()]));
    }

    #[test]
    fn names_rust_cannot_take_are_reported_where_they_are_written() {
        let (_, messages) = lowered(
            "version: 1\ntypes:\n  TasksRegistry: {enum: [a]}\n  Order: {fields: {a-b: string, a_b: string}}\n\
             tasks:\n  new: {args: {ctx: string}}\n  x.new: {}\n",
        );
        assert_eq!(
            messages,
            [
                "3:3 type `TasksRegistry` collides with `TasksRegistry`, the generated client that sends this schema's tasks",
                "4:33 `a-b` and `a_b` both become the Rust field `a_b`",
                "6:3 task `new` would become the method `TasksRegistry::new`, which the generated client already has: it builds the registry from a `Client`",
                "6:16 argument `ctx` collides with `ctx`, the parameter through which the worker trait method `new` receives the task context",
                "7:3 tasks `new` and `x.new` both become the Rust method `new`",
            ]
        );
    }

    #[test]
    fn schedules_take_their_tasks_static_and_give_every_argument_a_value() {
        let (model, messages) = lowered(
            "version: 1\ntasks:\n  purge:\n    args: {days: u32, dry_run: {type: bool, default: false}, note: string?}\n\
             schedules:\n  nightly: {task: purge, args: [7], crontab: \"0 3 * * sun\", timezone: Europe/Berlin}\n",
        );
        assert!(messages.is_empty(), "{messages:?}");
        let schedule = &model.schedules[0];
        assert_eq!(
            (schedule.spec.as_str(), schedule.args_fn.as_str()),
            ("PURGE", "__schedule_args_0")
        );
        let fields: Vec<(&str, &str)> = schedule
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.expr.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("days", "7"),
                ("dry_run", "__default_purge_args_dry_run()"),
                ("note", "::core::option::Option::None"),
            ]
        );
        assert_eq!(
            schedule.recurrence,
            "__celerity::Recurrence::Crontab(__celerity::Crontab::new(\"0 3 * * sun\", \"Europe/Berlin\").minutes(&[0]).hours(&[3]).days_of_week(&[0]))"
        );
    }

    #[test]
    fn a_task_cannot_take_the_name_of_the_schedule_table() {
        let (_, messages) = lowered("version: 1\ntasks:\n  jobs.schedules: {}\n");
        assert_eq!(
            messages,
            [
                "3:3 task `jobs.schedules` generates the static `SCHEDULES`, which collides with `SCHEDULES`, the generated list of every schedule"
            ]
        );
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
