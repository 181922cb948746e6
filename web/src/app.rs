//! The app page, one environment at a time: status and URL, deploy, releases with rollback and
//! promote, processes with scale, config, maintenance, the central log with filters (followed
//! live by the page's script), metric charts, and the database with its backups. Each section
//! is read through the API with the visitor's session, side by side; a section the API refuses
//! or fails shows its sentence instead. Controls show only for roles that may use them.

use super::chart;
use super::{env_path, error_page, Signed};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use protocol::access::Role;
use protocol::api::ReleaseStatus;
use protocol::logs::{LogQuery, LogSource};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The chart ranges offered.
const RANGES: &[&str] = &["1h", "24h", "7d"];
/// Log lines shown when the page opens.
const LOG_LINES: u32 = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageQuery {
    range: Option<String>,
    reveal: bool,
    process: Option<String>,
    source: Option<String>,
    grep: Option<String>,
    since: Option<String>,
    /// A database task (a restore) the page follows.
    task: Option<String>,
}

/// The log filters of a query, as the API takes them (empty fields mean no filter).
pub(crate) fn log_query(
    process: &Option<String>,
    source: &Option<String>,
    grep: &Option<String>,
    since: &Option<String>,
) -> Result<LogQuery, String> {
    let given = |v: &Option<String>| v.as_ref().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let source = match given(source) {
        Some(s) => Some(
            s.parse::<LogSource>()
                .map_err(|_| format!("{s:?} is not a log source; pick app, build, router or platform"))?,
        ),
        None => None,
    };
    Ok(LogQuery {
        process: given(process),
        source,
        grep: given(grep),
        since: given(since),
        ..Default::default()
    })
}

/// `/apps/{app}`: its production environment, or its first.
pub(crate) async fn first_env(me: Signed, Path(app): Path<String>) -> Response {
    match me.client.get_app(&app).await {
        Ok(a) => {
            let env = a.envs.iter().find(|e| e.name == "production").or(a.envs.first());
            match env {
                Some(e) => Redirect::to(&env_path(&app, &e.name)).into_response(),
                None => error_page(me.tera(), StatusCode::NOT_FOUND, "This app has no environment."),
            }
        }
        Err(e) => error_page(me.tera(), status_of(&e), &e.message),
    }
}

pub(crate) fn status_of(e: &protocol::ClientError) -> StatusCode {
    e.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_GATEWAY)
}

pub(crate) async fn page(
    me: Signed,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let c = &me.client;
    let summary = match c.get_app(&app).await {
        Ok(a) => a,
        Err(e) => return error_page(me.tera(), status_of(&e), &e.message),
    };
    let Some(current) = summary.envs.iter().find(|e| e.name == env).cloned() else {
        let message = format!("App {app} has no environment named {env}.");
        return error_page(me.tera(), StatusCode::NOT_FOUND, &message);
    };
    let role = me.role_on(&app);
    let can_deploy = role >= Some(Role::Deployer);
    let range = q.range.clone().filter(|r| RANGES.contains(&r.as_str())).unwrap_or_else(|| "1h".into());
    let reveal = q.reveal && can_deploy;
    let mut ctx = me.context("apps");
    let mut problems: Vec<String> = Vec::new();
    let mut logs_query = match log_query(&q.process, &q.source, &q.grep, &q.since) {
        Ok(lq) => lq,
        Err(e) => {
            problems.push(e);
            LogQuery::default()
        }
    };
    // Every field present (empty when unset), for the filter form.
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    ctx.insert(
        "log_filter",
        &serde_json::json!({
            "process": text(&logs_query.process),
            "source": logs_query.source.map(|s| s.to_string()).unwrap_or_default(),
            "grep": text(&logs_query.grep),
            "since": text(&logs_query.since),
        }),
    );
    logs_query.n = Some(LOG_LINES);

    let (releases, processes, config, metrics, logs, db, backups, events, domains) = tokio::join!(
        c.releases(&app, &env),
        c.processes(&app, &env),
        c.config(&app, &env, reveal),
        c.metrics(&app, &env, &range),
        c.logs(&app, &env, &logs_query),
        c.db_info(&app, &env, false),
        c.db_backups(&app, &env),
        c.events(None, Some(&app), Some(&env), 10),
        c.domains(&app),
    );
    match domains {
        Ok(all) => {
            let mine: Vec<_> = all.into_iter().filter(|d| d.env == env).collect();
            ctx.insert("domains", &mine);
        }
        Err(e) => problems.push(format!("domains: {}", e.message)),
    }
    match &releases {
        Ok(r) => ctx.insert("releases", r),
        Err(e) => problems.push(format!("releases: {}", e.message)),
    }
    match &config {
        Ok(c) => ctx.insert("config", c),
        Err(e) => problems.push(format!("config: {}", e.message)),
    }
    if let Ok(events) = &events {
        ctx.insert("events", events);
    }
    if let Ok(page) = &logs {
        ctx.insert("logs", &page.lines);
        ctx.insert("log_cursor", &page.cursor);
        ctx.insert("log_dropped", &page.dropped);
    } else if let Err(e) = &logs {
        problems.push(format!("logs: {}", e.message));
    }
    if let Some(id) = &q.task {
        match c.db_task(&app, &env, id).await {
            Ok(task) => ctx.insert("task", &task),
            Err(e) => problems.push(format!("database task: {}", e.message)),
        }
    }
    // A database is optional: "none" is no problem to report.
    if let Ok(info) = db {
        ctx.insert("db", &info);
        if let Ok(b) = backups {
            ctx.insert("backups", &b);
        }
    }

    let now = unix_now();
    let metrics = metrics.unwrap_or_else(|e| {
        problems.push(format!("metrics: {}", e.message));
        Default::default()
    });
    ctx.insert("charts", &chart::app_charts(&metrics, now));
    ctx.insert("range", &range);
    ctx.insert("ranges", RANGES);
    if let Ok(procs) = &processes {
        ctx.insert("processes", &replicas(procs, &metrics));
    } else if let Err(e) = &processes {
        problems.push(format!("processes: {}", e.message));
    }
    ctx.insert(
        "formation",
        &formation(processes.as_deref().unwrap_or(&[]), releases.as_deref().unwrap_or(&[])),
    );
    let other_envs: Vec<&str> = summary.envs.iter().map(|e| e.name.as_str()).filter(|e| *e != env).collect();
    ctx.insert("app", &app);
    ctx.insert("env", &current);
    ctx.insert("envs", &summary.envs);
    ctx.insert("other_envs", &other_envs);
    ctx.insert("path", &env_path(&app, &env));
    ctx.insert("role", &role.map(|r| r.to_string()));
    ctx.insert("can_deploy", &can_deploy);
    ctx.insert("can_admin", &(role == Some(Role::Admin)));
    ctx.insert("revealed", &reveal);
    ctx.insert("problems", &problems);
    me.page("app.html", &ctx)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// The replicas with their newest CPU and memory figures.
fn replicas(
    procs: &[protocol::api::Process],
    metrics: &protocol::metrics::MetricsView,
) -> Vec<serde_json::Value> {
    let newest = |metric: &str, p: &protocol::api::Process| {
        metrics
            .series
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.get("process") == Some(&p.process)
                    && s.labels.get("replica") == Some(&p.replica.to_string())
            })
            .and_then(|s| s.current().map(|v| chart::format_value(v, &s.unit)))
    };
    procs
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["cpu"] = newest("container_cpu_percent", p).into();
            v["memory"] = newest("container_memory_bytes", p).into();
            v
        })
        .collect()
}

/// Each process of the current release with the replicas running, for the scale controls.
fn formation(procs: &[protocol::api::Process], releases: &[protocol::api::Release]) -> Vec<(String, u32)> {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    if let Some(newest) = releases.iter().find(|r| r.status == ReleaseStatus::Active) {
        for (name, spec) in &newest.manifest.processes {
            counts.insert(name.clone(), spec.replicas);
        }
    }
    let mut running: BTreeMap<&str, u32> = BTreeMap::new();
    for p in procs {
        *running.entry(&p.process).or_default() += 1;
    }
    for (name, n) in running {
        counts.insert(name.to_string(), n);
    }
    counts.into_iter().collect()
}

/// A release's deploy: its output so far, followed live by the page's script.
pub(crate) async fn release(me: Signed, Path((app, env, version)): Path<(String, String, u32)>) -> Response {
    match me.client.deploy_events(&app, &env, version, 0, std::time::Duration::ZERO).await {
        Ok(events) => {
            let mut ctx = me.context("apps");
            ctx.insert("app", &app);
            ctx.insert("env_name", &env);
            ctx.insert("path", &env_path(&app, &env));
            ctx.insert("deploy", &events);
            ctx.insert("done", &events.release.status.is_finished());
            me.page("release.html", &ctx)
        }
        Err(e) => error_page(me.tera(), status_of(&e), &e.message),
    }
}
