//! Leadership among control planes sharing a PostgreSQL database (`--database-url`): the leader
//! recovers what the last one left unfinished, runs the loops that must run once and serves the
//! API and the agents; the others stand by, answer 503 naming the leader, and campaign every
//! second. A leader whose lock connection stops answering exits, so nothing it still runs can
//! outlive its term (its writes are fenced too: see `store/leader.rs`); its supervisor starts it
//! again as a standby. On SQLite the one server leads from its start.

use crate::error::DomainError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Files under the data directory every control plane sharing a database must hold alike: the
/// agents' CA, the key sealing config, the apps' local CA, the bootstrap and scrape tokens.
pub(crate) const SHARED: [&str; 7] = [
    "ca.key",
    "ca.crt",
    "secret.key",
    "ingress-ca.key",
    "ingress-ca.crt",
    "admin-token",
    "metrics/scrape-token",
];

/// Copies into `dir` the shared files the database holds (a second server starts with the
/// first one's keys). Run under [`crate::store::Store::start_lock`], before the keys load.
pub async fn pull_shared(store: &crate::store::Store, dir: &std::path::Path) -> anyhow::Result<()> {
    for name in SHARED {
        let Some(content) = store.shared_file(name).await? else { continue };
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            if let Some(parent) = path.parent() {
                protocol::files::private_dir(parent)?;
            }
            protocol::files::write_private(&path, &content)?;
            tracing::info!(file = name, "took the shared file from the database");
        }
    }
    Ok(())
}

/// Records in the database the shared files this server made that it lacks.
pub async fn push_shared(store: &crate::store::Store, dir: &std::path::Path) -> anyhow::Result<()> {
    for name in SHARED {
        if let Ok(content) = std::fs::read(dir.join(name)) {
            store.put_shared_file(name, &content).await?;
        }
    }
    Ok(())
}

/// How long a starting server tries for the lead before it stands by.
const FIRST_WAIT: Duration = Duration::from_secs(5);

/// How often a standby campaigns and a leader checks its lock.
const TICK: Duration = Duration::from_secs(1);

/// This server's name in `leadership` and the platform events: host and API address.
fn holder(state: &AppState) -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    let api = state.api_url();
    let api = api.rsplit("//").next().unwrap_or_default();
    if host.is_empty() {
        api.to_string()
    } else {
        format!("{host}/{api}")
    }
}

/// Campaigns before the server serves (so recovery runs before the first request), for up to
/// [`FIRST_WAIT`]: a server restarted in place finds its previous run still stopping, which lets
/// the lead go as its shutdown begins. Then leads, or stands by in the background, until
/// `shutdown`. A lead lost cancels `shutdown`.
pub async fn start(state: &AppState, shutdown: CancellationToken) -> anyhow::Result<()> {
    let me = holder(state);
    let deadline = tokio::time::Instant::now() + FIRST_WAIT;
    let first = loop {
        let lead = state.store.campaign(&me, &state.api_url()).await?;
        if lead.is_some() || tokio::time::Instant::now() >= deadline {
            break lead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match first {
        Some(lead) => lead_with(state, lead, shutdown).await?,
        None => {
            tracing::info!(holder = %me, "another control plane leads: standing by");
            let state2 = state.clone();
            state.spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(TICK) => {}
                    }
                    match state2.store.campaign(&me, &state2.api_url()).await {
                        Ok(Some(lead)) => {
                            if let Err(e) = lead_with(&state2, lead, shutdown.clone()).await {
                                tracing::error!(error = %format!("{e:#}"), "taking over as leader failed; stopping");
                                shutdown.cancel();
                            }
                            return;
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "campaigning for the lead failed; trying again"),
                    }
                }
            });
        }
    }
    Ok(())
}

/// Takes the lead: ends what the last leader left unfinished, starts the leader's loops on a
/// store fenced to this term, then serves; watches the lock until it is lost or shutdown.
async fn lead_with(
    state: &AppState,
    lead: crate::store::Lead,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let term = lead.term;
    let led = state.with_store(state.store.fenced(term));
    // A standby's silence from the nodes was its own: counted from its start, every node
    // would be declared lost the moment it leads.
    led.liveness.start_leading();
    crate::recover(&led).await?;
    crate::spawn_leader_loops(&led);
    state.set_leading(true);
    tracing::info!(term, "this control plane leads");
    state.spawn(hold(state.clone(), lead, shutdown));
    Ok(())
}

/// Checks the lead every [`TICK`]; a lead lost stops this server (`shutdown`).
async fn hold(state: AppState, mut lead: crate::store::Lead, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        if !lead.holds().await {
            state.depose();
            tracing::error!(term = lead.term, "lost the lead (the database stopped answering); stopping, so another control plane carries on");
            shutdown.cancel();
            return;
        }
    }
}

/// Answers 503, naming the leader, while this control plane stands by; a browser asking for a
/// console page is sent to the leader's.
pub async fn standby_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.leading() {
        return next.run(req).await;
    }
    let row = state.store.leader().await.ok().flatten();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let console = req.method() == axum::http::Method::GET
        && !["/api/", "/agent/", "/git/", "/metrics"].iter().any(|p| path.starts_with(p));
    if let (true, Some(l)) = (console, &row) {
        let to = format!("{}{path}", l.api_url);
        if let Ok(location) = axum::http::HeaderValue::from_str(&to) {
            return (axum::http::StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, location)])
                .into_response();
        }
    }
    let leader = match row {
        Some(l) => format!(": the leader (term {}) serves at {}", l.term, l.api_url),
        None => String::new(),
    };
    let mut resp = crate::http::error::ApiError::from(DomainError::Unavailable(format!(
        "this control plane is on standby{leader}"
    )))
    .into_response();
    resp.headers_mut().insert(protocol::client::STANDBY_HEADER, axum::http::HeaderValue::from_static("1"));
    resp
}
