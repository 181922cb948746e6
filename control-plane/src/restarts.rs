//! `paas restart --process P`: the serving release's replicas of one process replaced one at a
//! time, without a new release. Each replica gets a new container beside the old one (same
//! release, same replica number, a new name); the old one is retired, and drains, only once the
//! new one is healthy and stayed so through the release's stability window. A replacement that
//! does not become healthy is removed and the old container keeps serving. The other processes
//! are not touched. The work runs in a task of its own, so a client that goes away does not
//! leave an environment with a replica too many.

use crate::assign;
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::{InstanceRow, NewEvent};
use protocol::api::ProcessRestart;
use std::time::Duration;
use tokio::time::Instant;

/// Restarts of a container while it is being waited for that make it a crash loop.
const CRASH_LOOP_RESTARTS: u32 = 3;

pub async fn restart_process(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    process: &str,
) -> Result<ProcessRestart> {
    protocol::names::check_process(process).map_err(|e| DomainError::Invalid(e.to_string()))?;
    let row = state.store.get_env(app, env).await?;
    if let Some(t) = row.target_release {
        let why = format!("a deploy of {app}/{env} is in progress (release v{t}); it replaces every replica");
        return Err(DomainError::Conflict(why));
    }
    let current = row.current_release.ok_or_else(|| {
        DomainError::Conflict(format!("{app}/{env} has no release serving yet; nothing to restart"))
    })?;
    let release = state.store.get_release(app, env, current).await?;
    crate::releases::has_process(&release, process)?;
    let mut old: Vec<InstanceRow> = state
        .store
        .instances_for_env(app, env)
        .await?
        .into_iter()
        .filter(|i| i.release == current && i.process == process)
        .collect();
    if old.is_empty() {
        let why = format!("{process} of {app}/{env} runs no replica; scale it up instead");
        return Err(DomainError::Conflict(why));
    }
    old.sort_by_key(|i| i.replica);
    // Two restarts at once would each add a replacement for the same replica.
    let Some(only) = state.busy(format!("restart:{app}/{env}")) else {
        return Err(DomainError::Conflict(format!(
            "a restart of {app}/{env} is in progress; try again after it"
        )));
    };
    let message = format!("Restart of {process} (v{current}) started by {user}");
    state.record_event(&NewEvent::new(app, env, "restart.started", &message).release(current)).await;
    let work = {
        let (state, env_row, release) = (state.clone(), row.clone(), release.clone());
        // The claim goes with the work, which outlives a client that hangs up.
        state.clone().spawn(async move {
            let _only = only;
            replace_all(&state, &env_row, &release, old).await
        })
    };
    let outcome =
        work.await.map_err(|e| DomainError::Internal(anyhow::anyhow!("the restart stopped: {e}")))?;
    let (what, severity, message) = match &outcome {
        Ok(_) => ("restart.live", "info", format!("Restart of {process} (v{current}) is done")),
        Err(e) => ("restart.failed", "warning", format!("Restart of {process} (v{current}) failed: {e:#}")),
    };
    state.record_event(&NewEvent::new(app, env, what, &message).severity(severity).release(current)).await;
    state.events_changed();
    let replaced = outcome.map_err(|e| DomainError::Conflict(format!("{e:#}")))?;
    Ok(ProcessRestart {
        app: app.into(),
        env: env.into(),
        process: process.into(),
        release: current,
        replaced,
    })
}

/// Replaces each of `old` in turn; returns the new containers' names.
async fn replace_all(
    state: &AppState,
    env: &crate::store::EnvRow,
    release: &protocol::api::Release,
    old: Vec<InstanceRow>,
) -> anyhow::Result<Vec<String>> {
    let mut replaced = Vec::new();
    for (n, o) in old.iter().enumerate() {
        // A deploy that started meanwhile replaces every replica anyway.
        if let Some(t) = state.store.get_env(&env.app, &env.name).await?.target_release {
            anyhow::bail!(
                "a deploy (release v{t}) started after {n} of {} replicas were restarted; it replaces the rest",
                old.len()
            );
        }
        let Some(fresh) = replace(state, env, release, o, replacement_name(env, o, 'r')).await? else {
            anyhow::bail!(
                "a deploy started after {n} of {} replicas were restarted; it replaces the rest",
                old.len()
            );
        };
        tracing::info!(app = %env.app, env = %env.name, release = o.release, old = %o.name, new = %fresh, "replica restarted");
        replaced.push(fresh);
    }
    Ok(replaced)
}

/// A replacement container's name: the replica's own, then `-<tag>` (`r` a restart, `m` a move
/// off a node) and a random suffix, so it never meets the container it replaces (which may
/// still exist on a node that is cut off).
pub fn replacement_name(env: &crate::store::EnvRow, old: &InstanceRow, tag: char) -> String {
    let base = env.docker_names().container(&old.process, old.release, old.replica);
    format!("{base}-{tag}{}", crate::tokens::random_hex(6))
}

/// Replaces one serving replica with a new container `name` (placed on a ready node, away from
/// the old one's where there is room): once the new one is healthy through the stability
/// window, the old one leaves the route table, every ingress confirms that, and only then is it
/// unassigned (its node drains and stops it). A replacement that never becomes healthy is
/// removed and the old container keeps serving. `None` when a deploy of the environment
/// started first (it replaces every replica itself).
pub async fn replace(
    state: &AppState,
    env: &crate::store::EnvRow,
    release: &protocol::api::Release,
    old: &InstanceRow,
    name: String,
) -> anyhow::Result<Option<String>> {
    let settings = &release.manifest.deploy;
    let mut fresh = assign::place_replacement(state, env, old).await?;
    fresh.name = name;
    if !state.store.add_instance_unless_deploying(&fresh).await? {
        return Ok(None);
    }
    state.bump();
    let healthy = wait_healthy(state, &fresh.name, settings.timeout(), settings.stability_window()).await;
    if let Err(e) = healthy {
        state.store.delete_instance(&fresh.name).await?;
        state.bump();
        anyhow::bail!("{}.{}: {e:#}; the old container keeps serving", old.process, old.replica);
    }
    // An ingress on another node may be sending requests to the old container: it is stopped
    // only once every ingress routes without it.
    state.store.unroute_instance(&old.name).await?;
    assign::publish_routes(state).await?;
    state.store.delete_instance(&old.name).await?;
    state.bump();
    Ok(Some(fresh.name))
}

/// Ends process restarts the last run left midway: where a replica of a serving release has
/// two containers (the old one and its replacement), one stays, a healthy one if there is one:
/// both run the same release, so either serves as the other would.
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
    for env in state.store.all_envs().await? {
        let (Some(current), None) = (env.current_release, env.target_release) else { continue };
        let mut seen = std::collections::HashSet::new();
        let mut mine: Vec<InstanceRow> = state.store.instances_for_env(&env.app, &env.name).await?;
        mine.retain(|i| i.release == current);
        // Healthy ones first, so they are the ones kept.
        mine.sort_by_key(|i| !(i.healthy && i.state == "running"));
        for i in mine {
            if !seen.insert((i.process.clone(), i.replica)) {
                tracing::warn!(app = %env.app, env = %env.name, release = current, removed = %i.name, "ending a process restart the last run left midway");
                state.store.delete_instance(&i.name).await?;
            }
        }
    }
    state.bump();
    Ok(())
}

/// Waits until the container is healthy and then stays so, running, for `window`.
async fn wait_healthy(
    state: &AppState,
    name: &str,
    timeout: Duration,
    window: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut healthy_since: Option<Instant> = None;
    let mut rx = state.subscribe();
    loop {
        let Some(i) = state.store.get_instance(name).await? else {
            anyhow::bail!("its new container was removed (a scale, or the environment deleted)");
        };
        if i.restarts >= CRASH_LOOP_RESTARTS {
            anyhow::bail!("the new container is crash-looping ({} restarts)", i.restarts);
        }
        let up = i.healthy && i.state == "running";
        match (up, healthy_since) {
            (true, Some(since)) if since.elapsed() >= window => return Ok(()),
            (true, None) => healthy_since = Some(Instant::now()),
            (false, Some(_)) => healthy_since = None,
            _ => {}
        }
        if Instant::now() >= deadline && healthy_since.is_none() {
            anyhow::bail!("the new container did not pass its health check within {}s", timeout.as_secs());
        }
        let wake = match healthy_since {
            Some(since) => since + window,
            None => deadline,
        };
        let _ =
            tokio::time::timeout_at(wake.min(Instant::now() + Duration::from_secs(1)), rx.changed()).await;
    }
}
