//! Periodic tasks: each names a task of the schema, gives its arguments (checked against
//! the task's argument types, as a call would be), says when it runs (an interval, or a
//! crontab in an IANA time zone) and how each run is sent.

use serde_yaml::Value;

use crate::checked::{Recurrence, Schedule, Task, TypeTable};
use crate::diagnostic::did_you_mean;
use crate::locate::{KeyPath, Segment};
use crate::report::{Reporter, child, describe, item};
use crate::schema::{ScheduleDef, ScheduleOptions};

use super::values::{DURATION_HELP, check_value, duration_ms};

/// The time zone of a crontab that names none (Celery's default `timezone`, with
/// `enable_utc`).
const DEFAULT_TIMEZONE: &str = "UTC";

/// Every schedule, each checked against the task it names.
pub(super) fn schedules(
    reporter: &mut Reporter<'_>,
    schedules: &[(KeyPath, String, ScheduleDef)],
    tasks: &[Task],
    table: &TypeTable,
) -> Vec<Schedule> {
    schedules
        .iter()
        .filter_map(|(path, name, def)| schedule(reporter, path, name, def, tasks, table))
        .collect()
}

fn schedule(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    name: &str,
    def: &ScheduleDef,
    tasks: &[Task],
    table: &TypeTable,
) -> Option<Schedule> {
    if name.trim().is_empty() {
        reporter.error_at_key(path, "a schedule's name cannot be empty", None);
    }
    let task = find_task(reporter, &child(path, "task"), &def.task, tasks);
    let args = task.map(|index| arguments(reporter, path, def, &tasks[index], table));
    let recurrence = recurrence(reporter, path, def);
    let options = def.options.clone().unwrap_or_default();
    let interval = match (&recurrence, &def.every) {
        (Some(Recurrence::Every(ms)), Some(written)) => Some((*ms, written)),
        _ => None,
    };
    let expires = self::options(reporter, &child(path, "options"), &options, interval);
    Some(Schedule {
        name: name.to_owned(),
        description: def.description.clone(),
        task: task?,
        args: args?,
        recurrence: recurrence?,
        queue: options.queue.filter(|queue| !queue.trim().is_empty()),
        priority: options.priority.filter(|priority| *priority <= 9),
        expires,
    })
}

/// The index of the task `reference` names: its key under `tasks:`, else its wire name.
fn find_task(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    reference: &str,
    tasks: &[Task],
) -> Option<usize> {
    let found = tasks
        .iter()
        .position(|task| task.key == reference)
        .or_else(|| tasks.iter().position(|task| task.wire == reference));
    if found.is_none() {
        let help = did_you_mean(reference, tasks.iter().map(|task| task.key.as_str()))
            .unwrap_or_else(|| {
                "name a task declared under `tasks:`, by its key or its wire name".into()
            });
        reporter.error_at_value(path, format!("unknown task `{reference}`"), Some(help));
    }
    found
}

/// The value given for each argument of `task`, by position (`args`) or by name
/// (`kwargs`), each checked against the argument's type; every required argument given.
fn arguments(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    def: &ScheduleDef,
    task: &Task,
    table: &TypeTable,
) -> Vec<Option<Value>> {
    let mut given: Vec<Option<(KeyPath, Value)>> = vec![None; task.args.len()];
    let args_path = child(path, "args");
    match &def.args {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for (index, value) in items.iter().enumerate() {
                let at = item(&args_path, index);
                if index < task.args.len() {
                    given[index] = Some((at, value.clone()));
                } else {
                    reporter.error_at_value(
                        &at,
                        format!(
                            "task `{}` takes {} argument{}, `args` gives {}",
                            task.key,
                            task.args.len(),
                            if task.args.len() == 1 { "" } else { "s" },
                            items.len()
                        ),
                        Some(format!("remove the extra values; the arguments are: {}", argument_names(task))),
                    );
                    break;
                }
            }
        }
        Some(other) => reporter.error_at_value(
            &args_path,
            format!("expected `args` to be a list, found {}", describe(other)),
            Some("give arguments by position as a list (`args: [60, true]`) or by name under `kwargs:`".into()),
        ),
    }
    let kwargs_path = child(path, "kwargs");
    match &def.kwargs {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(entries)) => {
            for (key, value) in entries {
                let Some(key) = key.as_str() else {
                    reporter.error_at_value(
                        &kwargs_path,
                        "the keys of `kwargs` must be strings",
                        None,
                    );
                    continue;
                };
                let at = child(&kwargs_path, key);
                match task.args.iter().position(|arg| arg.wire == key) {
                    Some(index) if given[index].is_some() => reporter.error_at_key(
                        &at,
                        format!("argument `{key}` is given twice, by position and by name"),
                        Some("keep one of the two".into()),
                    ),
                    Some(index) => given[index] = Some((at, value.clone())),
                    None => reporter.error_at_key(
                        &at,
                        format!("task `{}` has no argument `{key}`", task.key),
                        Some(
                            did_you_mean(key, task.args.iter().map(|arg| arg.wire.as_str()))
                                .unwrap_or_else(|| {
                                    format!("the arguments are: {}", argument_names(task))
                                }),
                        ),
                    ),
                }
            }
        }
        Some(other) => reporter.error_at_value(
            &kwargs_path,
            format!(
                "expected `kwargs` to be a mapping, found {}",
                describe(other)
            ),
            Some("give arguments by name as a mapping, e.g. `kwargs: {dry_run: true}`".into()),
        ),
    }
    let mut values = Vec::with_capacity(task.args.len());
    for (arg, given) in task.args.iter().zip(given) {
        match given {
            Some((at, value)) => match check_value(&value, &arg.ty, table) {
                Ok(()) => values.push(Some(value)),
                Err(problem) => {
                    reporter.error_at_value(
                        &at,
                        format!(
                            "argument `{}` of task `{}` does not match the type `{}`: {problem}",
                            arg.wire, task.key, arg.ty
                        ),
                        Some(format!("give a value of type `{}`", arg.ty)),
                    );
                    values.push(None);
                }
            },
            None if arg.required() => {
                reporter.error_at_key(
                    path,
                    format!(
                        "task `{}` requires the argument `{}`, which this schedule does not give",
                        task.key, arg.wire
                    ),
                    Some(format!(
                        "give it under `kwargs:` (`{}: <{}>`) or by position under `args:`",
                        arg.wire, arg.ty
                    )),
                );
                values.push(None);
            }
            None => values.push(None),
        }
    }
    values
}

fn argument_names(task: &Task) -> String {
    if task.args.is_empty() {
        return "none".into();
    }
    task.args
        .iter()
        .map(|arg| format!("`{}`", arg.wire))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An interval or a crontab in a time zone: exactly one of the two.
fn recurrence(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    def: &ScheduleDef,
) -> Option<Recurrence> {
    match (&def.every, &def.crontab) {
        (Some(_), Some(_)) => {
            reporter.error_at_key(
                &child(path, "crontab"),
                "a schedule has either `every` or `crontab`, not both",
                Some("remove one of them".into()),
            );
            None
        }
        (None, None) => {
            reporter.error_at_key(
                path,
                "a schedule needs `every` (an interval) or `crontab`",
                Some(
                    "add e.g. `every: 5m`, or `crontab: \"30 2 * * *\"` for 02:30 every day".into(),
                ),
            );
            None
        }
        (Some(every), None) => {
            let at = child(path, "every");
            if def.timezone.is_some() {
                reporter.error_at_key(
                    &child(path, "timezone"),
                    "`timezone` has no effect on an interval",
                    Some("remove it: runs of `every` fall on multiples of the interval since the Unix epoch, whatever the time zone; a crontab reads the wall clock of its time zone".into()),
                );
            }
            match duration_ms(every) {
                Ok(0) => {
                    reporter.error_at_value(
                        &at,
                        "an interval must be longer than zero",
                        Some(DURATION_HELP.into()),
                    );
                    None
                }
                Ok(ms) => Some(Recurrence::Every(ms)),
                Err(message) => {
                    reporter.error_at_value(&at, message, Some(DURATION_HELP.into()));
                    None
                }
            }
        }
        (None, Some(expression)) => {
            let fields = crate::crontab::parse(expression)
                .map_err(|error| {
                    reporter.error_at_value(
                        &child(path, "crontab"),
                        error.message,
                        Some(error.help),
                    );
                })
                .ok();
            let timezone = timezone(reporter, &child(path, "timezone"), def.timezone.as_deref());
            Some(Recurrence::Crontab {
                expression: expression.trim().to_owned(),
                fields: fields?,
                timezone: timezone?,
            })
        }
    }
}

/// An IANA time zone name, as the tz database (through `chrono-tz`) spells it.
fn timezone(reporter: &mut Reporter<'_>, path: &[Segment], name: Option<&str>) -> Option<String> {
    let Some(name) = name else {
        return Some(DEFAULT_TIMEZONE.to_owned());
    };
    if name.parse::<chrono_tz::Tz>().is_ok() {
        return Some(name.to_owned());
    }
    let help = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(name))
        .map(|tz| format!("did you mean `{}`?", tz.name()))
        .or_else(|| did_you_mean(name, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
        .unwrap_or_else(|| {
            "use an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`".into()
        });
    reporter.error_at_value(path, format!("unknown time zone `{name}`"), Some(help));
    None
}

/// The sending options; returns `expires` in milliseconds.
fn options(
    reporter: &mut Reporter<'_>,
    path: &[Segment],
    options: &ScheduleOptions,
    interval: Option<(u64, &Value)>,
) -> Option<u64> {
    if options
        .queue
        .as_ref()
        .is_some_and(|queue| queue.trim().is_empty())
    {
        reporter.error_at_value(&child(path, "queue"), "a queue name cannot be empty", None);
    }
    if let Some(priority) = options.priority.filter(|p| *p > 9) {
        reporter.error_at_value(
            &child(path, "priority"),
            format!("priority {priority} is out of range"),
            Some("use a priority from 0 to 9".into()),
        );
    }
    let at = child(path, "expires");
    let expires = options.expires.as_ref().and_then(|value| {
        duration_ms(value)
            .map_err(|message| reporter.error_at_value(&at, message, Some(DURATION_HELP.into())))
            .ok()
    })?;
    if let Some((every, written)) = interval {
        if expires > every {
            reporter.error_at_value(
                &at,
                "`expires` is longer than the interval: runs a busy worker could not start would pile up behind the next ones",
                Some(format!(
                    "make `expires` at most the interval ({}), so that a run not started before the next one is due is revoked",
                    serde_yaml::to_string(written).unwrap_or_default().trim()
                )),
            );
        }
    }
    Some(expires)
}
