//! The rules: tasks matched by key (or, for a task whose key changed, by wire name),
//! their arguments by position, and the named types they use matched where they are used.

use std::collections::{HashSet, VecDeque};

use super::{Change, Severity};
use crate::checked::{Field, Schema, Task, TypeDecl, TypeKind};
use crate::locate::{KeyPath, Locations, Position, Segment, display_path};
use crate::report::{child, item};
use crate::types::TypeExpr;
use crate::validate::DEFAULT_QUEUE;

/// One version of the schema: what it declares and where.
pub(crate) struct Side {
    schema: Schema,
    locations: Locations,
}

impl Side {
    pub(crate) fn new(schema: Schema, locations: Locations) -> Self {
        Side { schema, locations }
    }

    fn decl(&self, key: &str) -> Option<&TypeDecl> {
        self.schema.types.iter().find(|decl| decl.key == key)
    }

    fn key(&self, path: &[Segment]) -> Position {
        self.locations.key(path)
    }

    fn value(&self, path: &[Segment]) -> Position {
        self.locations.value(path)
    }

    /// Where the type of a field or argument is written: its `type:`, or the short form.
    fn type_of(&self, field: &Field) -> Position {
        self.locations
            .exact_value(&child(&field.path, "type"))
            .unwrap_or_else(|| self.value(&field.path))
    }

    /// Where a task's result type is written, else the task.
    fn result_of(&self, task: &Task) -> Position {
        self.value(&child(&task.path, "result"))
    }

    /// Where a task's queue is set: its own options, else `defaults:`, else the task.
    fn queue_of(&self, task: &Task) -> Position {
        let own = child(&child(&task.path, "options"), "queue");
        let default = child(&child(&[], "defaults"), "queue");
        self.locations
            .exact_value(&own)
            .or_else(|| self.locations.exact_value(&default))
            .unwrap_or_else(|| self.key(&task.path))
    }

    /// Where a task's wire name is written: its `name:`, else its key.
    fn wire_of(&self, task: &Task) -> Position {
        if task.renamed {
            self.value(&child(&task.path, "name"))
        } else {
            self.key(&task.path)
        }
    }
}

/// Every change from `old` to `new`: the tasks', then the named types' they use.
pub(crate) fn compare(old: &Side, new: &Side) -> Vec<Change> {
    let mut comparison = Comparison {
        old,
        new,
        changes: Vec::new(),
        pairs: VecDeque::new(),
        seen: HashSet::new(),
    };
    for task in &old.schema.tasks {
        let tasks = &new.schema.tasks;
        let matched = tasks
            .iter()
            .find(|t| t.key == task.key)
            .or_else(|| tasks.iter().find(|t| t.wire == task.wire));
        match matched {
            Some(now) => comparison.task(task, now),
            None => comparison.push(Change {
                severity: Severity::Breaking,
                rule: "TASK_REMOVED",
                message: format!("task `{}` was removed", task.wire),
                old: Some(old.key(&task.path)),
                new: None,
                path: display_path(&task.path),
                help: "senders still on the old schema send it to workers that no longer know it \
                       (Celery's NotRegistered); remove it once nothing sends it"
                    .into(),
            }),
        }
    }
    while let Some((was, now)) = comparison.pairs.pop_front() {
        comparison.types(&was, &now);
    }
    comparison.changes
}

struct Comparison<'a> {
    old: &'a Side,
    new: &'a Side,
    changes: Vec<Change>,
    /// Named types used in the same place of both versions, to compare next.
    pairs: VecDeque<(String, String)>,
    seen: HashSet<(String, String)>,
}

impl Comparison<'_> {
    fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// A change with a place in both files.
    #[allow(clippy::too_many_arguments)] // one value per field of `Change`
    fn both(
        &mut self,
        severity: Severity,
        rule: &'static str,
        message: String,
        old: Position,
        new: Position,
        path: &KeyPath,
        help: &str,
    ) {
        self.push(Change {
            severity,
            rule,
            message,
            old: Some(old),
            new: Some(new),
            path: display_path(path),
            help: help.to_owned(),
        });
    }

    fn task(&mut self, was: &Task, now: &Task) {
        let (old, new) = (self.old, self.new);
        if was.wire != now.wire {
            self.both(
                Severity::Breaking,
                "TASK_WIRE_NAME_CHANGED",
                format!(
                    "task `{}` changed its wire name from `{}` to `{}`",
                    now.key, was.wire, now.wire
                ),
                old.wire_of(was),
                new.wire_of(now),
                &now.path,
                "workers find a task by its wire name, and senders on the old schema still use \
                 the old one; keep `name:` as it was, or add a task beside the old one",
            );
        }
        self.arguments(was, now);
        if !self.same(was.result.as_ref(), now.result.as_ref()) {
            self.both(
                Severity::Breaking,
                "RESULT_RETYPED",
                format!(
                    "the result of task `{}` changed from {} to {}",
                    now.wire,
                    shown(was.result.as_ref()),
                    shown(now.result.as_ref())
                ),
                old.result_of(was),
                new.result_of(now),
                &child(&now.path, "result"),
                "clients on either schema cannot read the results of workers on the other; \
                 add a task with the new result instead",
            );
        }
        let queue = |task: &Task| {
            task.options
                .queue
                .clone()
                .unwrap_or_else(|| DEFAULT_QUEUE.to_owned())
        };
        let (from, to) = (queue(was), queue(now));
        if from != to {
            self.both(
                Severity::Warning,
                "QUEUE_CHANGED",
                format!("task `{}` moved from queue `{from}` to `{to}`", now.wire),
                old.queue_of(was),
                new.queue_of(now),
                &child(&child(&now.path, "options"), "queue"),
                &format!(
                    "workers on the old schema do not consume `{to}`, and messages already in \
                     `{from}` wait for workers that consume it: run workers on both queues \
                     until `{from}` is empty"
                ),
            );
        }
    }

    /// Arguments travel by position: each old argument must keep its place and type, and
    /// a new one must come last and be optional.
    fn arguments(&mut self, was: &Task, now: &Task) {
        let (old, new) = (self.old, self.new);
        for (index, arg) in was.args.iter().enumerate() {
            let Some(moved) = now.args.iter().position(|a| a.wire == arg.wire) else {
                self.push(Change {
                    severity: Severity::Breaking,
                    rule: "ARGUMENT_REMOVED",
                    message: format!("argument `{}` of task `{}` was removed", arg.wire, now.wire),
                    old: Some(old.key(&arg.path)),
                    new: Some(new.key(&child(&now.path, "args"))),
                    path: display_path(&arg.path),
                    help: "senders on the old schema still send it, and workers on the new \
                           schema refuse an argument they do not take; keep it (with a default) \
                           and ignore it"
                        .into(),
                });
                continue;
            };
            let current = &now.args[moved];
            if moved != index {
                self.both(
                    Severity::Breaking,
                    "ARGUMENT_REORDERED",
                    format!(
                        "argument `{}` of task `{}` moved from position {} to {}",
                        arg.wire,
                        now.wire,
                        index + 1,
                        moved + 1
                    ),
                    old.key(&arg.path),
                    new.key(&current.path),
                    &current.path,
                    "arguments travel by position: a worker on either schema would read it as \
                     another argument; keep the order and add arguments at the end",
                );
            }
            if !self.same(Some(&arg.ty), Some(&current.ty)) {
                self.both(
                    Severity::Breaking,
                    "ARGUMENT_RETYPED",
                    format!(
                        "argument `{}` of task `{}` changed type from `{}` to `{}`",
                        arg.wire, now.wire, arg.ty, current.ty
                    ),
                    old.type_of(arg),
                    new.type_of(current),
                    &current.path,
                    "messages of senders on either schema fail to decode on workers of the \
                     other; add an argument (with a default) or a task instead",
                );
            }
        }
        for arg in &now.args {
            if arg.required() && !was.args.iter().any(|a| a.wire == arg.wire) {
                self.both(
                    Severity::Breaking,
                    "ARGUMENT_ADDED_REQUIRED",
                    format!(
                        "task `{}` has a new required argument `{}`",
                        now.wire, arg.wire
                    ),
                    old.key(&child(&was.path, "args")),
                    new.key(&arg.path),
                    &arg.path,
                    "senders on the old schema do not send it, so workers on the new schema \
                     refuse their messages; give it a default, or make it optional (`T?`)",
                );
            }
        }
    }

    /// Whether two types have the same wire form so far as they themselves say; named
    /// types of the same kind are queued, to compare their fields or values.
    fn same(&mut self, was: Option<&TypeExpr>, now: Option<&TypeExpr>) -> bool {
        match (was, now) {
            (None, None) => true,
            (Some(was), Some(now)) => self.same_type(was, now),
            _ => false,
        }
    }

    fn same_type(&mut self, was: &TypeExpr, now: &TypeExpr) -> bool {
        match (was, now) {
            (TypeExpr::Scalar(a), TypeExpr::Scalar(b)) => a == b,
            (TypeExpr::Optional(a), TypeExpr::Optional(b))
            | (TypeExpr::List(a), TypeExpr::List(b))
            | (TypeExpr::Map(a), TypeExpr::Map(b)) => self.same_type(a, b),
            (TypeExpr::Named(a), TypeExpr::Named(b)) => {
                let kinds = (self.old.decl(a), self.new.decl(b));
                let same_kind = matches!(
                    (kinds.0.map(|d| &d.kind), kinds.1.map(|d| &d.kind)),
                    (Some(TypeKind::Struct(_)), Some(TypeKind::Struct(_)))
                        | (Some(TypeKind::Enum(_)), Some(TypeKind::Enum(_)))
                );
                let pair = (a.clone(), b.clone());
                if same_kind && self.seen.insert(pair.clone()) {
                    self.pairs.push_back(pair);
                }
                same_kind
            }
            _ => false,
        }
    }

    /// Two named types used in the same place: their fields, or their values.
    fn types(&mut self, was: &str, now: &str) {
        let (old, new) = (self.old, self.new);
        let (Some(was), Some(now)) = (old.decl(was), new.decl(now)) else {
            return;
        };
        let name = if was.key == now.key {
            format!("`{}`", now.key)
        } else {
            format!("`{}` (`{}` before)", now.key, was.key)
        };
        match (&was.kind, &now.kind) {
            (TypeKind::Struct(before), TypeKind::Struct(after)) => {
                self.fields(&name, (was, before), (now, after));
            }
            (TypeKind::Enum(before), TypeKind::Enum(after)) => {
                self.values(&name, (was, before), (now, after));
            }
            _ => {}
        }
    }

    fn fields(
        &mut self,
        name: &str,
        (was, before): (&TypeDecl, &[Field]),
        (now, after): (&TypeDecl, &[Field]),
    ) {
        let (old, new) = (self.old, self.new);
        for field in before {
            let Some(current) = after.iter().find(|f| f.wire == field.wire) else {
                self.push(Change {
                    severity: Severity::Breaking,
                    rule: "FIELD_REMOVED",
                    message: format!("field `{}` of type {name} was removed", field.wire),
                    old: Some(old.key(&field.path)),
                    new: Some(new.key(&child(&now.path, "fields"))),
                    path: display_path(&field.path),
                    help: "readers on the old schema expect it in every value written on the \
                           new one; keep it"
                        .into(),
                });
                continue;
            };
            if !self.same_type(&field.ty, &current.ty) {
                self.both(
                    Severity::Breaking,
                    "FIELD_RETYPED",
                    format!(
                        "field `{}` of type {name} changed type from `{}` to `{}`",
                        field.wire, field.ty, current.ty
                    ),
                    old.type_of(field),
                    new.type_of(current),
                    &current.path,
                    "values written on either schema fail to decode on the other; add a field \
                     (optional, or with a default) instead",
                );
            }
        }
        for field in after {
            if field.required() && !before.iter().any(|f| f.wire == field.wire) {
                self.both(
                    Severity::Breaking,
                    "FIELD_ADDED_REQUIRED",
                    format!("type {name} has a new required field `{}`", field.wire),
                    old.key(&child(&was.path, "fields")),
                    new.key(&field.path),
                    &field.path,
                    "values written on the old schema lack it, so readers on the new schema \
                     refuse them; give it a default, or make it optional (`T?`)",
                );
            }
        }
    }

    fn values(
        &mut self,
        name: &str,
        (was, before): (&TypeDecl, &[String]),
        (now, after): (&TypeDecl, &[String]),
    ) {
        let (old, new) = (self.old, self.new);
        let (was_list, now_list) = (child(&was.path, "enum"), child(&now.path, "enum"));
        for (index, value) in before.iter().enumerate() {
            if !after.contains(value) {
                self.both(
                    Severity::Breaking,
                    "ENUM_VALUE_REMOVED",
                    format!("value `{value}` of enum {name} was removed"),
                    old.value(&item(&was_list, index)),
                    new.value(&now_list),
                    &item(&was_list, index),
                    "values written on the old schema fail to decode on the new one; keep it",
                );
            }
        }
        for (index, value) in after.iter().enumerate() {
            if !before.contains(value) {
                self.both(
                    Severity::Warning,
                    "ENUM_VALUE_ADDED",
                    format!("enum {name} has a new value `{value}`"),
                    old.value(&was_list),
                    new.value(&item(&now_list, index)),
                    &item(&now_list, index),
                    "workers and clients still on the old schema refuse it: deploy every reader \
                     of the new schema before anything sends it",
                );
            }
        }
    }
}

/// A result type for messages: `` `string` ``, or "no result".
fn shown(result: Option<&TypeExpr>) -> String {
    result.map_or_else(|| "no result".to_owned(), |ty| format!("`{ty}`"))
}
