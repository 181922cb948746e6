//! The central log's platform lines: a feeder copies every event about an app environment
//! from state.db's `events` table (deploys, crashes and restarts, health changes, backups, and
//! the audit log's changes such as scale and config) into the log store as `source = platform`
//! lines, exactly once and in order. It ships them like a node agent would, under a node name no
//! agent can have, with seq = the event's id, so the store's per-node dedup and `through` are
//! all the state it needs: after a restart it goes on from `through`.

use super::store::{self, now_ns};
use crate::state::AppState;
use crate::store::EventRow;
use protocol::logs::{LogBatch, LogSource, LogStream, ShippedLine};
use std::time::Duration;

/// The feeder's node name in the log store: `@` is never in an agent's (`check_node`).
pub const NODE: &str = "@platform";
/// Events read per batch.
const BATCH: u32 = 500;
/// The feeder also looks this often, should a wake-up be missed (another process's write).
const TICK: Duration = Duration::from_secs(5);
/// Audit entries of changes whose success a deploy's own events tell (started, live, failed):
/// the log would say it twice.
const TOLD_BY_DEPLOY: &[&str] = &["deploy", "rollback", "promote"];

/// Copies events into the log store until shutdown: woken when one is added, and every
/// [`TICK`].
pub async fn feed(state: AppState) {
    let stop = state.shutting_down();
    while !stop.is_cancelled() {
        match feed_once(&state).await {
            Ok(true) => continue, // a full batch: more are waiting
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "copying platform events to the log store failed; trying again");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = state.store.wait_for_event() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Copies the events after the store's `through` for [`NODE`]; answers whether a full batch
/// went (there may be more).
pub async fn feed_once(state: &AppState) -> anyhow::Result<bool> {
    let through = i64::try_from(state.logs.through(NODE).await?)?;
    let (batch, read) = batch_after(state, through).await?;
    if read == 0 {
        return Ok(false);
    }
    state.logs.insert(NODE, &batch, now_ns()).await?;
    Ok(read == BATCH as usize)
}

/// The batch of events after id `after`, and how many events it looked at. Its
/// `forgotten_through` is the highest id looked at, so events that make no line (no app, a
/// refused request) never hold `through` back.
pub async fn batch_after(state: &AppState, after: i64) -> anyhow::Result<(LogBatch, usize)> {
    let rows = state.store.event_rows_after(after, BATCH).await?;
    // Older than retention keeps: they would only be trimmed again (and counted as dropped).
    let age = i64::try_from(state.config.log_retention.age.as_nanos()).unwrap_or(i64::MAX);
    let oldest = now_ns().saturating_sub(age);
    let lines = rows.iter().filter_map(|r| line(r, oldest)).collect();
    let forgotten_through = rows.last().map_or(0, |r| u64::try_from(r.id).unwrap_or(0));
    Ok((LogBatch { lines, dropped: Vec::new(), forgotten_through }, rows.len()))
}

/// The log line of an event, if it makes one.
fn line(r: &EventRow, oldest: i64) -> Option<ShippedLine> {
    if r.app.is_empty() || r.env.is_empty() || store::parse_time(&r.at).is_some_and(|at| at < oldest) {
        return None;
    }
    let text = match &r.actor {
        None => r.message.clone(),
        Some(actor) => {
            let outcome = r.outcome.as_deref().unwrap_or("ok");
            // Refused requests are the audit log's business, not the app's.
            if outcome == "denied" || (outcome == "ok" && TOLD_BY_DEPLOY.contains(&r.kind.as_str())) {
                return None;
            }
            let what = if r.message.is_empty() { r.kind.as_str() } else { r.message.as_str() };
            let from = match r.addr.as_deref() {
                None | Some("") => String::new(),
                Some(addr) => format!(" ({addr})"),
            };
            let ended = if outcome == "ok" { String::new() } else { format!(": {outcome}") };
            format!("{what} by {actor}{from}{ended}")
        }
    };
    Some(ShippedLine {
        seq: u64::try_from(r.id).ok()?,
        at: r.at.clone(),
        app: r.app.clone(),
        env: r.env.clone(),
        source: LogSource::Platform,
        process: r.process.clone().unwrap_or_default(),
        replica: r.replica.unwrap_or(0),
        release: r.release.unwrap_or(0),
        stream: LogStream::Stdout,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::store::Filter;
    use crate::store::{AuditRecord, NewEvent};

    async fn platform_lines(state: &AppState) -> Vec<String> {
        let f = Filter { source: Some(LogSource::Platform), n: 1000, ..Default::default() };
        let page = state.logs.read("shop", "production", &f).await.unwrap();
        page.lines.into_iter().map(|l| l.text).collect()
    }

    fn audit<'a>(action: &'a str, detail: &'a str, outcome: &'a str) -> AuditRecord<'a> {
        AuditRecord {
            user: "alice",
            action,
            app: "shop",
            env: "production",
            addr: "203.0.113.9",
            outcome,
            detail,
        }
    }

    #[tokio::test]
    async fn events_are_copied_once_in_order_and_rows_without_an_app_do_not_stall() {
        let (state, dir) = AppState::for_tests().await;
        let s = &state.store;
        s.record_event(
            &NewEvent::new("shop", "production", "deploy.started", "Deploy v1 started by alice").release(1),
        )
        .await
        .unwrap();
        s.record_audit(&AuditRecord { app: "", env: "", ..audit("user.add", "user bob", "ok") })
            .await
            .unwrap();
        s.record_audit(&audit("scale", "Scaled web to 3", "ok")).await.unwrap();
        s.record_audit(&audit("scale", "", "denied")).await.unwrap();
        s.record_audit(&audit("deploy", "", "ok")).await.unwrap();
        s.record_audit(&audit("config.change", "", "failed (409)")).await.unwrap();
        s.add_event("", "", "node.lost", "warning", "node n2 is gone").await.unwrap();
        assert!(!feed_once(&state).await.unwrap());
        let expected = [
            "Deploy v1 started by alice",
            "Scaled web to 3 by alice (203.0.113.9)",
            "config.change by alice (203.0.113.9): failed (409)",
        ];
        assert_eq!(platform_lines(&state).await, expected);
        // The last rows made no line, and `through` is past them all the same.
        let last = s.event_rows_after(0, 100).await.unwrap().last().unwrap().id;
        assert_eq!(state.logs.through(NODE).await.unwrap(), u64::try_from(last).unwrap());

        // A feeder that starts again (from `through`) adds nothing; one that read from the
        // start again (its batch lost on the way back) stores nothing twice.
        assert!(!feed_once(&state).await.unwrap());
        let (again, _) = batch_after(&state, 0).await.unwrap();
        state.logs.insert(NODE, &again, now_ns()).await.unwrap();
        assert_eq!(platform_lines(&state).await, expected);

        let replica = NewEvent {
            process: Some("web"),
            replica: Some(2),
            release: Some(1),
            ..NewEvent::new(
                "shop",
                "production",
                "replica.crashed",
                "web.2 crashed (exit code 1); restarting",
            )
        };
        s.record_event(&replica).await.unwrap();
        feed_once(&state).await.unwrap();
        let f = Filter { source: Some(LogSource::Platform), n: 1, ..Default::default() };
        let l = state.logs.read("shop", "production", &f).await.unwrap().lines.remove(0);
        assert_eq!(
            (l.text.as_str(), l.process.as_str(), l.replica, l.release),
            (replica.message, "web", 2, 1)
        );
        assert_eq!(platform_lines(&state).await.len(), 4);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_feeder_wakes_when_an_event_is_added() {
        let (state, dir) = AppState::for_tests().await;
        state.spawn(feed(state.clone()));
        state
            .store
            .add_event("shop", "production", "db.backup.done", "info", "Backup b1 stored")
            .await
            .unwrap();
        // Well within the periodic tick: the wake-up did it.
        state.logs.wait_for_lines("shop", "production", 0, Duration::from_secs(2)).await;
        assert_eq!(platform_lines(&state).await, ["Backup b1 stored"]);
        assert_eq!(state.drain(Duration::from_secs(5)).await, 0, "the feeder stops on shutdown");
        let _ = std::fs::remove_dir_all(dir);
    }
}
