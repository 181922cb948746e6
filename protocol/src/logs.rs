//! Wire types of central logs: the lines node agents ship (`POST /agent/v1/nodes/{node}/logs`)
//! and the lines users read (`GET /api/v1/apps/{app}/envs/{env}/logs`).

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

crate::string_enum! {
    /// Where a line comes from.
    pub enum LogSource {
        /// A container of the app (web, worker, release phase, one-off run).
        App = "app",
        /// A build's output.
        Build = "build",
        /// The ingress access log.
        Router = "router",
        /// The platform's own events about the app (deploys, crashes, scaling, config).
        Platform = "platform",
    }
}

crate::string_enum! {
    pub enum LogStream {
        Stdout = "stdout",
        Stderr = "stderr",
    }
}

/// One line as an agent ships it. `seq` numbers the node's lines from 1 without gaps or
/// repeats, across agent restarts (it is kept in the spool), so the control plane stores each
/// line once however often it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedLine {
    pub seq: u64,
    /// When the line was written (RFC 3339, nanoseconds, UTC): Docker's timestamp.
    pub at: String,
    pub app: String,
    pub env: String,
    pub source: LogSource,
    /// `web`, `worker`, `release`, `run`, ...
    pub process: String,
    pub replica: u32,
    pub release: u32,
    pub stream: LogStream,
    pub text: String,
}

/// A batch of lines from one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogBatch {
    pub lines: Vec<ShippedLine>,
    /// Lines the agent had to drop since its previous batch (its spool was full), per app and
    /// environment, so the loss is shown to users, never silent.
    pub dropped: Vec<Dropped>,
    /// The agent has forgotten every line up to this `seq`: the control plane stored it, or
    /// the agent's full spool dropped it (counted in `dropped`). Lines up to here that the
    /// control plane lacks will never come, so it counts them as stored when it works out
    /// `through`; without this a drop would hold `through` below the gap for ever.
    pub forgotten_through: u64,
}

/// [`ShippedLine`] as the control plane reads it: its strings borrow the request's bytes
/// where JSON needs no unescaping, so a batch of thousands of lines is read without an
/// allocation per field.
#[derive(Debug, Clone, Deserialize)]
pub struct ShippedLineRef<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub at: Cow<'a, str>,
    #[serde(borrow)]
    pub app: Cow<'a, str>,
    #[serde(borrow)]
    pub env: Cow<'a, str>,
    pub source: LogSource,
    #[serde(borrow)]
    pub process: Cow<'a, str>,
    pub replica: u32,
    pub release: u32,
    pub stream: LogStream,
    #[serde(borrow)]
    pub text: Cow<'a, str>,
}

/// [`LogBatch`] as the control plane reads it (see [`ShippedLineRef`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LogBatchRef<'a> {
    #[serde(borrow)]
    pub lines: Vec<ShippedLineRef<'a>>,
    pub dropped: Vec<Dropped>,
    pub forgotten_through: u64,
}

impl ShippedLine {
    pub fn borrowed(&self) -> ShippedLineRef<'_> {
        ShippedLineRef {
            seq: self.seq,
            at: Cow::Borrowed(&self.at),
            app: Cow::Borrowed(&self.app),
            env: Cow::Borrowed(&self.env),
            source: self.source,
            process: Cow::Borrowed(&self.process),
            replica: self.replica,
            release: self.release,
            stream: self.stream,
            text: Cow::Borrowed(&self.text),
        }
    }
}

impl LogBatch {
    pub fn borrowed(&self) -> LogBatchRef<'_> {
        LogBatchRef {
            lines: self.lines.iter().map(ShippedLine::borrowed).collect(),
            dropped: self.dropped.clone(),
            forgotten_through: self.forgotten_through,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub app: String,
    pub env: String,
    pub lines: u64,
}

/// The answer to a batch: every line up to `through` is stored (the agent may forget them).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LogAck {
    pub through: u64,
}

/// One stored line, as users read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// Increasing in the order lines were stored; `after` in the next query.
    pub id: i64,
    pub at: String,
    pub source: LogSource,
    pub process: String,
    pub replica: u32,
    pub release: u32,
    pub node: String,
    pub stream: LogStream,
    pub text: String,
}

/// A page of lines in time order, with where to continue and what was dropped in its span.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogEntry>,
    /// Pass as `after` to get the lines stored since.
    pub cursor: i64,
    /// Lines dropped (by an agent's spool or the store's caps) for this app and environment in
    /// the time the page covers.
    pub dropped: u64,
}

/// What `GET /api/v1/apps/{app}/envs/{env}/logs` takes (the query string); every field is
/// optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<LogSource>,
    /// A duration back from now (`10m`) or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Lines holding this phrase (words in this order, any case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grep: Option<String>,
    /// How many lines (default 200, at most 5000): the newest, or in follow mode the next.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Follow mode: lines stored after this cursor (a page's `cursor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Follow mode: seconds to wait for lines when there are none yet (at most 60).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
}

/// An app's log retention (`GET`/`PUT /api/v1/apps/{app}/logs/retention`): its own limits,
/// tighter than the store's, which apply to every app.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogRetention {
    /// Lines older than this many seconds go (`None`: the store's age).
    pub age_secs: Option<u64>,
    /// The app's lines take at most about this many MiB (`None`: only the store's cap).
    pub max_mib: Option<u64>,
    pub store_age_secs: u64,
    pub store_max_mib: u64,
}

/// What `PUT .../logs/retention` takes: a duration such as `3d`, and MiB; both absent or null
/// return the app to the store's limits.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SetLogRetention {
    pub age: Option<String>,
    pub max_mib: Option<u64>,
}
