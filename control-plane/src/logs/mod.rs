//! Central logs, the control plane's side: storing what agents ship (once per line, answering
//! how far each node is stored), reading it back for users with filters, text search and a
//! long-polled follow mode, and keeping the store within its age and size caps.

mod import;
pub mod limits;
pub(crate) mod meta;
pub mod platform;
pub(crate) mod scan;
mod segment;
pub mod store;

pub use import::from_sqlite as import_sqlite;
pub use store::LogStore;

use crate::error::{DomainError, Result};
use crate::state::AppState;
use protocol::logs::{LogAck, LogBatchRef, LogPage, LogSource};
use std::time::Duration;
use store::Filter;

/// Lines a page shows unless asked for another number, and at most.
pub const DEFAULT_LINES: u32 = 200;
pub const MAX_LINES: u32 = 5000;
/// Longest a follow-mode read waits for new lines.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often retention runs.
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// Longest text search accepted.
const MAX_GREP: usize = 1000;

/// Retention: lines older than `age` go, and the oldest go while the store holds more than
/// `max_bytes` (never more than a tenth of the filesystem holding it).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub age: Duration,
    pub max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { age: Duration::from_secs(7 * 24 * 3600), max_bytes: 1 << 30 }
    }
}

/// A read as the API receives it: every value a string, checked here.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Params {
    pub process: Option<String>,
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub grep: Option<String>,
    pub n: Option<String>,
    pub after: Option<String>,
    pub wait: Option<String>,
}

/// Stores a node's batch and answers how far its lines are stored.
pub async fn ship(state: &AppState, node: &str, batch: &LogBatchRef<'_>) -> Result<LogAck> {
    let mut envs: Vec<(&str, &str)> = batch.lines.iter().map(|l| (&*l.app, &*l.env)).collect();
    envs.sort_unstable();
    envs.dedup();
    let mut known = std::collections::HashSet::new();
    for (app, env) in envs {
        if state.store.get_env(app, env).await.is_ok() {
            known.insert((app.to_string(), env.to_string()));
        }
    }
    let through = state.logs.insert_known(node, batch, store::now_ns(), Some(&known)).await?;
    Ok(LogAck { through })
}

/// Empties the log of a deleted app (or environment), in the background: a large log takes a
/// while, and lines stored after the deletion (a new app of the same name) are kept.
pub fn forget(state: &AppState, app: &str, env: Option<&str>) {
    let (logs, app, env) = (state.logs.clone(), app.to_string(), env.map(str::to_string));
    tokio::spawn(async move {
        match logs.forget(&app, env.as_deref()).await {
            Ok(n) => {
                tracing::info!(app = %app, env = ?env, lines = n, "deleted the logs of a deleted app or environment")
            }
            Err(e) => {
                tracing::warn!(app = %app, env = ?env, error = %format!("{e:#}"), "deleting the logs of a deleted app or environment failed")
            }
        }
    });
}

/// A page of `app`/`env`'s lines; in follow mode (`after` and `wait`) waits up to `wait` for
/// lines stored after `after`.
pub async fn read(state: &AppState, app: &str, env: &str, p: &Params) -> Result<LogPage> {
    let (filter, wait) = prepare(state, app, env, p).await?;
    let page = state.logs.read(app, env, &filter).await?;
    if !page.lines.is_empty() || page.dropped > 0 || wait.is_zero() {
        return Ok(LogPage { lines: page.lines, cursor: page.cursor, dropped: page.dropped });
    }
    // Wakes for any new line of the environment; one the filters leave out answers an empty
    // page with a cursor past it, and the follower asks again.
    // A stopping control plane answers at once rather than hold its shutdown for the wait.
    let stopping = state.shutting_down();
    tokio::select! {
        _ = state.logs.wait_for_lines(app, env, page.cursor, wait) => {}
        _ = stopping.cancelled() => {}
    }
    let next = Filter { after: Some(page.cursor), ..filter };
    let page = state.logs.read(app, env, &next).await?;
    Ok(LogPage { lines: page.lines, cursor: page.cursor, dropped: page.dropped })
}

/// How long one follow-mode read of [`follow`] waits before asking again; the stream itself
/// never ends on its own (keep-alive comments keep proxies from closing it).
const FOLLOW_WAIT: Duration = Duration::from_secs(25);

/// What a follower is sent, in order.
#[derive(Debug)]
pub enum Followed {
    Line(protocol::logs::LogEntry),
    /// Lines lost (caps, full spools) since the previous event.
    Dropped(u64),
    /// Every line up to here was sent (or left out by the filters): where to resume.
    Cursor(i64),
}

/// The live stream of `app`/`env`'s lines for server-sent events: the newest `n` lines (or
/// the lines after `resume`, a cursor the client already holds), then every new line as it is
/// stored, until the control plane stops. Checked up front: a bad filter or an unknown
/// environment answers an error, not an empty stream.
pub async fn follow(
    state: &AppState,
    app: &str,
    env: &str,
    p: &Params,
    resume: Option<i64>,
) -> Result<impl futures_util::Stream<Item = Followed> + Send + 'static> {
    let mut p = p.clone();
    p.wait = None;
    if let Some(cursor) = resume {
        p.after = Some(cursor.to_string());
    }
    let (filter, _) = prepare(state, app, env, &p).await?;
    let first = state.logs.read(app, env, &filter).await?;
    let state = state.clone();
    let (app, env) = (app.to_string(), env.to_string());
    let stop = state.shutting_down();
    let pending: std::collections::VecDeque<Followed> = page_events(first).collect();
    let start = (pending, Filter { after: None, ..filter }, false);
    Ok(futures_util::stream::unfold(start, move |(mut pending, mut filter, mut ended)| {
        let (state, app, env, stop) = (state.clone(), app.clone(), env.clone(), stop.clone());
        async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    if let Followed::Cursor(c) = event {
                        filter.after = Some(c);
                    }
                    return Some((event, (pending, filter, ended)));
                }
                if ended {
                    return None;
                }
                let after = filter.after.unwrap_or(0);
                tokio::select! {
                    _ = state.logs.wait_for_lines(&app, &env, after, FOLLOW_WAIT) => {}
                    _ = stop.cancelled() => return None,
                }
                match state.logs.read(&app, &env, &Filter { after: Some(after), ..filter.clone() }).await {
                    Ok(page) => pending.extend(page_events(page)),
                    Err(e) => {
                        tracing::warn!(app = %app, env = %env, error = %format!("{e:#}"), "reading logs for a follower failed");
                        ended = true;
                    }
                }
            }
        }
    }))
}

/// A page as follower events: its losses, its lines, then its cursor.
fn page_events(page: store::Page) -> impl Iterator<Item = Followed> {
    let dropped = (page.dropped > 0).then_some(Followed::Dropped(page.dropped));
    dropped
        .into_iter()
        .chain(page.lines.into_iter().map(Followed::Line))
        .chain(std::iter::once(Followed::Cursor(page.cursor)))
}

/// Checks a read's names and parameters; answers its filter and wait. Unknown environments say
/// so rather than look empty.
async fn prepare(state: &AppState, app: &str, env: &str, p: &Params) -> Result<(Filter, Duration)> {
    protocol::AppName::new(app)?;
    protocol::EnvName::new(env)?;
    let parsed = parse(p, store::now_ns())?;
    state.store.get_env(app, env).await?;
    Ok(parsed)
}

fn invalid(why: String) -> DomainError {
    DomainError::Invalid(why)
}

/// Checks a read's parameters; answers the filter and how long to wait.
pub fn parse(p: &Params, now: i64) -> Result<(Filter, Duration)> {
    let n = match p.n.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_LINES,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_LINES).contains(&n) => n,
            _ => {
                return Err(invalid(format!("n must be a number of lines from 1 to {MAX_LINES}, not {s:?}")))
            }
        },
    };
    let after = match p.after.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match s.parse::<i64>() {
            Ok(a) if a >= 0 => Some(a),
            _ => return Err(invalid(format!("after must be a cursor from an earlier page, not {s:?}"))),
        },
    };
    let wait = match p.wait.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Duration::ZERO,
        Some(s) => match s.parse::<u64>() {
            Ok(w) => Duration::from_secs(w).min(MAX_WAIT),
            _ => return Err(invalid(format!("wait must be a number of seconds (at most 60), not {s:?}"))),
        },
    };
    if !wait.is_zero() && after.is_none() {
        return Err(invalid("wait needs after: follow from the cursor of an earlier page".into()));
    }
    let source = match p.source.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            s.parse::<LogSource>()
                .map_err(|_| invalid(format!("source must be app, build, router or platform, not {s:?}")))?,
        ),
    };
    let process = p.process.clone().filter(|s| !s.is_empty());
    if let Some(proc) = &process {
        if proc.len() > 64 || proc.contains('\0') {
            return Err(invalid("process must be a process name such as web or worker".into()));
        }
    }
    let since = p.since.as_deref().map(|s| parse_instant("since", s, now)).transpose()?;
    let until = p.until.as_deref().map(|s| parse_instant("until", s, now)).transpose()?;
    if let (Some(a), Some(b)) = (since, until) {
        if a > b {
            return Err(invalid("since is after until: nothing can be in that span".into()));
        }
    }
    let grep = p.grep.as_deref().map(search_text).transpose()?.flatten();
    Ok((Filter { process, source, since, until, grep, n, after }, wait))
}

/// A time as users give it: a duration back from now (`10m`, `2h 30m`) or RFC 3339.
pub(crate) fn parse_instant(what: &str, s: &str, now: i64) -> Result<i64> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        let back = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(back));
    }
    store::parse_time(s).ok_or_else(|| {
        invalid(format!(
            "{what} must be a duration back from now such as 10m or 2h, or a time such as 2026-11-27T10:00:00Z, not {s:?}"
        ))
    })
}

/// The text search, checked: `None` for blank text (no search).
pub fn search_text(text: &str) -> Result<Option<String>> {
    if text.contains('\0') {
        return Err(invalid("the search text contains a NUL byte".into()));
    }
    if text.chars().count() > MAX_GREP {
        return Err(invalid(format!("the search text is longer than {MAX_GREP} characters")));
    }
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(text.to_string()))
}

/// Keeps the store within its caps until shutdown, every [`TRIM_EVERY`].
pub async fn retention(state: AppState) {
    let stop = state.shutting_down();
    loop {
        // Early when about a tenth of the cap was stored since the last run: a flood is trimmed as
        // it comes rather than a minute later.
        let cap = effective_cap(&state.config.data_dir, state.config.log_retention.max_bytes);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = state.logs.wait_for_growth(cap / 10, TRIM_EVERY) => {}
        }
        if let Err(e) = trim(&state).await {
            tracing::error!(error = %format!("{e:#}"), "trimming the log store failed; it may grow past its cap until the next run");
        }
    }
}

/// An app's log retention, with the store's.
pub async fn retention_of(state: &AppState, app: &str) -> Result<protocol::logs::LogRetention> {
    state.store.get_app(app).await?;
    let limits = state.logs.app_limits(app).await?;
    Ok(limits::view(limits, state.config.log_retention))
}

/// Sets an app's own log retention; lines past it go at the next retention run.
pub async fn set_retention(
    state: &AppState,
    app: &str,
    set: &protocol::logs::SetLogRetention,
) -> Result<protocol::logs::LogRetention> {
    state.store.get_app(app).await?;
    let store = state.config.log_retention;
    let age = match set.age.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => {
            let d = humantime::parse_duration(s)
                .map_err(|_| invalid(format!("age must be a duration such as 3d or 12h, not {s:?}")))?;
            if d < Duration::from_secs(60) {
                return Err(invalid("age must be at least a minute".into()));
            }
            Some(d.min(store.age).as_secs())
        }
    };
    let max_bytes = match set.max_mib {
        None => None,
        Some(0) => return Err(invalid("max_mib must be at least 1".into())),
        Some(m) => Some(m.saturating_mul(1 << 20).min(store.max_bytes)),
    };
    state.logs.set_app_limits(app, age, max_bytes).await?;
    tracing::info!(app, age_secs = ?age, max_bytes = ?max_bytes, "log retention of the app set");
    retention_of(state, app).await
}

/// One retention run.
pub async fn trim(state: &AppState) -> anyhow::Result<store::Trimmed> {
    let r = state.config.log_retention;
    let cap = effective_cap(&state.config.data_dir, r.max_bytes);
    let age = i64::try_from(r.age.as_nanos()).unwrap_or(i64::MAX);
    let now = store::now_ns();
    let mut trimmed = state.logs.trim(now.saturating_sub(age), cap).await?;
    let apps = state.logs.trim_apps(now).await?;
    trimmed.by_age += apps.by_age;
    trimmed.by_size += apps.by_size;
    if trimmed != store::Trimmed::default() {
        tracing::info!(
            by_age = trimmed.by_age,
            by_size = trimmed.by_size,
            cap_bytes = cap,
            "log store trimmed"
        );
    }
    Ok(trimmed)
}

/// The size cap: the configured one, but never more than a tenth of the filesystem.
pub fn effective_cap(dir: &std::path::Path, max_bytes: u64) -> u64 {
    match rustix::fs::statvfs(dir) {
        Ok(fs) => max_bytes.min(fs.f_blocks.saturating_mul(fs.f_frsize) / 10),
        Err(_) => max_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut Params)) -> Params {
        let mut p = Params::default();
        f(&mut p);
        p
    }

    #[test]
    fn bad_parameters_are_refused_with_a_sentence() {
        let now = 1_000_000_000_000_000_000;
        for bad in [
            params(|p| p.n = Some("0".into())),
            params(|p| p.n = Some("5001".into())),
            params(|p| p.n = Some("ten".into())),
            params(|p| p.after = Some("-1".into())),
            params(|p| p.wait = Some("5".into())),
            params(|p| p.source = Some("kernel".into())),
            params(|p| p.since = Some("yesterday-ish".into())),
            params(|p| p.grep = Some("a\0b".into())),
            params(|p| p.grep = Some("x".repeat(1001))),
            params(|p| {
                p.since = Some("1m".into());
                p.until = Some("1h".into());
            }),
        ] {
            let e = parse(&bad, now).unwrap_err();
            assert!(matches!(e, DomainError::Invalid(_)), "{bad:?}: {e}");
        }
        let (f, wait) = parse(
            &params(|p| {
                p.since = Some("10m".into());
                p.until = Some("2001-09-09T01:46:40Z".into());
                p.after = Some("5".into());
                p.wait = Some("600".into());
                p.grep = Some("  ".into());
            }),
            now,
        )
        .unwrap();
        assert_eq!(f.since, Some(now - 600_000_000_000));
        assert_eq!(f.until, Some(now));
        assert_eq!((f.n, f.after, wait, f.grep), (DEFAULT_LINES, Some(5), MAX_WAIT, None));
    }
}
