//! What the page's script reads to stay live without reloading: a deploy's next output lines
//! and an environment's next log lines, each a long poll through the API (which waits up to a
//! bound for something new), answered as JSON the script appends to the page as text.

use super::app::{log_query, status_of};
use super::Signed;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use std::time::Duration;

/// How long one poll waits for news before answering empty (the script asks again).
const WAIT: Duration = Duration::from_secs(20);

fn failed(e: protocol::ClientError) -> Response {
    (status_of(&e), Json(serde_json::json!({ "error": e.message }))).into_response()
}

#[derive(Deserialize)]
pub(crate) struct After {
    #[serde(default)]
    after: u64,
}

/// A deploy's events after `after`, and whether it is over.
pub(crate) async fn deploy_events(
    me: Signed,
    Path((app, env, version)): Path<(String, String, u32)>,
    Query(q): Query<After>,
) -> Response {
    match me.client.deploy_events(&app, &env, version, q.after, WAIT).await {
        Ok(d) => Json(serde_json::json!({
            "events": d.events,
            "next": d.next,
            "status": d.release.status,
            "error": d.release.error,
            "done": d.release.status.is_finished(),
            "url": d.url,
        }))
        .into_response(),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct LogsQuery {
    after: i64,
    process: Option<String>,
    source: Option<String>,
    grep: Option<String>,
}

/// The environment's log lines stored after cursor `after` (with the page's filters).
pub(crate) async fn logs(
    me: Signed,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let mut query = match log_query(&q.process, &q.source, &q.grep, &None) {
        Ok(query) => query,
        Err(message) => return failed(protocol::ClientError { status: Some(400), message }),
    };
    query.after = Some(q.after);
    query.wait = Some(WAIT.as_secs());
    query.n = Some(500);
    match me.client.logs(&app, &env, &query).await {
        Ok(page) => Json(serde_json::json!({
            "lines": page.lines.iter().map(|l| serde_json::json!({
                "at": l.at, "source": l.source, "process": l.process, "replica": l.replica, "text": l.text,
            })).collect::<Vec<_>>(),
            "cursor": page.cursor,
            "dropped": page.dropped,
        }))
        .into_response(),
        Err(e) => failed(e),
    }
}
