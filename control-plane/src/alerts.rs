//! Alerts: every 10 s each enabled rule is checked against what the platform knows now (the
//! nodes' newest samples, when each node last sent one, the newest deploy and restore drill of
//! each environment); a condition held for the rule's duration fires an alert for its subject,
//! and one no longer held resolves it. Each firing and each resolve is notified once (unless
//! the rule is silenced); the alerts are kept in state.db, so a restart neither forgets what
//! fires nor notifies it again.

use crate::error::{DomainError, Result};
use crate::metrics::ring::SeriesKey;
use crate::state::AppState;
use crate::store::{AlertRow, RuleRow};
use protocol::alerts::{AddRule, Alert, AlertRule, Notification, SetRule, Silence};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(protocol::metrics::SAMPLE_SECS);
/// Resolved alerts are listed this long.
const KEEP_RESOLVED_SECS: i64 = 7 * 24 * 3600;
/// A firing alert whose subject nothing reports (a restarted control plane before the first
/// samples, a container between a crash and its restart) is resolved only after this long.
const ABSENT_GRACE_SECS: i64 = 60;

fn rule_view(r: &RuleRow) -> AlertRule {
    AlertRule {
        id: r.id.clone(),
        kind: r.kind.clone(),
        metric: r.metric.clone(),
        op: r.op.clone(),
        threshold: r.threshold,
        for_secs: r.for_secs.max(0) as u64,
        app: r.app.clone(),
        env: r.env.clone(),
        enabled: r.enabled,
        silenced_until: r.silenced_until.clone(),
        description: r.description.clone(),
        builtin: r.builtin,
    }
}

/// Most rules of one's own.
const MAX_RULES: usize = 100;

fn parse_for(d: &str) -> Result<i64> {
    let d = humantime::parse_duration(d.trim())
        .map_err(|_| DomainError::Invalid(format!("--for must be a duration such as 5m or 0s, not {d:?}")))?;
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err(DomainError::Invalid("--for is at most 7 days".into()));
    }
    Ok(d.as_secs() as i64)
}

/// Adds a rule of one's own on a metric, scoped to an app (or one of its environments) or not.
pub async fn add_rule(state: &AppState, user: &str, add: &AddRule) -> Result<AlertRule> {
    let id = add.id.trim();
    let named = !id.is_empty()
        && id.len() <= 40
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !named {
        return Err(DomainError::Invalid(format!(
            "a rule's name is up to 40 lowercase letters, digits and dashes, not {id:?}"
        )));
    }
    if !crate::metrics::METRICS.contains(&add.metric.as_str()) {
        return Err(DomainError::Invalid(format!(
            "{:?} is not a metric; `paas metrics` shows them: {}",
            add.metric,
            crate::metrics::METRICS.join(", ")
        )));
    }
    if ![">", "<"].contains(&add.op.as_str()) || !add.threshold.is_finite() {
        return Err(DomainError::Invalid("a rule compares with > or < a number".into()));
    }
    if add.env.is_some() && add.app.is_none() {
        return Err(DomainError::Invalid("--env needs --app".into()));
    }
    match (&add.app, &add.env) {
        (Some(app), Some(env)) => drop(state.store.get_env(app, env).await?),
        (Some(app), None) => drop(state.store.get_app(app).await?),
        _ => {}
    }
    let rules = state.store.alert_rules().await?;
    if rules.iter().any(|r| r.id == id) {
        return Err(DomainError::Conflict(format!("there is a rule named {id} already")));
    }
    if rules.iter().filter(|r| !r.builtin).count() >= MAX_RULES {
        return Err(DomainError::Conflict(format!(
            "there are {MAX_RULES} rules of your own already; remove one first"
        )));
    }
    let r = RuleRow {
        id: id.to_string(),
        kind: "metric".into(),
        metric: add.metric.clone(),
        op: add.op.clone(),
        threshold: add.threshold,
        for_secs: parse_for(&add.for_)?,
        app: add.app.clone(),
        env: add.env.clone(),
        enabled: true,
        silenced_until: None,
        description: format!("{} {} {}", add.metric, add.op, round(add.threshold)),
        builtin: false,
    };
    state.store.insert_alert_rule(&r).await?;
    tracing::info!(rule = id, user, metric = %r.metric, app = ?r.app, env = ?r.env, "alert rule added");
    Ok(rule_view(&r))
}

/// Removes a rule of one's own, with its alerts.
pub async fn remove_rule(state: &AppState, user: &str, id: &str) -> Result<()> {
    let r = rule(state, id).await?;
    if r.builtin {
        return Err(DomainError::Conflict(format!(
            "{id} is one of the platform's rules: turn it off with `paas alerts rules set {id} --enabled false`"
        )));
    }
    state.store.delete_alert_rule(id).await?;
    tracing::info!(rule = id, user, "alert rule removed");
    Ok(())
}

fn silenced(r: &RuleRow, now: &str) -> bool {
    r.silenced_until.as_deref().is_some_and(|until| until > now)
}

pub async fn rules(state: &AppState) -> Result<Vec<AlertRule>> {
    Ok(state.store.alert_rules().await?.iter().map(rule_view).collect())
}

async fn rule(state: &AppState, id: &str) -> Result<RuleRow> {
    state.store.alert_rule(id).await?.ok_or_else(|| {
        DomainError::NotFound(format!("there is no alert rule {id:?}; `paas alerts rules` lists them"))
    })
}

/// Changes a rule's threshold, duration or whether it is on.
pub async fn set_rule(state: &AppState, user: &str, id: &str, set: &SetRule) -> Result<AlertRule> {
    let mut r = rule(state, id).await?;
    if let Some(t) = set.threshold {
        if !t.is_finite() {
            return Err(DomainError::Invalid("the threshold must be a number".into()));
        }
        r.threshold = t;
    }
    if let Some(d) = &set.for_ {
        r.for_secs = parse_for(d)?;
    }
    if let Some(e) = set.enabled {
        r.enabled = e;
    }
    state.store.update_alert_rule(&r).await?;
    tracing::info!(
        rule = id,
        user,
        threshold = r.threshold,
        for_secs = r.for_secs,
        enabled = r.enabled,
        "alert rule changed"
    );
    Ok(rule_view(&r))
}

/// Holds back a rule's notifications for `duration` (ends a silence without one).
pub async fn silence(state: &AppState, user: &str, id: &str, s: &Silence) -> Result<AlertRule> {
    let mut r = rule(state, id).await?;
    r.silenced_until = match &s.duration {
        None => None,
        Some(d) => {
            let d = humantime::parse_duration(d.trim()).map_err(|_| {
                DomainError::Invalid(format!("--for must be a duration such as 2h, not {d:?}"))
            })?;
            let until = time::OffsetDateTime::now_utc() + d;
            Some(until.format(&time::format_description::well_known::Rfc3339).map_err(anyhow::Error::from)?)
        }
    };
    state.store.update_alert_rule(&r).await?;
    tracing::info!(rule = id, user, until = ?r.silenced_until, "alert rule silenced");
    Ok(rule_view(&r))
}

/// Firing alerts, then the resolved ones of the last week.
pub async fn list(state: &AppState) -> Result<Vec<Alert>> {
    let rules: HashMap<String, RuleRow> =
        state.store.alert_rules().await?.into_iter().map(|r| (r.id.clone(), r)).collect();
    let now = crate::store::now();
    Ok(state
        .store
        .alerts()
        .await?
        .into_iter()
        .map(|a| {
            let rule = rules.get(&a.rule);
            Alert {
                description: rule.map(|r| r.description.clone()).unwrap_or_default(),
                silenced: rule.is_some_and(|r| silenced(r, &now)),
                rule: a.rule,
                subject: a.subject,
                app: a.app,
                env: a.env,
                state: a.state,
                since: a.since,
                resolved_at: a.resolved_at,
                value: a.value,
            }
        })
        .collect())
}

/// What one check saw for a rule and subject.
struct Seen {
    value: f64,
    breaching: bool,
    app: Option<String>,
    env: Option<String>,
}

/// `node=n1 path=/`: a series' labels, the metric aside.
fn subject_of(key: &SeriesKey) -> String {
    key.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

fn compare(op: &str, value: f64, threshold: f64) -> bool {
    if op == "<" {
        value < threshold
    } else {
        value > threshold
    }
}

/// The evaluator's memory between checks.
#[derive(Default)]
struct Memory {
    /// Since when each (rule, subject) has been breaching.
    breaching: HashMap<(String, String), i64>,
    /// Counter values over the window of `increase` rules, per (rule, subject), with the
    /// subject's app and environment: kept while the series is missing from a sample (a
    /// crashed container is not running when the next sample is taken).
    history: HashMap<(String, String), History>,
    /// Since when each firing (rule, subject) has gone unreported.
    absent: HashMap<(String, String), i64>,
}

#[derive(Default)]
struct History {
    points: VecDeque<(i64, f64)>,
    app: Option<String>,
    env: Option<String>,
}

/// Checks the rules every 10 s until shutdown.
pub async fn run(state: AppState) {
    let stop = state.shutting_down();
    let started = crate::metrics::now_secs();
    let mut memory = Memory::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = check(&state, &mut memory, started).await {
            tracing::warn!(error = %e, "checking the alert rules failed");
        }
    }
}

async fn check(state: &AppState, memory: &mut Memory, started: i64) -> Result<()> {
    let now = crate::metrics::now_secs();
    let rules = state.store.alert_rules().await?;
    let current = state.metrics.current(now);
    let mut seen: HashMap<(String, String), Seen> = HashMap::new();
    for r in rules.iter().filter(|r| r.enabled) {
        let in_scope = |app: Option<&str>, env: Option<&str>| {
            r.app.as_deref().is_none_or(|a| app == Some(a)) && r.env.as_deref().is_none_or(|e| env == Some(e))
        };
        let mut put = |subject: String, value: f64, breaching: bool, app: Option<&str>, env: Option<&str>| {
            let (app, env) = (app.map(str::to_string), env.map(str::to_string));
            seen.insert((r.id.clone(), subject), Seen { value, breaching, app, env });
        };
        match r.kind.as_str() {
            "metric" => {
                for (key, value) in current.iter().filter(|(k, _)| k.metric == r.metric) {
                    let (app, env) = (key.label("app"), key.label("env"));
                    if in_scope(app, env) {
                        put(subject_of(key), *value, compare(&r.op, *value, r.threshold), app, env);
                    }
                }
            }
            "increase" => {
                for (key, value) in current.iter().filter(|(k, _)| k.metric == r.metric) {
                    let (app, env) = (key.label("app"), key.label("env"));
                    if in_scope(app, env) {
                        let h = memory.history.entry((r.id.clone(), subject_of(key))).or_default();
                        h.points.push_back((now, *value));
                        (h.app, h.env) = (app.map(str::to_string), env.map(str::to_string));
                    }
                }
                // Every subject with points in the window, whether or not this sample has it.
                for ((rule, subject), h) in memory.history.iter_mut().filter(|((rule, _), _)| *rule == r.id) {
                    while h.points.front().is_some_and(|(at, _)| *at < now - r.for_secs) {
                        h.points.pop_front();
                    }
                    let (Some(low), Some(last)) =
                        (h.points.iter().map(|(_, v)| *v).reduce(f64::min), h.points.back().map(|(_, v)| *v))
                    else {
                        continue;
                    };
                    let grew = last - low;
                    let (app, env) = (h.app.clone(), h.env.clone());
                    seen.insert(
                        (rule.clone(), subject.clone()),
                        Seen { value: grew, breaching: compare(&r.op, grew, r.threshold), app, env },
                    );
                }
            }
            "silent" => {
                let last_seen = state.metrics.last_seen();
                for node in state.store.list_nodes().await? {
                    let last = last_seen.get(&node.name).copied().unwrap_or(started);
                    let quiet = (now - last) as f64;
                    put(format!("node={}", node.name), quiet, compare(&r.op, quiet, r.threshold), None, None);
                }
            }
            "state" => {
                for (subject, value, app, env) in figures(state, &r.metric, now).await? {
                    if in_scope(app.as_deref(), env.as_deref()) {
                        put(
                            subject,
                            value,
                            compare(&r.op, value, r.threshold),
                            app.as_deref(),
                            env.as_deref(),
                        );
                    }
                }
            }
            "event" => {
                let failed = match r.metric.as_str() {
                    "deploy_failed" => state.store.failed_newest_releases().await?,
                    "restore_drill_failed" => state.store.failed_newest_drills().await?,
                    "db_failover" => failovers(state, now).await?,
                    _ => Vec::new(),
                };
                for (app, env) in failed.iter().filter(|(a, e)| in_scope(Some(a), Some(e))) {
                    put(format!("app={app} env={env}"), 1.0, true, Some(app), Some(env));
                }
            }
            _ => {}
        }
    }
    memory.history.retain(|_, h| !h.points.is_empty());
    let firing: HashMap<(String, String), AlertRow> = state
        .store
        .alerts()
        .await?
        .into_iter()
        .filter(|a| a.state == "firing")
        .map(|a| ((a.rule.clone(), a.subject.clone()), a))
        .collect();
    let rules: HashMap<&str, &RuleRow> = rules.iter().map(|r| (r.id.as_str(), r)).collect();
    let stamp = crate::store::now();
    for (key, s) in &seen {
        let Some(rule) = rules.get(key.0.as_str()) else { continue };
        if !s.breaching {
            memory.breaching.remove(key);
            continue;
        }
        let since = *memory.breaching.entry(key.clone()).or_insert(now);
        let held = rule.kind != "metric" || now - since >= rule.for_secs;
        if !held {
            continue;
        }
        let mut row = match firing.get(key) {
            Some(a) => a.clone(),
            None => AlertRow {
                rule: key.0.clone(),
                subject: key.1.clone(),
                app: s.app.clone(),
                env: s.env.clone(),
                state: "firing".into(),
                since: rfc3339(since),
                resolved_at: None,
                value: s.value,
            },
        };
        row.value = s.value;
        state.store.put_alert(&row).await?;
        if !firing.contains_key(key) {
            tracing::warn!(rule = %row.rule, subject = %row.subject, value = row.value, "alert firing");
            notify(state, rule, &row, "alert.firing", &stamp).await;
        }
    }
    memory.absent.retain(|k, _| firing.contains_key(k) && !seen.contains_key(k));
    for (key, mut row) in firing {
        let still = seen.get(&key).is_some_and(|s| s.breaching);
        if still {
            continue;
        }
        if !seen.contains_key(&key) {
            let since = *memory.absent.entry(key.clone()).or_insert(now);
            if now - since < ABSENT_GRACE_SECS {
                continue;
            }
        }
        row.state = "resolved".into();
        row.resolved_at = Some(stamp.clone());
        if let Some(s) = seen.get(&key) {
            row.value = s.value;
        }
        state.store.put_alert(&row).await?;
        tracing::info!(rule = %row.rule, subject = %row.subject, "alert resolved");
        if let Some(rule) = rules.get(key.0.as_str()) {
            notify(state, rule, &row, "alert.resolved", &stamp).await;
        }
    }
    state.store.prune_alerts(&rfc3339(now - KEEP_RESOLVED_SECS)).await?;
    Ok(())
}

/// The figures of a `state` rule: (subject, value, app, env).
async fn figures(
    state: &AppState,
    metric: &str,
    now: i64,
) -> Result<Vec<(String, f64, Option<String>, Option<String>)>> {
    let mut out = Vec::new();
    match metric {
        // Hours past the time the schedule asked for a backup newer than the newest stored one.
        "backup_overdue_hours" => {
            for db in state.store.all_databases().await? {
                let Ok(Some(schedule)) = crate::backups::parse_schedule(&db.backup_schedule) else {
                    continue;
                };
                let newest = state
                    .store
                    .list_backups(&db.app, &db.env)
                    .await?
                    .iter()
                    .filter(|b| b.status == protocol::api::BackupStatus::Stored)
                    .filter_map(|b| crate::store::unix_seconds(&b.started_at))
                    .max();
                let Some(base) = newest.or_else(|| crate::store::unix_seconds(&db.created_at)) else {
                    continue;
                };
                let Some(overdue) = overdue_hours(&schedule, base, now) else { continue };
                out.push((format!("app={} env={}", db.app, db.env), overdue, Some(db.app), Some(db.env)));
            }
        }
        "certificate_days_left" => {
            for cert in state.store.list_certificates().await? {
                let days = (cert.not_after - now) as f64 / 86_400.0;
                out.push((format!("host={}", cert.host), days, None, None));
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Hours since the schedule asked for a backup newer than `newest` (0 while it is not due).
fn overdue_hours(schedule: &crate::cron::Schedule, newest: i64, now: i64) -> Option<f64> {
    let due = schedule.next_after(newest)?;
    Some(((now - due) as f64 / 3600.0).max(0.0))
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The sentence a notification carries: `node-disk on node=n1 path=/: 91.3 > 80 since ...`.
/// Databases that failed over within the last hour, or whose primary's node was lost and that
/// were not failed over while their primary stays down.
async fn failovers(state: &AppState, now: i64) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (app, env, kind, at) in state.store.newest_failovers().await? {
        let news = if kind == "db.failover" {
            crate::store::unix_seconds(&at).is_some_and(|t| now - t < 3600)
        } else {
            let Ok(db) = state.store.get_database(&app, &env).await else { continue };
            let primary = db.docker_names().database(protocol::agent::DbRole::Primary.as_str());
            !state.db_status(&primary).is_some_and(|s| s.healthy)
        };
        if news {
            out.push((app, env));
        }
    }
    Ok(out)
}

fn summary(rule: &RuleRow, row: &AlertRow, event: &str) -> String {
    let state = if event == "alert.firing" { "firing" } else { "resolved" };
    match rule.kind.as_str() {
        "event" => format!("{} ({}) on {}: {state}", rule.id, rule.description, row.subject),
        "state" if rule.metric == "certificate_days_left" => {
            format!(
                "{} ({}) on {}: {} days left, {state}",
                rule.id,
                rule.description,
                row.subject,
                round(row.value)
            )
        }
        "state" => format!(
            "{} ({}) on {}: {} hours overdue, {state}",
            rule.id,
            rule.description,
            row.subject,
            round(row.value)
        ),
        _ => format!(
            "{} ({}) on {}: {} {} {} since {}, {state}",
            rule.id,
            rule.description,
            row.subject,
            round(row.value),
            rule.op,
            round(rule.threshold),
            row.since
        ),
    }
}

fn round(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

async fn notify(state: &AppState, rule: &RuleRow, row: &AlertRow, event: &str, at: &str) {
    if silenced(rule, at) {
        return;
    }
    let note = Notification {
        event: event.into(),
        rule: Some(rule.id.clone()),
        subject: Some(row.subject.clone()),
        app: row.app.clone(),
        env: row.env.clone(),
        summary: summary(rule, row, event),
        value: Some(row.value),
        threshold: Some(rule.threshold),
        since: Some(row.since.clone()),
        at: at.to_string(),
    };
    crate::notify::send(state, &note).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daily_backup_is_overdue_once_the_next_one_was_due() {
        let daily: crate::cron::Schedule = "0 3 * * *".parse().unwrap();
        // The newest backup at 03:00 on day 0; the next is due at 03:00 on day 1.
        let day0 = 1_795_748_400; // 2026-11-27T03:00:00Z
        assert_eq!(overdue_hours(&daily, day0, day0 + 20 * 3600), Some(0.0));
        assert_eq!(overdue_hours(&daily, day0, day0 + 26 * 3600), Some(2.0));
        assert!(compare(">", 2.0, 1.0) && !compare(">", 0.0, 1.0) && compare("<", 3.0, 14.0));
    }

    #[test]
    fn subjects_name_every_label() {
        let key = SeriesKey::new("node_disk_percent", &[("node", "n1"), ("path", "/")]);
        assert_eq!(subject_of(&key), "node=n1 path=/");
    }
}
