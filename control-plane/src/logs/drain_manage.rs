//! Adding, listing and removing an app's drains: URLs checked and sealed, shown masked, with
//! each drain's state, counters and backlog.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::DrainRow;
use protocol::drains::{mask_drain_url, parse_drain_url, AddDrain, Drain, DrainState};

/// Drains an app may have: each is a task and a connection.
pub const MAX_DRAINS_PER_APP: usize = 10;
/// The backlog shown is counted up to this many lines per environment.
const BACKLOG_COUNT_CAP: u64 = 10_000_000;

/// Serialises additions, so two of the same URL cannot both pass the duplicate check.
static ADDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn open_url(state: &AppState, row: &DrainRow) -> Option<String> {
    state.secrets.open_text(&row.url).ok().and_then(|u| String::from_utf8(u).ok())
}

async fn view(state: &AppState, row: DrainRow) -> Result<Drain> {
    let envs = match &row.env {
        Some(env) => vec![env.clone()],
        None => state.store.list_envs(&row.app).await?.into_iter().map(|e| e.name).collect(),
    };
    let backlog = state.logs.drain_backlog(&row.app, &envs, row.position, BACKLOG_COUNT_CAP).await?;
    let url =
        open_url(state, &row).map(|u| mask_drain_url(&u)).unwrap_or_else(|| "(does not decrypt)".into());
    let status = match (&row.last_error, &row.last_success_at) {
        (Some(_), _) => DrainState::Failing,
        (None, Some(_)) => DrainState::Ok,
        (None, None) => DrainState::Pending,
    };
    Ok(Drain {
        id: row.id,
        app: row.app,
        env: row.env,
        url,
        created_at: row.created_at,
        created_by: row.created_by,
        state: status,
        delivered: u64::try_from(row.delivered).unwrap_or(0),
        dropped: u64::try_from(row.dropped).unwrap_or(0),
        backlog,
        last_error: row.last_error,
        last_error_at: row.last_error_at,
        last_success_at: row.last_success_at,
    })
}

/// `app`'s drains, URLs masked.
pub async fn list(state: &AppState, app: &str) -> Result<Vec<Drain>> {
    protocol::AppName::new(app)?;
    state.store.get_app(app).await?;
    let mut out = Vec::new();
    for row in state.store.list_drains(app).await? {
        out.push(view(state, row).await?);
    }
    Ok(out)
}

/// Adds a drain of `app` (one environment's lines, or every environment's); it sends lines
/// stored from now on.
pub async fn add(state: &AppState, user: &str, app: &str, req: AddDrain) -> Result<Drain> {
    protocol::AppName::new(app)?;
    let target = parse_drain_url(&req.url).map_err(DomainError::Invalid)?;
    let env = req.env.map(|e| e.trim().to_string()).filter(|e| !e.is_empty());
    match &env {
        Some(env) => {
            protocol::EnvName::new(env)?;
            state.store.get_env(app, env).await?;
        }
        None => {
            state.store.get_app(app).await?;
        }
    }
    // A name that resolves to a private address now is refused now; one that cannot be looked
    // up yet is checked at each connection (as every name is).
    let port = target.port;
    if let Ok(Ok(addrs)) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((target.host.as_str(), port)),
    )
    .await
    {
        let addrs: Vec<_> = addrs.collect();
        let allowed = &state.config.drains.allow_nets;
        if let Some(a) = addrs.iter().find(|a| !super::send::allowed_destination(a.ip(), allowed)) {
            return Err(DomainError::Invalid(format!(
                "the drain's host is a private, loopback or link-local address ({}); drains go only to public addresses unless the platform is started with --drain-allow-net (for example --drain-allow-net 10.0.0.0/8)",
                a.ip()
            )));
        }
    }
    let url = target.url.as_str().to_string();
    let _adding = ADDING.lock().await;
    let existing = state.store.list_drains(app).await?;
    if existing.len() >= MAX_DRAINS_PER_APP {
        return Err(DomainError::Conflict(format!(
            "{app} has {MAX_DRAINS_PER_APP} drains, the most an app may have: remove one first"
        )));
    }
    if let Some(same) =
        existing.iter().find(|d| d.env == env && open_url(state, d).as_deref() == Some(url.as_str()))
    {
        return Err(DomainError::Conflict(format!("{app} already has this drain ({})", same.id)));
    }
    let position = state.logs.drain_start().await?;
    let row = DrainRow {
        id: format!("d-{:08x}", rand::random::<u32>()),
        app: app.to_string(),
        env: env.clone(),
        url: state.secrets.seal_text(url.as_bytes()),
        created_at: crate::store::now(),
        created_by: user.to_string(),
        position,
        delivered: 0,
        dropped: 0,
        last_error: None,
        last_error_at: None,
        last_success_at: None,
    };
    state.store.insert_drain(&row).await?;
    let masked = mask_drain_url(&url);
    tracing::info!(app, env = env.as_deref().unwrap_or("*"), drain = %row.id, url = %masked, user, "log drain added");
    view(state, row).await
}

/// Removes `app`'s drain with this id, or with this URL (`by_url`).
pub async fn remove(
    state: &AppState,
    user: &str,
    app: &str,
    id: Option<&str>,
    by_url: Option<&str>,
) -> Result<Drain> {
    protocol::AppName::new(app)?;
    state.store.get_app(app).await?;
    let rows = state.store.list_drains(app).await?;
    let matching: Vec<DrainRow> = match (id, by_url) {
        (Some(id), _) => rows.into_iter().filter(|d| d.id == id).collect(),
        (None, Some(url)) => {
            let url = parse_drain_url(url).map_err(DomainError::Invalid)?.url.as_str().to_string();
            rows.into_iter().filter(|d| open_url(state, d).as_deref() == Some(url.as_str())).collect()
        }
        (None, None) => return Err(DomainError::Invalid("name the drain to remove by its id or URL".into())),
    };
    let row = match matching.len() {
        0 => {
            let what = id.map(|id| format!("drain {id:?}")).unwrap_or_else(|| "drain with this URL".into());
            return Err(DomainError::NotFound(format!("{app} has no {what} (see paas drains list)")));
        }
        1 => matching.into_iter().next().expect("one"),
        _ => {
            return Err(DomainError::Conflict(format!(
                "this URL drains several environments of {app}: remove them by id (see paas drains list)"
            )))
        }
    };
    let drain = view(state, row).await?;
    if !state.store.delete_drain(app, &drain.id).await? {
        return Err(DomainError::NotFound(format!("{app} has no drain {:?}", drain.id)));
    }
    tracing::info!(app, drain = %drain.id, url = %drain.url, user, "log drain removed");
    Ok(drain)
}
