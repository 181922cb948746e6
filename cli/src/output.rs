//! Printing results: aligned tables for people, JSON with `--output json`, and errors as one
//! sentence.

use crate::args::Output;
use serde::Serialize;

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
