//! Cron expressions for backup schedules: parsing the standard five fields (and the `@daily`-style
//! macros) and finding the next time, in UTC unix seconds, at which a schedule fires.
//!
//! Semantics follow Vixie cron / cronie, so a schedule behaves here as it would in a crontab:
//! day-of-week 7 is Sunday, `N/step` runs from N to the field's maximum, and when both day fields
//! are restricted (neither starts with `*`) a day matches if either field does.

use std::fmt;
use std::str::FromStr;

/// A parsed cron schedule. Equality compares the normalized expression, so `@daily` and
/// `0 0 * * *` fire at the same times but are different schedules (they print differently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The expression lower-cased with single spaces between fields: what `Display` prints, so a
    /// stored schedule reads back as the user wrote it.
    expr: String,
    /// Bit n set when minute n (0-59) fires; likewise for the other masks.
    minutes: u64,
    /// Bits 0-23.
    hours: u64,
    /// Bits 1-31.
    days_of_month: u64,
    /// Bits 1-12.
    months: u64,
    /// Bits 0-6, Sunday = 0 (a written 7 is folded into 0).
    days_of_week: u64,
    /// Both day fields are restricted, so a day matches when either matches (crontab(5));
    /// otherwise both must match, which for an unrestricted field always holds.
    days_either: bool,
}

const MINUTES_PER_DAY: i64 = 24 * 60;

/// The longest each month can be; February counts its leap day so that `29 2` can fire.
const MAX_DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// One of the five fields: where it sits, what it is called in errors, what it accepts.
struct Field {
    position: usize,
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
    /// Appended to "is not a number" so the error says which names would have worked.
    names_hint: &'static str,
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("feb", 2),
    ("mar", 3),
    ("apr", 4),
    ("may", 5),
    ("jun", 6),
    ("jul", 7),
    ("aug", 8),
    ("sep", 9),
    ("oct", 10),
    ("nov", 11),
    ("dec", 12),
];

const WEEKDAY_NAMES: &[(&str, u32)] =
    &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)];

const FIELDS: [Field; 5] = [
    Field { position: 1, name: "minute", min: 0, max: 59, names: &[], names_hint: "" },
    Field { position: 2, name: "hour", min: 0, max: 23, names: &[], names_hint: "" },
    Field { position: 3, name: "day-of-month", min: 1, max: 31, names: &[], names_hint: "" },
    Field {
        position: 4,
        name: "month",
        min: 1,
        max: 12,
        names: MONTH_NAMES,
        names_hint: " or a month name (jan-dec)",
    },
    // 7 is accepted as a second Sunday, as every cron does, so `mon-sun` reads as `1-7`.
    Field {
        position: 5,
        name: "day-of-week",
        min: 0,
        max: 7,
        names: WEEKDAY_NAMES,
        names_hint: " or a weekday name (sun-sat)",
    },
];

impl Field {
    fn error(&self, token: &str, problem: &str) -> String {
        format!("cron field {} ({}) `{token}` {problem}", self.position, self.name)
    }

    /// The set of values a field's text selects, as a bit mask.
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut mask = 0u64;
        for item in text.split(',') {
            if item.is_empty() {
                return Err(self.error(text, "has an empty list element"));
            }
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(self.step(item, step)?)),
                None => (item, None),
            };
            let (low, high) = if range == "*" {
                (self.min, self.max)
            } else if let Some((start, end)) = range.split_once('-') {
                if start.is_empty() || end.is_empty() || end.contains('-') {
                    return Err(self.error(item, "is not a valid range"));
                }
                let (low, high) = (self.value(start)?, self.value(end)?);
                // Vixie cron has no wrap-around ranges like `fri-mon`; refusing beats guessing.
                if low > high {
                    return Err(self.error(item, "is a range whose start is after its end"));
                }
                (low, high)
            } else if range.is_empty() {
                return Err(self.error(item, "has no value before its step"));
            } else {
                let value = self.value(range)?;
                // `5/15` is cronie's shorthand for `5-<max>/15`.
                (value, if step.is_some() { self.max } else { value })
            };
            for value in (low..=high).step_by(step.unwrap_or(1) as usize) {
                mask |= 1 << value;
            }
        }
        Ok(mask)
    }

    fn step(&self, item: &str, step: &str) -> Result<u32, String> {
        if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(item, &format!("has a step `{step}` that is not a number")));
        }
        match step.parse::<u32>() {
            Ok(0) => Err(self.error(item, "has a step of 0; a step must be at least 1")),
            Ok(step) => Ok(step),
            // A step beyond u32 selects only the start, exactly as any step past the maximum does.
            Err(_) => Ok(u32::MAX),
        }
    }

    fn value(&self, token: &str) -> Result<u32, String> {
        if let Some(&(_, value)) = self.names.iter().find(|(name, _)| *name == token) {
            return Ok(value);
        }
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(token, &format!("is not a number{}", self.names_hint)));
        }
        // Digit strings too long for u32 are out of range just as 60 is.
        let value = token.parse::<u32>().unwrap_or(u32::MAX);
        if value < self.min || value > self.max {
            return Err(self.error(token, &format!("is out of range {}-{}", self.min, self.max)));
        }
        Ok(value)
    }
}

/// The five fields a macro stands for.
fn macro_fields(word: &str) -> Result<&'static str, String> {
    Ok(match word {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        // `@reboot` names an event, not a time, so there is no "next" to compute for it.
        _ => {
            return Err(format!(
                "cron macro `{word}` is not supported; use @hourly, @daily, @midnight, @weekly, \
                 @monthly, @yearly or @annually"
            ))
        }
    })
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        // Names and macros are case-insensitive; lower-casing once also normalizes what we print.
        let lower = s.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let expr = words.join(" ");
        let fields: Vec<&str> = match words.as_slice() {
            [] => {
                return Err("cron expression is empty; expected 5 fields (minute hour day-of-month \
                            month day-of-week) or a macro such as @daily"
                    .to_string())
            }
            [word] if word.starts_with('@') => macro_fields(word)?.split(' ').collect(),
            [word, ..] if word.starts_with('@') => {
                return Err(format!("cron expression `{expr}` has text after the macro `{word}`"))
            }
            _ => words.clone(),
        };
        let Ok([minute, hour, dom, month, dow]) = <[&str; 5]>::try_from(fields) else {
            let n = words.len();
            return Err(format!(
                "cron expression `{expr}` has {n} field{}; expected 5 (minute hour day-of-month \
                 month day-of-week)",
                if n == 1 { "" } else { "s" }
            ));
        };
        let mut days_of_week = FIELDS[4].parse(dow)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        Ok(Schedule {
            minutes: FIELDS[0].parse(minute)?,
            hours: FIELDS[1].parse(hour)?,
            days_of_month: FIELDS[2].parse(dom)?,
            months: FIELDS[3].parse(month)?,
            days_of_week,
            // crontab(5): "If both fields are restricted (i.e., don't start with *), the command
            // will be run when either field matches". So `*/2` counts as unrestricted, as in cron.
            days_either: !dom.starts_with('*') && !dow.starts_with('*'),
            expr,
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl Schedule {
    /// The first time strictly after `after_unix_secs` (UTC) at which the schedule fires, in unix
    /// seconds (whole minutes); None if it never fires (e.g. Feb 30).
    ///
    /// Skips whole months, days and hours that cannot match, so the cost is a few steps per
    /// selected month, not one per minute.
    pub fn next_after(&self, after_unix_secs: i64) -> Option<i64> {
        if !self.can_fire() {
            return None;
        }
        // Counting in whole minutes from the one after `after`: a time exactly on a firing minute
        // must move on to the next firing, not return itself.
        let start = after_unix_secs.div_euclid(60).checked_add(1)?;
        let (mut year, mut month, mut day) = civil_from_days(start.div_euclid(MINUTES_PER_DAY));
        let mut from_minute = start.rem_euclid(MINUTES_PER_DAY) as u32;
        // The Gregorian calendar repeats every 400 years (146097 days, a whole number of weeks), so
        // a schedule that fires at all fires within one cycle; this bound is only a backstop.
        let last_year = year + 400;
        while year <= last_year {
            if bit(self.months, month) {
                let first = days_from_civil(year, month, 1);
                while let Some(d) = self.next_day(first, days_in_month(year, month), day) {
                    // Only the starting day is partly over; later days are searched from midnight.
                    let from = if d == day { from_minute } else { 0 };
                    if let Some(minute_of_day) = self.next_time_of_day(from) {
                        let days = first + i64::from(d) - 1;
                        return days
                            .checked_mul(MINUTES_PER_DAY)?
                            .checked_add(i64::from(minute_of_day))?
                            .checked_mul(60);
                    }
                    day = d + 1;
                    from_minute = 0;
                }
            }
            (year, month) = match next_bit(self.months, month + 1) {
                Some(next) => (year, next),
                None => (year + 1, self.months.trailing_zeros()),
            };
            day = 1;
            from_minute = 0;
        }
        None
    }

    /// Whether any date ever matches. With either-day matching, every selected month holds each
    /// weekday. Otherwise the day of month must exist in some selected month, and any date that
    /// exists falls on every weekday somewhere in the 400-year cycle, so that suffices.
    fn can_fire(&self) -> bool {
        let first_dom = self.days_of_month.trailing_zeros();
        self.days_either || (1..=12).any(|m| bit(self.months, m) && first_dom <= MAX_DAYS[m as usize])
    }

    /// The first matching day of a month at or after `from`, given the month's first day number.
    fn next_day(&self, first_day: i64, len: u32, from: u32) -> Option<u32> {
        let mut d = from;
        while d <= len {
            if !self.days_either {
                // Both fields must match, so only the allowed days of the month are candidates.
                d = next_bit(self.days_of_month, d).filter(|&d| d <= len)?;
            }
            if self.day_matches(d, weekday(first_day + i64::from(d) - 1)) {
                return Some(d);
            }
            d += 1;
        }
        None
    }

    fn day_matches(&self, day_of_month: u32, day_of_week: u32) -> bool {
        let (dom, dow) = (bit(self.days_of_month, day_of_month), bit(self.days_of_week, day_of_week));
        if self.days_either {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first firing minute of a matching day at or after `from` (minutes since midnight).
    fn next_time_of_day(&self, from: u32) -> Option<u32> {
        let (mut hour, mut minute) = (from / 60, from % 60);
        while let Some(h) = next_bit(self.hours, hour) {
            if h != hour {
                minute = 0;
            }
            if let Some(m) = next_bit(self.minutes, minute) {
                return Some(h * 60 + m);
            }
            hour = h + 1;
            minute = 0;
        }
        None
    }
}

fn bit(mask: u64, n: u32) -> bool {
    n < 64 && mask & (1 << n) != 0
}

/// The lowest set bit at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = mask >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    if month == 2 && !is_leap(year) {
        28
    } else {
        MAX_DAYS[month as usize]
    }
}

/// Sunday = 0; 1970-01-01 (day 0) was a Thursday.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

// Plain proleptic-Gregorian arithmetic (Howard Hinnant's algorithms) rather than the `time` crate,
// whose ±9999 year range would turn far-off inputs into errors instead of simple answers.

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400;
    (if month <= 2 { year + 1 } else { year }, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(expr: &str) -> Schedule {
        expr.parse().unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn err(expr: &str) -> String {
        expr.parse::<Schedule>().expect_err(expr)
    }

    fn bits(values: impl IntoIterator<Item = u32>) -> u64 {
        values.into_iter().fold(0, |mask, v| mask | 1 << v)
    }

    /// Unix seconds of "YYYY-MM-DD HH:MM" or "YYYY-MM-DD HH:MM:SS", UTC.
    fn at(s: &str) -> i64 {
        let n: Vec<i64> = s.split(['-', ' ', ':']).map(|p| p.parse().unwrap()).collect();
        let days = days_from_civil(n[0], n[1] as u32, n[2] as u32);
        days * 86_400 + n[3] * 3600 + n[4] * 60 + n.get(5).copied().unwrap_or(0)
    }

    fn show(secs: i64) -> String {
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s / 60 % 60)
    }

    fn next(expr: &str, from: &str) -> Option<String> {
        parse(expr).next_after(at(from)).map(show)
    }

    /// The next `n` firings after `from`.
    fn firings(expr: &str, from: &str, n: usize) -> Vec<String> {
        let schedule = parse(expr);
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = schedule.next_after(t).unwrap();
                show(t)
            })
            .collect()
    }

    #[test]
    fn calendar_arithmetic_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(at("2024-09-01 00:00"), 1_725_148_800);
        assert_eq!(weekday(days_from_civil(2024, 9, 1)), 0);
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert!(is_leap(2000) && is_leap(2024) && !is_leap(2100) && !is_leap(2023));
    }

    #[test]
    fn parses_each_field_form() {
        let s = parse("* * * * *");
        assert_eq!(s.minutes, bits(0..60));
        assert_eq!(s.hours, bits(0..24));
        assert_eq!(s.days_of_month, bits(1..32));
        assert_eq!(s.months, bits(1..13));
        assert_eq!(s.days_of_week, bits(0..7));

        assert_eq!(parse("7 * * * *").minutes, bits([7]));
        assert_eq!(parse("1,2,40 * * * *").minutes, bits([1, 2, 40]));
        assert_eq!(parse("* 1-5 * * *").hours, bits(1..=5));
        assert_eq!(parse("*/15 * * * *").minutes, bits([0, 15, 30, 45]));
        assert_eq!(parse("* * 1-30/5 * *").days_of_month, bits([1, 6, 11, 16, 21, 26]));
        assert_eq!(parse("5/20 * * * *").minutes, bits([5, 25, 45]));
        assert_eq!(parse("0-10/5,30,50-52 * * * *").minutes, bits([0, 5, 10, 30, 50, 51, 52]));
        assert_eq!(parse("*/100 * * * *").minutes, bits([0]));
        assert_eq!(parse("* * * * */2").days_of_week, bits([0, 2, 4, 6]));
    }

    #[test]
    fn parses_names_case_insensitively() {
        assert_eq!(parse("* * * jan,MAR,Dec *").months, bits([1, 3, 12]));
        assert_eq!(parse("* * * jun-aug *").months, bits(6..=8));
        assert_eq!(parse("* * * feb-dec/2 *").months, bits([2, 4, 6, 8, 10, 12]));
        assert_eq!(parse("* * * * MON-fri").days_of_week, bits(1..=5));
        assert_eq!(parse("* * * * sun,Sat").days_of_week, bits([0, 6]));
    }

    #[test]
    fn day_of_week_seven_is_sunday() {
        assert_eq!(parse("* * * * 7").days_of_week, bits([0]));
        assert_eq!(parse("* * * * 5-7").days_of_week, bits([0, 5, 6]));
        assert_eq!(parse("* * * * sat-7").days_of_week, bits([0, 6]));
        assert_eq!(parse("* * * * 1-7").days_of_week, bits(0..7));
    }

    #[test]
    fn macros_expand_to_their_fields() {
        let same = |a: &str, b: &str| {
            let (a, b) = (parse(a), parse(b));
            assert_eq!(
                (a.minutes, a.hours, a.days_of_month, a.months, a.days_of_week, a.days_either),
                (b.minutes, b.hours, b.days_of_month, b.months, b.days_of_week, b.days_either)
            );
        };
        same("@hourly", "0 * * * *");
        same("@daily", "0 0 * * *");
        same("@midnight", "0 0 * * *");
        same("@weekly", "0 0 * * 0");
        same("@monthly", "0 0 1 * *");
        same("@yearly", "0 0 1 1 *");
        same("@annually", "0 0 1 1 *");
        same("@DAILY", "0 0 * * *");
    }

    #[test]
    fn displays_the_normalized_expression() {
        assert_eq!(parse("  0\t3  * *   MON-Fri ").to_string(), "0 3 * * mon-fri");
        assert_eq!(parse(" @Daily ").to_string(), "@daily");
        assert_eq!(parse("*/15 * 1,15 JAN *").to_string(), "*/15 * 1,15 jan *");
        for expr in ["0 3 * * mon-fri", "@weekly", "1-30/5 2 * * 7"] {
            let s = parse(expr);
            assert_eq!(parse(&s.to_string()), s);
        }
        assert_eq!(parse("0  0 * * *"), parse("0 0 * * *"));
        assert_ne!(parse("@daily"), parse("0 0 * * *"));
    }

    #[test]
    fn rejects_wrong_field_counts() {
        assert_eq!(
            err(""),
            "cron expression is empty; expected 5 fields (minute hour day-of-month month \
             day-of-week) or a macro such as @daily"
        );
        assert_eq!(err("   "), err(""));
        assert_eq!(
            err("0 0 * *"),
            "cron expression `0 0 * *` has 4 fields; expected 5 (minute hour day-of-month month \
             day-of-week)"
        );
        assert_eq!(
            err("0 0 0 * * *"),
            "cron expression `0 0 0 * * *` has 6 fields; expected 5 (minute hour day-of-month \
             month day-of-week)"
        );
        assert_eq!(
            err("daily"),
            "cron expression `daily` has 1 field; expected 5 (minute hour day-of-month month \
             day-of-week)"
        );
        assert_eq!(err("@daily 3"), "cron expression `@daily 3` has text after the macro `@daily`");
    }

    #[test]
    fn rejects_out_of_range_values() {
        assert_eq!(err("0 25 * * *"), "cron field 2 (hour) `25` is out of range 0-23");
        assert_eq!(err("60 * * * *"), "cron field 1 (minute) `60` is out of range 0-59");
        assert_eq!(err("0 0 0 * *"), "cron field 3 (day-of-month) `0` is out of range 1-31");
        assert_eq!(err("0 0 32 * *"), "cron field 3 (day-of-month) `32` is out of range 1-31");
        assert_eq!(err("0 0 * 13 *"), "cron field 4 (month) `13` is out of range 1-12");
        assert_eq!(err("0 0 * 0 *"), "cron field 4 (month) `0` is out of range 1-12");
        assert_eq!(err("0 0 * * 8"), "cron field 5 (day-of-week) `8` is out of range 0-7");
        assert_eq!(err("0 1-24 * * *"), "cron field 2 (hour) `24` is out of range 0-23");
        assert_eq!(err("99999999999 * * * *"), "cron field 1 (minute) `99999999999` is out of range 0-59");
    }

    #[test]
    fn rejects_bad_steps() {
        assert_eq!(
            err("*/0 * * * *"),
            "cron field 1 (minute) `*/0` has a step of 0; a step must be at least 1"
        );
        assert_eq!(
            err("0 0 1-30/0 * *"),
            "cron field 3 (day-of-month) `1-30/0` has a step of 0; a step must be at least 1"
        );
        assert_eq!(err("*/x * * * *"), "cron field 1 (minute) `*/x` has a step `x` that is not a number");
        assert_eq!(err("*/ * * * *"), "cron field 1 (minute) `*/` has a step `` that is not a number");
        assert_eq!(
            err("1/2/3 * * * *"),
            "cron field 1 (minute) `1/2/3` has a step `2/3` that is not a number"
        );
        assert_eq!(err("/5 * * * *"), "cron field 1 (minute) `/5` has no value before its step");
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(err("abc * * * *"), "cron field 1 (minute) `abc` is not a number");
        assert_eq!(err("0 jan * * *"), "cron field 2 (hour) `jan` is not a number");
        assert_eq!(
            err("0 0 * foo *"),
            "cron field 4 (month) `foo` is not a number or a month name (jan-dec)"
        );
        assert_eq!(
            err("0 0 * * monday"),
            "cron field 5 (day-of-week) `monday` is not a number or a weekday name (sun-sat)"
        );
        assert_eq!(
            err("0 0 * mon *"),
            "cron field 4 (month) `mon` is not a number or a month name (jan-dec)"
        );
        assert_eq!(err("0 0 ? * *"), "cron field 3 (day-of-month) `?` is not a number");
        assert_eq!(err("+5 * * * *"), "cron field 1 (minute) `+5` is not a number");
        assert_eq!(err("1,,2 * * * *"), "cron field 1 (minute) `1,,2` has an empty list element");
        assert_eq!(err("1, * * * *"), "cron field 1 (minute) `1,` has an empty list element");
        assert_eq!(err("0 1- * * *"), "cron field 2 (hour) `1-` is not a valid range");
        assert_eq!(err("0 -1 * * *"), "cron field 2 (hour) `-1` is not a valid range");
        assert_eq!(err("0 1-2-3 * * *"), "cron field 2 (hour) `1-2-3` is not a valid range");
        assert_eq!(
            err("0 0 20-10 * *"),
            "cron field 3 (day-of-month) `20-10` is a range whose start is after its end"
        );
        assert_eq!(
            err("0 0 * * fri-mon"),
            "cron field 5 (day-of-week) `fri-mon` is a range whose start is after its end"
        );
        assert_eq!(
            err("@reboot"),
            "cron macro `@reboot` is not supported; use @hourly, @daily, @midnight, @weekly, \
             @monthly, @yearly or @annually"
        );
        assert!(err("@").starts_with("cron macro `@` is not supported"));
    }

    #[test]
    fn next_after_is_strictly_after_and_on_whole_minutes() {
        assert_eq!(next("*/15 * * * *", "2024-03-10 14:07:30").as_deref(), Some("2024-03-10 14:15"));
        assert_eq!(next("*/15 * * * *", "2024-03-10 14:15").as_deref(), Some("2024-03-10 14:30"));
        assert_eq!(next("*/15 * * * *", "2024-03-10 14:15:59").as_deref(), Some("2024-03-10 14:30"));
        assert_eq!(next("* * * * *", "2024-03-10 14:15:00").as_deref(), Some("2024-03-10 14:16"));
        let s = parse("* * * * *");
        assert_eq!(s.next_after(at("2024-03-10 14:15:01")), Some(at("2024-03-10 14:16")));
        assert_eq!(s.next_after(at("2024-03-10 14:15:01")).unwrap() % 60, 0);
    }

    #[test]
    fn daily_from_exactly_midnight_gives_the_next_midnight() {
        assert_eq!(next("@daily", "2024-03-10 00:00").as_deref(), Some("2024-03-11 00:00"));
        assert_eq!(next("@daily", "2024-03-09 23:59:59").as_deref(), Some("2024-03-10 00:00"));
        assert_eq!(next("@midnight", "2024-12-31 00:00").as_deref(), Some("2025-01-01 00:00"));
    }

    #[test]
    fn next_after_crosses_hour_day_month_and_year_boundaries() {
        assert_eq!(next("5 * * * *", "2024-03-10 14:05").as_deref(), Some("2024-03-10 15:05"));
        assert_eq!(next("0 * * * *", "2024-03-10 23:59").as_deref(), Some("2024-03-11 00:00"));
        assert_eq!(next("30 2 * * *", "2024-03-10 02:31").as_deref(), Some("2024-03-11 02:30"));
        assert_eq!(next("30 2 * * *", "2024-12-31 23:00").as_deref(), Some("2025-01-01 02:30"));
        assert_eq!(next("0 0 1 * *", "2024-01-31 12:00").as_deref(), Some("2024-02-01 00:00"));
        assert_eq!(next("@monthly", "2024-12-01 00:00").as_deref(), Some("2025-01-01 00:00"));
        assert_eq!(next("@yearly", "2024-01-01 00:00").as_deref(), Some("2025-01-01 00:00"));
        assert_eq!(next("@hourly", "2024-02-29 23:00").as_deref(), Some("2024-03-01 00:00"));
        // 2024-09-01 is a Sunday, so @weekly moves a full week on from it.
        assert_eq!(next("@weekly", "2024-09-01 00:00").as_deref(), Some("2024-09-08 00:00"));
        assert_eq!(next("@weekly", "2024-09-04 10:00").as_deref(), Some("2024-09-08 00:00"));
        assert_eq!(next("0 9 * * mon-fri", "2024-09-06 09:00").as_deref(), Some("2024-09-09 09:00"));
        assert_eq!(next("15 10,22 * * *", "2024-09-06 10:16").as_deref(), Some("2024-09-06 22:15"));
        assert_eq!(next("0 0 * jun *", "2024-07-01 00:00").as_deref(), Some("2025-06-01 00:00"));
        assert_eq!(next("0 0 * * 0", "2025-06-14 12:00").as_deref(), Some("2025-06-15 00:00"));
    }

    #[test]
    fn next_after_skips_months_too_short_for_the_day() {
        assert_eq!(
            firings("0 0 31 * *", "2024-01-31 12:00", 3),
            ["2024-03-31 00:00", "2024-05-31 00:00", "2024-07-31 00:00"]
        );
        assert_eq!(next("0 0 30 * *", "2023-01-30 00:00").as_deref(), Some("2023-03-30 00:00"));
    }

    #[test]
    fn leap_day_fires_only_in_leap_years() {
        assert_eq!(next("0 0 29 2 *", "2024-03-01 00:00").as_deref(), Some("2028-02-29 00:00"));
        assert_eq!(next("0 0 29 2 *", "2024-02-28 23:59").as_deref(), Some("2024-02-29 00:00"));
        // 2100 is not a leap year, so the gap is eight years.
        assert_eq!(next("0 0 29 2 *", "2096-03-01 00:00").as_deref(), Some("2104-02-29 00:00"));
        assert_eq!(next("0 0 29 feb *", "1999-06-01 00:00").as_deref(), Some("2000-02-29 00:00"));
    }

    #[test]
    fn impossible_dates_never_fire() {
        for expr in ["0 0 30 2 *", "0 0 31 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 feb *", "0 0 31 2 */2"] {
            assert_eq!(parse(expr).next_after(at("2024-01-01 00:00")), None, "{expr}");
        }
        // With both day fields restricted the weekday alone is enough.
        assert_eq!(next("0 0 30 2 mon", "2024-01-01 00:00").as_deref(), Some("2024-02-05 00:00"));
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // The 13th or any Friday. 2024-09-13 is both; 2024-10-13 is a Sunday.
        assert_eq!(
            firings("0 0 13 * fri", "2024-09-01 00:00", 8),
            [
                "2024-09-06 00:00",
                "2024-09-13 00:00",
                "2024-09-20 00:00",
                "2024-09-27 00:00",
                "2024-10-04 00:00",
                "2024-10-11 00:00",
                "2024-10-13 00:00",
                "2024-10-18 00:00",
            ]
        );
        assert_eq!(
            firings("0 0 1,15 * 3", "2024-09-01 00:00", 3),
            ["2024-09-04 00:00", "2024-09-11 00:00", "2024-09-15 00:00"]
        );
    }

    #[test]
    fn a_day_field_starting_with_a_star_is_unrestricted() {
        // As in cron, `*/2` counts as unrestricted: both fields must match (odd days that are Mondays).
        assert_eq!(
            firings("0 0 */2 * mon", "2024-09-01 00:00", 3),
            ["2024-09-09 00:00", "2024-09-23 00:00", "2024-10-07 00:00"]
        );
        // Written as a range instead, the day field is restricted and either matches.
        assert_eq!(
            firings("0 0 1-31/2 * mon", "2024-09-01 00:00", 3),
            ["2024-09-02 00:00", "2024-09-03 00:00", "2024-09-05 00:00"]
        );
        assert_eq!(firings("0 0 1 * *", "2024-09-01 00:00", 1), ["2024-10-01 00:00"]);
        assert_eq!(firings("0 0 * * 1", "2024-09-01 00:00", 1), ["2024-09-02 00:00"]);
    }

    #[test]
    fn searches_past_long_gaps() {
        // Feb 29 that is also a Sunday (the weekday written with a star, so both must match):
        // 2004 and then 2032, beyond a naive few-year horizon.
        assert_eq!(next("0 0 29 2 */7", "2004-03-01 00:00").as_deref(), Some("2032-02-29 00:00"));
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let s = parse("* * * * *");
        assert_eq!(s.next_after(i64::MAX), None);
        // The last whole minute that fits in i64 is still found; past it there is nothing.
        let mut last = s.next_after(i64::MAX - 200).unwrap();
        while let Some(n) = s.next_after(last) {
            last = n;
        }
        assert!(last > i64::MAX - 60 && last % 60 == 0);
        assert!(s.next_after(i64::MIN).is_some());
        assert_eq!(parse("0 0 1 1 *").next_after(-1), Some(0));
        assert_eq!(next("0 12 * * *", "1969-12-31 12:00").as_deref(), Some("1970-01-01 12:00"));
        assert_eq!(next("0 0 29 2 *", "1899-01-01 00:00").as_deref(), Some("1904-02-29 00:00"));
    }

    /// Every firing in a window, by testing each minute: the reference the skipping search must
    /// agree with.
    fn brute_force(s: &Schedule, from: i64, to: i64) -> Vec<i64> {
        (from / 60..to / 60)
            .filter(|&minute| {
                let (y, m, d) = civil_from_days(minute.div_euclid(MINUTES_PER_DAY));
                let of_day = minute.rem_euclid(MINUTES_PER_DAY) as u32;
                bit(s.months, m)
                    && d <= days_in_month(y, m)
                    && s.day_matches(d, weekday(minute.div_euclid(MINUTES_PER_DAY)))
                    && bit(s.hours, of_day / 60)
                    && bit(s.minutes, of_day % 60)
            })
            .map(|minute| minute * 60)
            .collect()
    }

    #[test]
    fn agrees_with_a_minute_by_minute_search() {
        // Covers a leap February, month ends and the dom/dow rule in both modes.
        let (from, to) = (at("2024-01-20 00:00"), at("2024-03-05 00:00"));
        for expr in [
            "* * * * *",
            "*/7 */5 * * *",
            "59 23 * * *",
            "0 0 29-31 * *",
            "30 4 13 * fri",
            "0 6 */3 * mon-wed",
            "10-20/5 1,13 1,29 feb,mar *",
            "0 12 * * 7",
            "@weekly",
            "@hourly",
        ] {
            let s = parse(expr);
            let mut got = Vec::new();
            let mut t = from - 1;
            while let Some(n) = s.next_after(t).filter(|&n| n < to) {
                got.push(n);
                t = n;
            }
            assert_eq!(got, brute_force(&s, from, to), "{expr}");
        }
    }
}
