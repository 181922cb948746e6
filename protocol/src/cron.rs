//! Cron expressions for backup schedules and `paas.toml`'s `[cron]` jobs, on the `croner`
//! crate: the standard five fields (names, ranges, lists, steps, day-of-week 7 as Sunday, either
//! day field matching when both are restricted, as in Vixie cron) and the `@daily`-style macros,
//! evaluated in UTC. This file keeps what users see: five fields only, the expression printed as
//! written (lower-cased), and errors that name the field.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::fmt;
use std::str::FromStr;

/// A parsed cron schedule. Equality compares the normalized expression.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Lower-cased with single spaces between fields: what `Display` prints.
    expr: String,
    cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12"),
    ("day-of-week", "0-7"),
];

fn parse(expr: &str) -> Result<Cron, croner::errors::CronError> {
    // `5/15` (from 5, every 15) is cronie's syntax, which croner calls sloppy.
    let parser =
        CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).sloppy_ranges(true);
    parser.build().parse(expr)
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expr = s.to_ascii_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
        let words: Vec<&str> = expr.split(' ').filter(|w| !w.is_empty()).collect();
        let expected =
            "expected 5 fields (minute hour day-of-month month day-of-week) or a macro such as @daily";
        match words.as_slice() {
            [] => return Err(format!("cron expression is empty; {expected}")),
            [word] if word.starts_with('@') => {}
            words if words.len() != 5 => {
                return Err(format!("cron expression `{expr}` has {} fields; {expected}", words.len()))
            }
            _ => {}
        }
        // croner lacks this one alias of Vixie cron's.
        let err = match parse(if expr == "@midnight" { "@daily" } else { &expr }) {
            Ok(cron) => return Ok(Schedule { expr, cron }),
            Err(err) => err,
        };
        // Name the first field that fails on its own (the others `*`).
        for (i, word) in words.iter().enumerate().filter(|_| words.len() == 5) {
            let mut alone = ["*"; 5];
            alone[i] = word;
            if let Err(field_err) = parse(&alone.join(" ")) {
                let ((name, range), why) = (FIELDS[i], field_err.to_string());
                let problem = if why.contains("out of bounds") {
                    format!("is out of range {range}")
                } else {
                    format!("is not valid ({why})")
                };
                return Err(format!("cron field {} ({name}) `{word}` {problem}", i + 1));
            }
        }
        Err(format!("cron expression `{expr}` is not valid ({err}); {expected}"))
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
    pub fn next_after(&self, after_unix_secs: i64) -> Option<i64> {
        let after = DateTime::<Utc>::from_timestamp(after_unix_secs, 0)?;
        self.cron.find_next_occurrence(&after, false).ok().map(|t| t.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
            .unwrap();
        t.and_utc().timestamp()
    }

    fn show(secs: i64) -> String {
        DateTime::<Utc>::from_timestamp(secs, 0).unwrap().format("%Y-%m-%d %H:%M").to_string()
    }

    fn next(expr: &str, from: &str) -> Option<String> {
        expr.parse::<Schedule>().unwrap_or_else(|e| panic!("{expr}: {e}")).next_after(at(from)).map(show)
    }

    fn err(expr: &str) -> String {
        expr.parse::<Schedule>().expect_err(expr)
    }

    #[test]
    fn fires_as_cron_does() {
        let cases = [
            ("*/15 * * * *", "2024-03-10 14:07:30", "2024-03-10 14:15"),
            ("*/15 * * * *", "2024-03-10 14:15", "2024-03-10 14:30"),
            ("* * * * *", "2024-03-10 14:15:01", "2024-03-10 14:16"),
            ("@daily", "2024-03-10 00:00", "2024-03-11 00:00"),
            ("@midnight", "2024-12-31 00:00", "2025-01-01 00:00"),
            ("0 3 * * *", "2024-03-10 03:00", "2024-03-11 03:00"),
            ("@hourly", "2024-03-10 23:59", "2024-03-11 00:00"),
            ("@weekly", "2024-09-02 12:00", "2024-09-08 00:00"),
            ("@monthly", "2024-12-01 00:00", "2025-01-01 00:00"),
            ("@YEARLY", "2024-01-01 00:00", "2025-01-01 00:00"),
            ("5/20 * * * *", "2024-03-10 14:30", "2024-03-10 14:45"),
            ("0 0 29 2 *", "2024-03-01 00:00", "2028-02-29 00:00"),
            // Day-of-week 7 is Sunday; names in any case.
            ("0 0 * * 7", "2024-09-02 00:00", "2024-09-08 00:00"),
            ("0 0 * * SAT-sun", "2024-09-02 00:00", "2024-09-07 00:00"),
            ("0 0 * JUN *", "2024-09-02 00:00", "2025-06-01 00:00"),
            // Both day fields restricted: either matches (the 13th, or a Friday).
            ("0 0 13 * fri", "2024-09-01 00:00", "2024-09-06 00:00"),
            ("0 0 13 * fri", "2024-09-07 00:00", "2024-09-13 00:00"),
        ];
        for (expr, from, want) in cases {
            assert_eq!(next(expr, from).as_deref(), Some(want), "{expr} after {from}");
        }
        assert_eq!(next("0 0 30 2 *", "2024-01-01 00:00"), None);
    }

    #[test]
    fn prints_the_normalized_expression() {
        let s: Schedule = "  0\t3  * *   MON-Fri ".parse().unwrap();
        assert_eq!(s.to_string(), "0 3 * * mon-fri");
        assert_eq!(" @Daily ".parse::<Schedule>().unwrap().to_string(), "@daily");
        assert_eq!(s, "0 3 * * mon-fri".parse().unwrap());
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("").starts_with("cron expression is empty; expected 5 fields"));
        assert!(err("0 0 * *").starts_with("cron expression `0 0 * *` has 4 fields"));
        assert!(err("0 0 0 * * *").starts_with("cron expression `0 0 0 * * *` has 6 fields"));
        assert_eq!(err("60 * * * *"), "cron field 1 (minute) `60` is out of range 0-59");
        assert_eq!(err("0 25 * * *"), "cron field 2 (hour) `25` is out of range 0-23");
        assert_eq!(err("0 0 32 * *"), "cron field 3 (day-of-month) `32` is out of range 1-31");
        assert_eq!(err("0 0 * 13 *"), "cron field 4 (month) `13` is out of range 1-12");
        assert_eq!(err("0 0 * * 8"), "cron field 5 (day-of-week) `8` is out of range 0-7");
        assert!(
            err("abc * * * *").starts_with("cron field 1 (minute) `abc` is not valid"),
            "{}",
            err("abc * * * *")
        );
        assert!(err("0 0 * foo *").starts_with("cron field 4 (month) `foo` is not valid"));
        assert!(err("*/0 * * * *").starts_with("cron field 1 (minute)"));
        assert!(err("@reboot").starts_with("cron expression `@reboot` is not valid"), "{}", err("@reboot"));
    }
}
