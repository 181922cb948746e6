//! `paas logs --app A [-f]`: an environment's central logs, one stream across replicas and
//! nodes, printed Heroku-style (`2026-11-27T10:00:01.123Z app[web.2]: ...`); `-f` follows with
//! long polls. Stops quietly when the reader goes away (`| head`).

use crate::args::{Global, LogsArgs, Output};
use crate::output::printable;
use protocol::logs::{LogEntry, LogPage, LogQuery, LogSource};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

/// How long one follow request waits on the server for new lines.
const FOLLOW_WAIT: u64 = 30;
/// Lines one follow page may bring.
const FOLLOW_LINES: u32 = 5000;

pub async fn exec(g: &Global, args: LogsArgs) -> anyhow::Result<ExitCode> {
    protocol::AppName::new(args.target.app.as_str())?;
    protocol::EnvName::new(args.target.env.as_str())?;
    let client = super::client(g)?;
    let (app, env) = (args.target.app.as_str(), args.target.env.as_str());
    let query = LogQuery {
        process: args.process.clone(),
        source: args.source,
        since: args.since.clone(),
        until: args.until.clone(),
        grep: args.grep.clone(),
        n: Some(args.lines),
        ..LogQuery::default()
    };
    let page = client.logs(app, env, &query).await?;
    if show(g.output, &page).is_err() || !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Later pages: what was stored after the cursor, by the same filters. A deploy changes
    // nothing here: new replicas' lines are the environment's lines.
    let mut cursor = page.cursor;
    let mut away = false;
    loop {
        let q = LogQuery {
            since: None,
            n: Some(FOLLOW_LINES),
            after: Some(cursor),
            wait: Some(FOLLOW_WAIT),
            ..query.clone()
        };
        match client.logs(app, env, &q).await {
            Ok(page) => {
                if away {
                    eprintln!("paas: the server is back; following again");
                    away = false;
                }
                cursor = page.cursor;
                if show(g.output, &page).is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // The server restarting (an upgrade) or briefly overloaded: wait and ask again.
            Err(e) if e.status.is_none_or(|s| s >= 500) => {
                if !away {
                    eprintln!("paas: {e}; trying again");
                    away = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Prints a page; an error means standard output is gone (a closed pipe) and printing ends.
fn show(mode: Output, page: &LogPage) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in &page.lines {
        match mode {
            Output::Json => writeln!(out, "{}", serde_json::to_string(line)?)?,
            Output::Text => writeln!(out, "{}", format_line(line))?,
        }
    }
    out.flush()?;
    if page.dropped > 0 {
        eprintln!(
            "paas: {} line(s) in this span were dropped to keep the logs within their caps (the node's spool or the store's size and age limits) and are not shown",
            page.dropped
        );
    }
    Ok(())
}

/// `2026-11-27T10:00:01.123Z app[web.2]: text`.
pub fn format_line(l: &LogEntry) -> String {
    let who = match l.source {
        LogSource::App if l.replica == 0 => format!("app[{}]", l.process),
        LogSource::App => format!("app[{}.{}]", l.process, l.replica),
        LogSource::Build => format!("build[v{}]", l.release),
        LogSource::Router => "router".to_string(),
        LogSource::Platform => "paas".to_string(),
    };
    format!("{} {who}: {}", millis(&l.at), printable(&l.text))
}

/// An RFC 3339 UTC time with exactly three decimals.
fn millis(at: &str) -> String {
    let Some(t) = at.strip_suffix('Z') else { return at.to_string() };
    let (head, frac) = t.split_once('.').unwrap_or((t, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(3).collect();
    format!("{head}.{frac}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::logs::LogStream;

    fn entry(source: LogSource, process: &str, replica: u32, at: &str, text: &str) -> LogEntry {
        LogEntry {
            id: 1,
            at: at.into(),
            source,
            process: process.into(),
            replica,
            release: 4,
            node: "n1".into(),
            stream: LogStream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn lines_print_heroku_style() {
        let at = "2026-11-27T10:00:01.123456789Z";
        assert_eq!(
            format_line(&entry(LogSource::App, "web", 2, at, "hello")),
            "2026-11-27T10:00:01.123Z app[web.2]: hello"
        );
        let whole = "2026-11-27T10:00:01Z";
        assert_eq!(
            format_line(&entry(LogSource::Router, "router", 0, whole, "GET / 200")),
            "2026-11-27T10:00:01.000Z router: GET / 200"
        );
        assert!(format_line(&entry(LogSource::Platform, "platform", 0, at, "x")).contains(" paas: x"));
        assert!(format_line(&entry(LogSource::Build, "build", 0, at, "x")).contains(" build[v4]: x"));
        assert!(format_line(&entry(LogSource::App, "run", 0, "2026-11-27T10:00:01.5Z", "x"))
            .starts_with("2026-11-27T10:00:01.500Z app[run]: x"));
        assert!(
            format_line(&entry(LogSource::App, "web", 1, at, "a\u{1b}[2Jb\tc")).ends_with("a\\u{1b}[2Jb\tc")
        );
    }
}
