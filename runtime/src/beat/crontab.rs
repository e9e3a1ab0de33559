//! Crontab arithmetic: the next time a crontab matches the wall clock of its time zone,
//! including the days that clock jumps (daylight saving time).
//!
//! The rules, those of RFC 5545 (iCalendar) for a local time a clock change makes
//! ambiguous or impossible, with cron's exception for schedules that run every hour:
//!
//! - **a time that does not exist** (clocks jump forward over it, e.g. 02:30 on the day
//!   Europe/Berlin moves from 02:00 to 03:00) runs at that wall time read with the offset
//!   in force before the jump: 02:30 runs at 03:30. A schedule that runs every hour lands
//!   on the next hour's own run (02:30 and 03:30 are then one run), so it still runs once
//!   an hour.
//! - **a time that happens twice** (clocks go back over it, e.g. 01:30 on the day
//!   America/New_York moves from 02:00 back to 01:00) runs once, the first time; a
//!   schedule whose hour field matches every hour runs in both passes, since each is an
//!   hour of real time.
//! - days match when the month, the day of the month **and** the day of the week all
//!   match, as in Celery (`celery/schedules.py::crontab`), not either day field as in
//!   Vixie cron.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

const ALL_MINUTES: u64 = (1 << 60) - 1;
const ALL_HOURS: u32 = (1 << 24) - 1;
/// Bits 1 to 31.
const ALL_DAYS_OF_MONTH: u32 = u32::MAX - 1;
/// Bits 1 to 12.
const ALL_MONTHS: u16 = ((1 << 13) - 1) - 1;
/// Bits 0 (Sunday) to 6.
const ALL_DAYS_OF_WEEK: u8 = (1 << 7) - 1;

/// How far a clock change moves a wall clock at most, for the search: the candidates
/// start this far before the wall time of the instant searched from.
const MAX_SHIFT: Duration = Duration::hours(3);

/// How many days ahead a crontab is searched for its next run: four centuries cover every
/// combination of a day of the month and a day of the week (the Gregorian cycle).
const SEARCH_DAYS: i64 = 146_097;

/// A crontab read in an IANA time zone, its fields expanded (the generator parses and
/// checks the text; [`Crontab::new`] matches every minute until fields are set).
///
/// ```
/// use celerity::beat::Crontab;
///
/// // "30 2 * * mon-fri" in Berlin: 02:30 on weekdays.
/// let crontab = Crontab::new("30 2 * * mon-fri", "Europe/Berlin")
///     .minutes(&[30])
///     .hours(&[2])
///     .days_of_week(&[1, 2, 3, 4, 5]);
/// let friday = "2026-01-02T12:00:00Z".parse().unwrap();
/// let monday = "2026-01-05T01:30:00Z".parse().unwrap();
/// assert_eq!(crontab.next_after(friday), Some(monday));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crontab {
    expression: &'static str,
    timezone: &'static str,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
}

impl Crontab {
    /// A crontab that matches every minute, shown as `expression`, read in the IANA time
    /// zone `timezone`; the setters restrict its fields.
    pub const fn new(expression: &'static str, timezone: &'static str) -> Self {
        Crontab {
            expression,
            timezone,
            minutes: ALL_MINUTES,
            hours: ALL_HOURS,
            days_of_month: ALL_DAYS_OF_MONTH,
            months: ALL_MONTHS,
            days_of_week: ALL_DAYS_OF_WEEK,
        }
    }

    /// Matches these minutes (0–59) only.
    #[must_use]
    pub const fn minutes(mut self, minutes: &[u8]) -> Self {
        self.minutes = mask(minutes, 0, 59) as u64;
        self
    }

    /// Matches these hours (0–23) only.
    #[must_use]
    pub const fn hours(mut self, hours: &[u8]) -> Self {
        self.hours = mask(hours, 0, 23) as u32;
        self
    }

    /// Matches these days of the month (1–31) only.
    #[must_use]
    pub const fn days_of_month(mut self, days: &[u8]) -> Self {
        self.days_of_month = mask(days, 1, 31) as u32;
        self
    }

    /// Matches these months (1–12) only.
    #[must_use]
    pub const fn months(mut self, months: &[u8]) -> Self {
        self.months = mask(months, 1, 12) as u16;
        self
    }

    /// Matches these days of the week (0–6, Sunday is 0) only.
    #[must_use]
    pub const fn days_of_week(mut self, days: &[u8]) -> Self {
        self.days_of_week = mask(days, 0, 6) as u8;
        self
    }

    /// The crontab as written in the schema.
    pub fn expression(&self) -> &'static str {
        self.expression
    }

    /// The IANA name of its time zone.
    pub fn timezone(&self) -> &'static str {
        self.timezone
    }

    /// Its time zone, or `None` for a name the time zone database does not have.
    pub fn tz(&self) -> Option<Tz> {
        self.timezone.parse().ok()
    }

    /// The first instant strictly after `after` at which the crontab runs, following the
    /// module's rules for clock changes; `None` for an unknown time zone or a crontab that
    /// does not match in four centuries.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.tz()?;
        let local = after.with_timezone(&tz).naive_local();
        let start = truncate_to_minute(local - MAX_SHIFT);
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        self.each_local_time(start, |candidate| {
            // Later wall times cannot give an earlier instant than one found this far back.
            if let Some((_, found)) = best {
                if candidate > found + MAX_SHIFT {
                    return false;
                }
            }
            for instant in self.instants(&tz, candidate).into_iter().flatten() {
                if instant > after && best.is_none_or(|(run, _)| instant < run) {
                    best = Some((instant, instant.with_timezone(&tz).naive_local()));
                }
            }
            true
        });
        best.map(|(run, _)| run)
    }

    /// Calls `visit` with each wall time from `start` on that the fields match, in order,
    /// until it returns false or the search horizon is reached.
    fn each_local_time(&self, start: NaiveDateTime, mut visit: impl FnMut(NaiveDateTime) -> bool) {
        let mut day = start.date();
        for _ in 0..SEARCH_DAYS {
            if self.matches_day(day) {
                for hour in bits(u64::from(self.hours), 24) {
                    for minute in bits(self.minutes, 60) {
                        let Some(time) = day.and_hms_opt(hour, minute, 0) else {
                            continue;
                        };
                        if time >= start && !visit(time) {
                            return;
                        }
                    }
                }
            }
            let Some(next) = day.succ_opt() else { return };
            day = next;
        }
    }

    fn matches_day(&self, day: NaiveDate) -> bool {
        self.months & (1 << day.month()) != 0
            && self.days_of_month & (1 << day.day()) != 0
            && self.days_of_week & (1 << day.weekday().num_days_from_sunday()) != 0
    }

    /// The instants at which wall time `local` runs: one, or two in a repeated hour for a
    /// crontab that runs every hour.
    fn instants(&self, tz: &Tz, local: NaiveDateTime) -> [Option<DateTime<Utc>>; 2] {
        match tz.from_local_datetime(&local) {
            LocalResult::Single(time) => [Some(time.with_timezone(&Utc)), None],
            LocalResult::Ambiguous(first, second) => {
                let second = (self.hours == ALL_HOURS).then(|| second.with_timezone(&Utc));
                [Some(first.with_timezone(&Utc)), second]
            }
            LocalResult::None => [
                offset_before_gap(tz, local).map(|offset| {
                    Utc.from_utc_datetime(&(local - Duration::seconds(i64::from(offset))))
                }),
                None,
            ],
        }
    }
}

/// The UTC offset (seconds east) in force just before the clock jump that skips `local`.
fn offset_before_gap(tz: &Tz, local: NaiveDateTime) -> Option<i32> {
    let step = Duration::minutes(15);
    let mut earlier = local;
    for _ in 0..(4 * 48) {
        earlier -= step;
        match tz.from_local_datetime(&earlier) {
            LocalResult::Single(time) => return Some(time.offset().fix().local_minus_utc()),
            LocalResult::Ambiguous(_, later) => {
                return Some(later.offset().fix().local_minus_utc());
            }
            LocalResult::None => {}
        }
    }
    None
}

fn truncate_to_minute(time: NaiveDateTime) -> NaiveDateTime {
    time.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(time)
}

/// The set bits of `mask` below `width`, in increasing order.
fn bits(mask: u64, width: u32) -> impl Iterator<Item = u32> {
    (0..width).filter(move |bit| mask & (1 << bit) != 0)
}

/// The bit mask of `values`, each within `min..=max` (a const panic, so a compile error in
/// a static table, otherwise).
const fn mask(values: &[u8], min: u8, max: u8) -> u128 {
    let mut mask = 0u128;
    let mut index = 0;
    while index < values.len() {
        let value = values[index];
        assert!(
            value >= min && value <= max,
            "a crontab field value is out of range"
        );
        mask |= 1 << value;
        index += 1;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// The first `count` runs strictly after `from`.
    fn runs(crontab: &Crontab, from: &str, count: usize) -> Vec<DateTime<Utc>> {
        std::iter::successors(crontab.next_after(at(from)), |run| crontab.next_after(*run))
            .take(count)
            .collect()
    }

    fn utc(times: &[&str]) -> Vec<DateTime<Utc>> {
        times.iter().map(|t| at(t)).collect()
    }

    #[test]
    fn fields_match_the_wall_clock_of_the_time_zone() {
        let crontab = Crontab::new("*/15 9-10 * * mon-fri", "America/New_York")
            .minutes(&[0, 15, 30, 45])
            .hours(&[9, 10])
            .days_of_week(&[1, 2, 3, 4, 5]);
        // Friday 2026-01-09 10:50 EST is 15:50 UTC; next is Monday 09:00 EST.
        assert_eq!(
            runs(&crontab, "2026-01-09T15:50:00Z", 3),
            utc(&[
                "2026-01-12T14:00:00Z",
                "2026-01-12T14:15:00Z",
                "2026-01-12T14:30:00Z"
            ])
        );
    }

    #[test]
    fn the_31st_runs_only_in_months_that_have_one() {
        let crontab = Crontab::new("0 12 31 * *", "UTC")
            .minutes(&[0])
            .hours(&[12])
            .days_of_month(&[31]);
        assert_eq!(
            runs(&crontab, "2026-01-31T12:00:00Z", 3),
            utc(&[
                "2026-03-31T12:00:00Z",
                "2026-05-31T12:00:00Z",
                "2026-07-31T12:00:00Z"
            ])
        );
    }

    #[test]
    fn the_29th_of_february_runs_in_leap_years_only() {
        let crontab = Crontab::new("0 0 29 2 *", "Europe/Berlin")
            .minutes(&[0])
            .hours(&[0])
            .days_of_month(&[29])
            .months(&[2]);
        // Midnight in Berlin is 23:00 UTC the day before (CET).
        assert_eq!(
            runs(&crontab, "2025-01-01T00:00:00Z", 3),
            utc(&[
                "2028-02-28T23:00:00Z",
                "2032-02-28T23:00:00Z",
                "2036-02-28T23:00:00Z"
            ])
        );
    }

    #[test]
    fn days_match_when_the_day_of_the_month_and_of_the_week_both_do() {
        // Friday the 13th, as Celery reads it (both fields), not "every 13th and every
        // Friday" as Vixie cron would.
        let crontab = Crontab::new("0 0 13 * fri", "UTC")
            .minutes(&[0])
            .hours(&[0])
            .days_of_month(&[13])
            .days_of_week(&[5]);
        assert_eq!(
            runs(&crontab, "2026-01-01T00:00:00Z", 3),
            utc(&[
                "2026-02-13T00:00:00Z",
                "2026-03-13T00:00:00Z",
                "2026-11-13T00:00:00Z"
            ])
        );
    }

    #[test]
    fn the_last_day_of_each_month_rolls_over_into_the_next_year() {
        let crontab = Crontab::new("59 23 28-31 12 *", "UTC")
            .minutes(&[59])
            .hours(&[23])
            .days_of_month(&[28, 29, 30, 31])
            .months(&[12]);
        assert_eq!(
            runs(&crontab, "2026-12-31T23:59:00Z", 2),
            utc(&["2027-12-28T23:59:00Z", "2027-12-29T23:59:00Z"])
        );
    }

    fn daily_at(hour: u8, minute: u8, timezone: &'static str) -> Crontab {
        Crontab::new("daily", timezone)
            .minutes(&[minute])
            .hours(&[hour])
    }

    #[test]
    fn berlin_spring_forward_runs_a_skipped_time_an_hour_later_once() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC). 02:30 does not exist and
        // runs at 03:30 CEST (01:30 UTC), read with the offset before the jump.
        let crontab = daily_at(2, 30, "Europe/Berlin");
        assert_eq!(
            runs(&crontab, "2026-03-27T12:00:00Z", 3),
            utc(&[
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-30T00:30:00Z"
            ])
        );
    }

    #[test]
    fn berlin_fall_back_runs_a_repeated_time_once_the_first_time() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens at 00:30 UTC
        // (CEST) and again at 01:30 UTC (CET).
        let crontab = daily_at(2, 30, "Europe/Berlin");
        assert_eq!(
            runs(&crontab, "2026-10-24T12:00:00Z", 3),
            utc(&[
                "2026-10-25T00:30:00Z",
                "2026-10-26T01:30:00Z",
                "2026-10-27T01:30:00Z"
            ])
        );
    }

    #[test]
    fn new_york_spring_forward_and_fall_back() {
        // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC); 02:30 runs at 03:30 EDT.
        let crontab = daily_at(2, 30, "America/New_York");
        assert_eq!(
            runs(&crontab, "2026-03-07T12:00:00Z", 3),
            utc(&[
                "2026-03-08T07:30:00Z",
                "2026-03-09T06:30:00Z",
                "2026-03-10T06:30:00Z"
            ])
        );
        // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00 UTC); 01:30 happens at 05:30 UTC
        // (EDT) and 06:30 UTC (EST): once, the first time.
        let crontab = daily_at(1, 30, "America/New_York");
        assert_eq!(
            runs(&crontab, "2026-10-31T12:00:00Z", 2),
            utc(&["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"])
        );
    }

    #[test]
    fn an_hourly_crontab_runs_once_an_hour_of_real_time_across_both_changes() {
        let hourly = Crontab::new("30 * * * *", "America/New_York").minutes(&[30]);
        // Spring forward: 01:30 EST (06:30 UTC), then 02:30 does not exist and lands on
        // 03:30 EDT (07:30 UTC), which is one run.
        assert_eq!(
            runs(&hourly, "2026-03-08T06:00:00Z", 3),
            utc(&[
                "2026-03-08T06:30:00Z",
                "2026-03-08T07:30:00Z",
                "2026-03-08T08:30:00Z"
            ])
        );
        // Fall back: 01:30 runs in both passes, an hour of real time apart.
        assert_eq!(
            runs(&hourly, "2026-11-01T04:00:00Z", 4),
            utc(&[
                "2026-11-01T04:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T07:30:00Z",
            ])
        );
        let berlin = Crontab::new("*/30 * * * *", "Europe/Berlin").minutes(&[0, 30]);
        assert_eq!(
            runs(&berlin, "2026-10-25T00:10:00Z", 4),
            utc(&[
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z",
            ]),
            "02:30 CEST, then 02:00, 02:30 and 03:00 CET: every half hour of real time"
        );
    }

    #[test]
    fn an_unknown_time_zone_never_runs() {
        assert_eq!(
            Crontab::new("* * * * *", "Mars/Olympus").next_after(at("2026-01-01T00:00:00Z")),
            None
        );
    }
}
