//! Celery's crontab syntax, read at build time: five fields (`minute hour day-of-month
//! month day-of-week`, the order of `crontab.from_string` in `celery/schedules.py`) or one
//! of cron's `@` shortcuts. The runtime receives the expanded fields, so a crontab that
//! reaches it has already been checked here.

/// One field of a crontab, expanded: the values it matches, or `None` for `*` (every
/// value: it matters for daylight saving time, see the runtime's `Crontab`).
pub(crate) type Field = Option<Vec<u8>>;

/// A crontab, expanded field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Crontab {
    pub minutes: Field,
    pub hours: Field,
    pub days_of_month: Field,
    pub months: Field,
    /// 0 is Sunday, as in Celery.
    pub days_of_week: Field,
}

/// What is wrong with a crontab, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CrontabError {
    pub message: String,
    pub help: String,
}

/// The shortcuts cron and most schedulers accept, as five fields.
pub(crate) const SHORTCUTS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Days in each month of a leap year: the most a month can have.
const DAYS_IN_MONTH: [u8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// How each field reads: its name, smallest and largest value, and the names it takes.
struct Spec {
    name: &'static str,
    min: u8,
    max: u8,
    names: &'static [&'static str],
    example: &'static str,
}

const FIELDS: [Spec; 5] = [
    Spec {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        example: "`0`, `*/15`, `0,30`",
    },
    Spec {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        example: "`3`, `9-17`, `*/2`",
    },
    Spec {
        name: "day of the month",
        min: 1,
        max: 31,
        names: &[],
        example: "`1`, `1-7`, `*/2`",
    },
    Spec {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        example: "`1`, `jan-mar`, `*/3`",
    },
    Spec {
        name: "day of the week",
        min: 0,
        max: 6,
        names: &WEEKDAYS,
        example: "`0` or `sun` for Sunday, `mon-fri`",
    },
];

/// Reads a crontab.
pub(crate) fn parse(text: &str) -> Result<Crontab, CrontabError> {
    let trimmed = text.trim();
    let expanded = if trimmed.starts_with('@') {
        SHORTCUTS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(trimmed))
            .map(|(_, fields)| *fields)
            .ok_or_else(|| CrontabError {
                message: format!("unknown crontab shortcut `{trimmed}`"),
                help: format!(
                    "the shortcuts are {}",
                    SHORTCUTS
                        .iter()
                        .map(|(name, _)| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?
    } else {
        trimmed
    };
    let parts: Vec<&str> = expanded.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(CrontabError {
            message: format!(
                "a crontab has five fields, `{trimmed}` has {}",
                parts.len()
            ),
            help: "write `minute hour day-of-month month day-of-week`, e.g. `30 2 * * *` for 02:30 every day, or a shortcut such as `@daily`".into(),
        });
    }
    let mut fields = Vec::with_capacity(5);
    for (part, spec) in parts.iter().zip(&FIELDS) {
        fields.push(field(part, spec)?);
    }
    let crontab = Crontab {
        minutes: fields[0].clone(),
        hours: fields[1].clone(),
        days_of_month: fields[2].clone(),
        months: fields[3].clone(),
        days_of_week: fields[4].clone(),
    };
    check_some_day_exists(&crontab, parts[2], parts[3])?;
    Ok(crontab)
}

/// Celery refuses a crontab whose days of the month fall in none of its months (the 30th
/// of February): it would never run.
fn check_some_day_exists(crontab: &Crontab, days: &str, months: &str) -> Result<(), CrontabError> {
    let (Some(days_of_month), months_of_year) = (&crontab.days_of_month, &crontab.months) else {
        return Ok(());
    };
    let all_months: Vec<u8> = (1..=12).collect();
    let months_of_year = months_of_year.as_ref().unwrap_or(&all_months);
    let possible = months_of_year.iter().any(|month| {
        days_of_month
            .iter()
            .any(|day| *day <= DAYS_IN_MONTH[usize::from(*month - 1)])
    });
    if possible {
        Ok(())
    } else {
        Err(CrontabError {
            message: format!("no month `{months}` has a day `{days}`: this crontab never runs"),
            help: "choose days that the months have (February has 29 days at most)".into(),
        })
    }
}

/// One field: `*`, `*/step`, `a`, `a-b`, `a-b/step`, comma-separated. A range whose end
/// is below its start wraps around (`fri-mon`), as in Celery's `crontab_parser`.
fn field(text: &str, spec: &Spec) -> Result<Field, CrontabError> {
    let error = |message: String| CrontabError {
        message: format!(
            "invalid {} field `{text}` in the crontab: {message}",
            spec.name
        ),
        help: format!(
            "the {} is {} to {}, e.g. {}",
            spec.name, spec.min, spec.max, spec.example
        ),
    };
    if text == "*" {
        return Ok(None);
    }
    let mut values = Vec::new();
    for part in text.split(',') {
        if part.is_empty() {
            return Err(error("an empty item".into()));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u8 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    error(format!("`{step}` is not a step (a whole number from 1)"))
                })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((from, to)) = range.split_once('-') {
            (
                value(from, spec).map_err(&error)?,
                value(to, spec).map_err(&error)?,
            )
        } else if step > 1 {
            // Celery reads `5/15` as no number at all.
            return Err(error(format!(
                "a step applies to `*` or a range: write `{range}-{}/{step}`",
                spec.max
            )));
        } else {
            let single = value(range, spec).map_err(&error)?;
            (single, single)
        };
        let span: Vec<u8> = if from <= to {
            (from..=to).collect()
        } else {
            (from..=spec.max).chain(spec.min..=to).collect()
        };
        values.extend(span.into_iter().step_by(usize::from(step)));
    }
    values.sort_unstable();
    values.dedup();
    Ok(Some(values))
}

/// A number, or a month or weekday name (its first three letters, as Celery reads them).
fn value(text: &str, spec: &Spec) -> Result<u8, String> {
    if let Ok(number) = text.parse::<u32>() {
        return u8::try_from(number)
            .ok()
            .filter(|n| (spec.min..=spec.max).contains(n))
            .ok_or_else(|| {
                if spec.name == "day of the week" && number == 7 {
                    "7 is no day of the week: Sunday is 0 (or `sun`)".to_owned()
                } else {
                    format!("{number} is out of range")
                }
            });
    }
    let lower = text.to_ascii_lowercase();
    let abbreviation = lower.get(..3).unwrap_or(&lower);
    spec.names
        .iter()
        .position(|name| *name == abbreviation)
        .and_then(|index| u8::try_from(index).ok())
        .map(|index| index + spec.min)
        .ok_or_else(|| format!("`{text}` is neither a number nor a name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(min: u8, max: u8, step: usize) -> Field {
        Some((min..=max).step_by(step).collect())
    }

    #[test]
    fn fields_expand_as_celerys_parser_does() {
        let crontab = parse("*/15 9-17/4 1,15 jan-mar mon-fri").unwrap();
        assert_eq!(crontab.minutes, Some(vec![0, 15, 30, 45]));
        assert_eq!(crontab.hours, Some(vec![9, 13, 17]));
        assert_eq!(crontab.days_of_month, Some(vec![1, 15]));
        assert_eq!(crontab.months, Some(vec![1, 2, 3]));
        assert_eq!(crontab.days_of_week, all(1, 5, 1));
        assert_eq!(parse("* * * * *").unwrap().minutes, None);
        assert_eq!(parse("*/20 * * * *").unwrap().minutes, all(0, 59, 20));
    }

    #[test]
    fn a_range_that_ends_below_its_start_wraps_around() {
        let crontab = parse("0 22-2 * * fri-mon").unwrap();
        assert_eq!(crontab.hours, Some(vec![0, 1, 2, 22, 23]));
        assert_eq!(crontab.days_of_week, Some(vec![0, 1, 5, 6]));
    }

    #[test]
    fn names_are_read_by_their_first_three_letters() {
        let crontab = parse("0 0 * December Sunday").unwrap();
        assert_eq!(crontab.months, Some(vec![12]));
        assert_eq!(crontab.days_of_week, Some(vec![0]));
    }

    #[test]
    fn shortcuts_are_five_fields() {
        assert_eq!(parse("@daily").unwrap(), parse("0 0 * * *").unwrap());
        assert_eq!(parse("@HOURLY").unwrap(), parse("0 * * * *").unwrap());
        assert_eq!(parse("@weekly").unwrap().days_of_week, Some(vec![0]));
        let error = parse("@reboot").unwrap_err();
        assert_eq!(error.message, "unknown crontab shortcut `@reboot`");
    }

    #[test]
    fn mistakes_name_the_field() {
        let message = |text: &str| parse(text).unwrap_err().message;
        assert_eq!(
            message("61 * * * *"),
            "invalid minute field `61` in the crontab: 61 is out of range"
        );
        assert_eq!(
            message("0 0 * *"),
            "a crontab has five fields, `0 0 * *` has 4"
        );
        assert_eq!(
            message("0 0 * * 7"),
            "invalid day of the week field `7` in the crontab: 7 is no day of the week: Sunday is 0 (or `sun`)"
        );
        assert_eq!(
            message("5/15 * * * *"),
            "invalid minute field `5/15` in the crontab: a step applies to `*` or a range: write `5-59/15`"
        );
        assert_eq!(
            message("*/0 * * * *"),
            "invalid minute field `*/0` in the crontab: `0` is not a step (a whole number from 1)"
        );
        assert_eq!(
            message("0 0 * smarch *"),
            "invalid month field `smarch` in the crontab: `smarch` is neither a number nor a name"
        );
        assert_eq!(
            message("0 0 30 feb *"),
            "no month `feb` has a day `30`: this crontab never runs"
        );
        assert!(parse("0 0 29 2 *").is_ok(), "the 29th of February exists");
        assert!(parse("0 0 31 * *").is_ok());
    }
}
