//! `/api/v1/apps/{app}/envs/{env}/logs`: an environment's central logs, filtered and searched,
//! with a long-polled follow mode (`after` + `wait`); `.../logs/stream` is the same as
//! server-sent events (what the console's live view uses), resumable by `Last-Event-ID`.

use super::error::{ApiError, ApiResult};
use super::routes::{Api, Need};
use crate::logs::{self, Followed, Params};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::Method;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::{Stream, StreamExt};
use protocol::access::Role::{Admin, Viewer};
use protocol::logs::{LogPage, LogRetention, SetLogRetention};
use std::convert::Infallible;

pub fn routes() -> Api {
    Api::new()
        .get("/apps/{app}/envs/{env}/logs", Need::App(Viewer), read)
        .get("/apps/{app}/envs/{env}/logs/stream", Need::App(Viewer), stream)
        .get("/apps/{app}/logs/retention", Need::App(Viewer), retention)
        .on(Method::PUT, "/apps/{app}/logs/retention", Need::App(Admin), "logs.retention", set_retention)
}

async fn retention(State(state): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<LogRetention>> {
    Ok(Json(logs::retention_of(&state, &app).await?))
}

async fn set_retention(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Json(set): Json<SetLogRetention>,
) -> ApiResult<Json<LogRetention>> {
    Ok(Json(logs::set_retention(&state, &app, &set).await?))
}

async fn read(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Json<LogPage>> {
    Ok(Json(logs::read(&state, &app, &env, &params).await?))
}

/// Events: `line` (a log entry as JSON, its id the entry's), `dropped` (`{"dropped":N}`), and
/// an id-only event after each page, so a reconnecting client resumes past lines the filters
/// left out.
async fn stream(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(v) => {
            Some(v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()).filter(|c| *c >= 0).ok_or_else(
                || ApiError::BadRequest("Last-Event-ID must be the id of an event this stream sent".into()),
            )?)
        }
    };
    let events = logs::follow(&state, &app, &env, &params, resume).await?;
    Ok(Sse::new(events.map(|e| Ok(sse_event(e)))).keep_alive(KeepAlive::default()))
}

fn sse_event(e: Followed) -> Event {
    match e {
        Followed::Line(line) => {
            let id = line.id.to_string();
            Event::default().event("line").id(id).json_data(&line).unwrap_or_else(|_| Event::default())
        }
        Followed::Dropped(n) => Event::default().event("dropped").data(format!("{{\"dropped\":{n}}}")),
        Followed::Cursor(c) => Event::default().id(c.to_string()).comment("cursor"),
    }
}
