//! Platform events: one table (`events`) holds what happened to an app (deploys, crashes and
//! restarts, health changes, backups) and the audit log's changes made by users (rows with an
//! actor). `paas events`, `paas audit` and the central log's platform lines
//! (`logs/platform.rs`) all read it. Replica events are worked out here from node reports:
//! transitions only, with repeats collapsed so a crash loop cannot flood the table.

use super::{now, unix_seconds, BindKey, Result, Store};
use protocol::agent::ContainerStatus;
use protocol::api::Event;

/// How many platform events (not audit entries, which keep their own count) are kept.
pub const EVENTS_KEEP: i64 = 200_000;
/// Within this many seconds of a replica's previous crash (or health) event, a new one of the
/// same family is left out: a crash loop shows a line now and then with its restart count, not
/// a line per restart.
pub const QUIET_SECONDS: i64 = 30;

/// Which events `paas events` lists (see [`Store::activity`]).
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    pub after: Option<i64>,
    pub app: Option<String>,
    pub env: Option<String>,
    /// The apps the caller may see; `None`: every app.
    pub visible: Option<Vec<String>>,
    pub limit: u32,
}

/// A row of the activity feed as read.
#[derive(sqlx::FromRow)]
struct ActivityRow {
    id: i64,
    at: String,
    app: String,
    env: String,
    kind: String,
    severity: String,
    message: String,
    by: String,
    outcome: String,
}

impl ActivityRow {
    fn event(self) -> Event {
        // A user's change that failed says so; the platform's own events say it in `kind`.
        let message = match self.outcome.as_str() {
            "" | "ok" => self.message,
            failed if self.message.is_empty() => failed.to_string(),
            failed => format!("{} ({failed})", self.message),
        };
        let ActivityRow { id, at, app, env, kind, severity, by, .. } = self;
        Event { id, at, app, env, kind, severity, message, by }
    }
}

/// A platform event to record.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub app: &'a str,
    pub env: &'a str,
    /// `deploy.started`, `replica.crashed`, `db.backup.failed`, ...
    pub kind: &'a str,
    /// `info`, `warning` or `critical`.
    pub severity: &'a str,
    /// What happened, in user words; never a secret.
    pub message: &'a str,
    /// The replica it is about, when it is about one.
    pub process: Option<&'a str>,
    pub replica: Option<u32>,
    pub release: Option<u32>,
}

impl<'a> NewEvent<'a> {
    pub fn new(app: &'a str, env: &'a str, kind: &'a str, message: &'a str) -> Self {
        Self { app, env, kind, severity: "info", message, process: None, replica: None, release: None }
    }

    pub fn severity(self, severity: &'a str) -> Self {
        Self { severity, ..self }
    }

    pub fn release(self, version: u32) -> Self {
        Self { release: Some(version), ..self }
    }
}

/// An `events` row, everything in it, as the log feeder reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub at: String,
    pub app: String,
    pub env: String,
    pub kind: String,
    pub severity: String,
    pub message: String,
    /// Audit entries only: who, from where, and how the request ended.
    pub actor: Option<String>,
    pub addr: Option<String>,
    pub outcome: Option<String>,
    pub process: Option<String>,
    #[sqlx(try_from = "super::OptNum")]
    pub replica: Option<u32>,
    #[sqlx(try_from = "super::OptNum")]
    pub release: Option<u32>,
}

/// Inserts one event on `conn` (a transaction's, or the pool's); answers its id. Now and then
/// drops the oldest platform events beyond [`EVENTS_KEEP`].
pub(super) async fn insert(conn: &mut super::Tx, e: &NewEvent<'_>) -> Result<i64> {
    let id: i64 = on!(conn, |ex| sqlx::query_scalar(
        "INSERT INTO events (at, app, env, kind, severity, message, process, replica, release)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(now())
    .bind_env(e.app, e.env)
    .bind(e.kind)
    .bind(e.severity)
    .bind(e.message)
    .bind(e.process)
    .bind(e.replica.map(i64::from))
    .bind(e.release.map(i64::from))
    .fetch_one(ex)
    .await)?;
    if id % 1000 == 0 {
        exec!(conn, |ex| sqlx::query(
            "DELETE FROM events WHERE actor IS NULL AND id <= (
             SELECT id FROM events WHERE actor IS NULL ORDER BY id DESC LIMIT 1 OFFSET $1)",
        )
        .bind(EVENTS_KEEP)
        .execute(ex)
        .await)?;
    }
    Ok(id)
}

impl Store {
    pub async fn add_event(
        &self,
        app: &str,
        env: &str,
        kind: &str,
        severity: &str,
        message: &str,
    ) -> Result<()> {
        self.record_event(&NewEvent::new(app, env, kind, message).severity(severity)).await
    }

    pub async fn record_event(&self, e: &NewEvent<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert(&mut tx, e).await?;
        tx.commit().await?;
        self.event_added();
        Ok(())
    }

    /// Wakes the log feeder: an event was committed. A permit is kept when it is busy, so
    /// none is missed.
    pub(super) fn event_added(&self) {
        self.events_added.notify_one();
    }

    /// Waits until an event is added (or was since the last wait).
    pub async fn wait_for_event(&self) {
        self.events_added.notified().await;
    }

    /// The activity feed (`paas events`), oldest first: what happened to apps (deploys,
    /// crashes, backups) and what users changed on them (deploys, config keys, scales,
    /// restarts), with who; refused attempts stay in the audit log. Those after `f.after`, or
    /// else the newest `f.limit`.
    pub async fn activity(&self, f: &ActivityFilter) -> Result<Vec<Event>> {
        let visible = f.visible.as_ref().map(|apps| serde_json::to_string(apps).expect("a list of strings"));
        let order = if f.after.is_some() { "ASC" } else { "DESC" };
        let visible_apps = self.json_strings("$7");
        let rows: Vec<ActivityRow> = on!(self.pool, |ex| {
            sqlx::query_as(&format!(
                // Users' changes to an app deleted before one of the same name was made stay in
            // the audit log, out of the new app's feed (it starts at its `app.created`).
            "WITH starts AS (SELECT app, MAX(id) AS first FROM events WHERE kind = 'app.created' GROUP BY app)
             SELECT * FROM (SELECT id, at, app, env, kind, severity, message, COALESCE(actor, '') AS by,
                    COALESCE(outcome, '') AS outcome FROM events LEFT JOIN starts USING (app)
              WHERE app != '' AND (actor IS NULL OR (outcome != 'denied' AND id > COALESCE(first, 0))) AND id > $1
                AND ($2 IS NULL OR app = $3) AND ($4 IS NULL OR env = $5)
                AND ($6 IS NULL OR app IN ({visible_apps}))
              ORDER BY id {order} LIMIT $8) AS page ORDER BY id"
            ))
            .bind(f.after.unwrap_or(0))
            .bind(&f.app)
            .bind(&f.app)
            .bind(&f.env)
            .bind(&f.env)
            .bind(&visible)
            .bind(&visible)
            .bind(super::int(f.limit))
            .fetch_all(ex)
            .await
        })?;
        Ok(rows.into_iter().map(ActivityRow::event).collect())
    }

    /// Every event after id `after` (audit entries included), oldest first, at most `limit`.
    /// The newest `limit` platform events of `app`/`env` whose kind is one of `kinds`, oldest
    /// first (what the platform did or saw, not the audit records of users' requests).
    pub async fn events_of_kinds(
        &self,
        app: &str,
        env: &str,
        kinds: &[&str],
        limit: u32,
    ) -> Result<Vec<Event>> {
        let kinds = serde_json::to_string(kinds).expect("a list of strings");
        let listed = self.json_strings("$3");
        let rows: Vec<ActivityRow> = on!(self.pool, |ex| {
            sqlx::query_as(&format!(
                "SELECT * FROM (SELECT id, at, app, env, kind, severity, message, COALESCE(actor, '') AS by,
                        COALESCE(outcome, '') AS outcome FROM events
                  WHERE app = $1 AND env = $2 AND actor IS NULL AND kind IN ({listed}) ORDER BY id DESC LIMIT $4) AS page
                 ORDER BY id"
            ))
            .bind(app)
            .bind(env)
            .bind(&kinds)
            .bind(super::int(limit))
            .fetch_all(ex)
            .await
        })?;
        Ok(rows.into_iter().map(ActivityRow::event).collect())
    }

    pub async fn event_rows_after(&self, after: i64, limit: u32) -> Result<Vec<EventRow>> {
        Ok(on!(self.pool, |ex| {
            sqlx::query_as(
            "SELECT id, at, app, env, kind, severity, message, actor, addr, outcome, process, replica, release
             FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(super::int(limit))
        .fetch_all(ex)
        .await
        })?)
    }
}

/// A replica as the store held it before a report.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Seen {
    pub app: String,
    pub env: String,
    pub process: String,
    #[sqlx(try_from = "i64")]
    pub replica: u32,
    #[sqlx(try_from = "i64")]
    pub release: u32,
    pub state: String,
    pub healthy: bool,
    #[sqlx(try_from = "i64")]
    pub restarts: u32,
}

/// What a report says happened to a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// It stopped by itself; `restarted` when the agent has restarted it already.
    Crashed {
        restarted: bool,
    },
    /// It was started again after a crash seen before.
    Restarted,
    /// It was healthy and its health check now fails (the reason, when the agent gave it).
    Unhealthy(Option<String>),
    Healthy,
}

fn stopped(state: &str) -> bool {
    matches!(state, "exited" | "dead")
}

/// The transition from `old` to `new`, if it is one users hear about.
fn change(old: &Seen, new: &ContainerStatus) -> Option<Change> {
    if new.restarts > old.restarts {
        // A restart without the stop seen first: the crash and the restart in one.
        return Some(if stopped(&old.state) {
            Change::Restarted
        } else {
            Change::Crashed { restarted: true }
        });
    }
    if old.state == "running" && stopped(&new.state) {
        return Some(Change::Crashed { restarted: false });
    }
    if old.healthy && !new.healthy && new.state == "running" {
        // The agent adds the probe's failure to the tail of an unhealthy container.
        let why = new.log_tail.iter().rev().find_map(|l| l.strip_prefix("[paas] health check: "));
        return Some(Change::Unhealthy(why.map(str::to_string)));
    }
    if !old.healthy && new.healthy {
        return Some(Change::Healthy);
    }
    None
}

/// Records what a report changed about a replica (inside the report's transaction); answers
/// whether an event was added.
pub(super) async fn replica_changed(tx: &mut super::Tx, old: &Seen, new: &ContainerStatus) -> Result<bool> {
    let Some(change) = change(old, new) else { return Ok(false) };
    let family: &[&str] = match change {
        Change::Crashed { .. } | Change::Restarted => &["replica.crashed", "replica.restarted"],
        Change::Unhealthy(_) | Change::Healthy => &["replica.unhealthy", "replica.healthy"],
    };
    let last: Option<(String, String)> = on!(tx, |ex| {
        sqlx::query_as(
        "SELECT kind, at FROM events WHERE app = $1 AND env = $2 AND process = $3 AND replica = $4 AND release = $5
           AND kind IN ($6, $7) ORDER BY id DESC LIMIT 1",
    )
    .bind_env(&old.app, &old.env)
    .bind(&old.process)
    .bind(super::int(old.replica))
    .bind(super::int(old.release))
    .bind(family[0])
    .bind(family[1])
    .fetch_optional(ex)
    .await
    })?;
    let quiet = |at: &str| {
        let now = unix_seconds(&now()).unwrap_or(0);
        unix_seconds(at).is_some_and(|t| now - t < QUIET_SECONDS)
    };
    let last_kind = last.as_ref().map(|(k, _)| k.as_str());
    let recent = last.as_ref().is_some_and(|(_, at)| quiet(at));
    let record = match change {
        // The other half of a crash recorded: always told, so a crash is never left hanging.
        Change::Restarted => last_kind == Some("replica.crashed") || !recent,
        Change::Healthy => last_kind == Some("replica.unhealthy"),
        Change::Crashed { .. } | Change::Unhealthy(_) => !recent,
    };
    if !record {
        return Ok(false);
    }
    let who = format!("{}.{}", old.process, old.replica);
    let exit = match new.exit_code {
        Some(0) => ("exited", " (exit code 0)".to_string()),
        Some(code) => ("crashed", format!(" (exit code {code})")),
        None => ("crashed", String::new()),
    };
    let (kind, severity, message) = match change {
        Change::Crashed { restarted: false } => {
            ("replica.crashed", "warning", format!("{who} {}{}; restarting", exit.0, exit.1))
        }
        Change::Crashed { restarted: true } => (
            "replica.crashed",
            "warning",
            format!("{who} {}{}; restarted (restart {})", exit.0, exit.1, new.restarts),
        ),
        Change::Restarted => {
            ("replica.restarted", "info", format!("{who} restarted (restart {})", new.restarts))
        }
        Change::Unhealthy(why) => (
            "replica.unhealthy",
            "warning",
            format!(
                "{who} is unhealthy: {}; out of rotation until it passes again",
                why.as_deref().unwrap_or("its health check fails")
            ),
        ),
        Change::Healthy => ("replica.healthy", "info", format!("{who} is healthy again; back in rotation")),
    };
    let event = NewEvent {
        process: Some(&old.process),
        replica: Some(old.replica),
        release: Some(old.release),
        ..NewEvent::new(&old.app, &old.env, kind, &message).severity(severity)
    };
    insert(tx, &event).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(state: &str, healthy: bool, restarts: u32) -> Seen {
        Seen {
            app: "shop".into(),
            env: "production".into(),
            process: "web".into(),
            replica: 2,
            release: 3,
            state: state.into(),
            healthy,
            restarts,
        }
    }

    fn report(state: &str, healthy: bool, restarts: u32) -> ContainerStatus {
        ContainerStatus {
            name: "c".into(),
            state: state.into(),
            healthy,
            host_port: None,
            restarts,
            log_tail: vec!["[paas] health check: GET /healthz answered 500".into()],
            db: None,
            exit_code: Some(1),
        }
    }

    #[test]
    fn transitions_only() {
        let same = change(&seen("running", true, 0), &report("running", true, 0));
        assert_eq!(same, None);
        let c = |o: Seen, n: ContainerStatus| change(&o, &n);
        assert_eq!(
            c(seen("running", true, 0), report("exited", false, 0)),
            Some(Change::Crashed { restarted: false })
        );
        assert_eq!(c(seen("exited", false, 0), report("running", false, 1)), Some(Change::Restarted));
        assert_eq!(
            c(seen("running", true, 0), report("exited", false, 1)),
            Some(Change::Crashed { restarted: true })
        );
        assert_eq!(
            c(seen("running", true, 0), report("running", false, 0)),
            Some(Change::Unhealthy(Some("GET /healthz answered 500".into())))
        );
        assert_eq!(c(seen("running", false, 0), report("running", true, 0)), Some(Change::Healthy));
        // Starting up (never healthy yet) is no health change.
        assert_eq!(c(seen("pending", false, 0), report("running", false, 0)), None);
    }

    async fn kinds(store: &Store) -> Vec<(String, String)> {
        let rows = store.event_rows_after(0, 100).await.unwrap();
        rows.into_iter().map(|r| (r.kind, r.message)).collect()
    }

    async fn apply(store: &Store, old: Seen, new: ContainerStatus) -> bool {
        let mut tx = store.write_tx().await.unwrap();
        let changed = replica_changed(&mut tx, &old, &new).await.unwrap();
        tx.commit().await.unwrap();
        changed
    }

    #[tokio::test]
    async fn a_crash_loop_is_collapsed_and_a_recovery_always_told() {
        let store = Store::open_in_memory().await.unwrap();
        store.create_app("shop").await.unwrap();
        assert!(apply(&store, seen("running", true, 0), report("exited", false, 0)).await);
        assert!(apply(&store, seen("exited", false, 0), report("running", false, 1)).await);
        // The loop goes on: left out within the quiet time.
        assert!(!apply(&store, seen("running", false, 1), report("exited", false, 1)).await);
        assert!(!apply(&store, seen("exited", false, 1), report("running", false, 2)).await);
        assert!(apply(&store, seen("running", true, 2), report("running", false, 2)).await);
        assert!(apply(&store, seen("running", false, 2), report("running", true, 2)).await);
        assert!(!apply(&store, seen("running", false, 2), report("running", true, 2)).await, "told once");
        assert_eq!(
            kinds(&store).await,
            [
                ("app.created".into(), "App created".into()),
                ("replica.crashed".into(), "web.2 crashed (exit code 1); restarting".into()),
                ("replica.restarted".into(), "web.2 restarted (restart 1)".into()),
                (
                    "replica.unhealthy".into(),
                    "web.2 is unhealthy: GET /healthz answered 500; out of rotation until it passes again"
                        .into()
                ),
                ("replica.healthy".into(), "web.2 is healthy again; back in rotation".into()),
            ]
        );
        let row = &store.event_rows_after(0, 2).await.unwrap()[1];
        assert_eq!((row.process.as_deref(), row.replica, row.release), (Some("web"), Some(2), Some(3)));
        // After the quiet time the loop shows again, with its count.
        exec!(store.pool, |ex| sqlx::query("UPDATE events SET at = '2000-01-01T00:00:00Z'")
            .execute(ex)
            .await)
        .unwrap();
        assert!(apply(&store, seen("running", false, 5), report("exited", false, 6)).await);
        let last = kinds(&store).await.pop().unwrap().1;
        assert_eq!(last, "web.2 crashed (exit code 1); restarted (restart 6)");
    }
}
