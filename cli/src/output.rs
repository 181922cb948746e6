//! Printing results: aligned tables for people, JSON with `--output json`, and errors as one
//! sentence.

use crate::args::Output;
use serde::Serialize;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set for `paas up`, `server` and `agent`: their stdout may be closed by whoever started them
/// (after the ready line) without that ending the platform.
static DAEMON: AtomicBool = AtomicBool::new(false);

pub fn set_daemon(daemon: bool) {
    DAEMON.store(daemon, Ordering::Relaxed);
}

/// Writes to stdout (what the crate's `println!` and `print!` do). A command whose reader went
/// away (a closed pipe) exits at once with success: there is no one left to tell anything. A
/// daemon keeps running and drops the text.
pub fn write(args: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(_) if DAEMON.load(Ordering::Relaxed) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: cannot write the output: {e}");
            std::process::exit(1);
        }
    }
}

/// Prints `value` as JSON, or runs `text` to print it for people.
pub fn emit<T: Serialize>(mode: Output, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
    match mode {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Text => text(value),
    }
    Ok(())
}

/// Prints a row (`row`'s cells) per item under a header, with columns padded to their widest cell.
pub fn table<T>(header: &[&str], items: &[T], row: impl Fn(&T) -> Vec<String>) {
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c, w = widths[i])).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

/// A time from the API (RFC 3339) as people read it in a table: "12 s ago", "5 min ago",
/// "3 h ago", "2 days ago", a date past two weeks, "in 29 days" ahead. `--output json` keeps
/// the exact time; text that is not a time is shown as it is.
pub fn ago(time: &str) -> String {
    let Ok(at) = humantime::parse_rfc3339_weak(time) else { return time.to_string() };
    ago_from(at, std::time::SystemTime::now()).unwrap_or_else(|| time.get(..10).unwrap_or(time).to_string())
}

/// `at` relative to `now`; `None` past two weeks either way (a date reads better then).
fn ago_from(at: std::time::SystemTime, now: std::time::SystemTime) -> Option<String> {
    let (secs, ahead) = match now.duration_since(at) {
        Ok(d) => (d.as_secs(), false),
        Err(e) => (e.duration().as_secs(), true),
    };
    let span = match secs {
        0..=59 => format!("{secs} s"),
        60..=5399 => format!("{} min", secs / 60),
        5400..=129_599 => format!("{} h", (secs + 1800) / 3600),
        129_600..=1_209_599 => format!("{} days", (secs + 43_200) / 86_400),
        _ => return None,
    };
    Some(if ahead { format!("in {span}") } else { format!("{span} ago") })
}

/// The error chain as one sentence: the outermost context, then the root cause when it adds
/// something.
pub fn error_sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Text from others (app output, names in the audit log) with control characters shown
/// escaped, so it cannot move the cursor or recolour the terminal; tabs stay.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn times_read_as_people_say_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let back = |s| ago_from(now - Duration::from_secs(s), now);
        assert_eq!(back(12).as_deref(), Some("12 s ago"));
        assert_eq!(back(5 * 60 + 7).as_deref(), Some("5 min ago"));
        assert_eq!(back(3 * 3600).as_deref(), Some("3 h ago"));
        assert_eq!(back(2 * 86_400).as_deref(), Some("2 days ago"));
        assert_eq!(back(30 * 86_400), None);
        assert_eq!(ago_from(now + Duration::from_secs(29 * 86_400 / 3), now).as_deref(), Some("in 10 days"));
        assert_eq!(ago("not a time"), "not a time");
        assert_eq!(ago("2001-02-03T04:05:06Z"), "2001-02-03");
    }
}
