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
