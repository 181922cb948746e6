//! Deploy orchestration: one task per release walks it from build to serving (or to failed),
//! recording every stage as a deploy event the CLI streams.

use crate::assign;
use crate::state::AppState;
use protocol::api::{Release, ReleaseStatus};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Longest a build may run before the deploy gives up on it.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the switch waits for ingress nodes to apply the new route table.
const ROUTE_PROPAGATION: Duration = Duration::from_secs(10);
/// A new replica that restarted this often while the deploy waits is crash-looping.
const CRASH_LOOP_RESTARTS: u32 = 3;

/// Marks deploys a previous run left unfinished as failed, and unassigns their containers.
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
    for r in state.store.unfinished_releases().await? {
        // Switched already, only the confirmation was pending: it serves.
        if state.store.get_env(&r.app, &r.env).await?.current_release == Some(r.version) {
            state.store.set_release_status(&r.app, &r.env, r.version, ReleaseStatus::Active, None).await?;
            continue;
        }
        let why = "the control plane restarted during this deploy; deploy again";
        tracing::warn!(app = %r.app, env = %r.env, release = r.version, "{why}");
        state.store.abort_rollout(&r.app, &r.env, r.version, why).await?;
    }
    Ok(())
}

/// Drives a freshly created release to the end; spawned by the deploy handler.
pub fn spawn(state: AppState, release: Release) {
    let span =
        tracing::info_span!("deploy", app = %release.app, env = %release.env, release = release.version);
    let task = async move {
        let (app, env, version) = (release.app.clone(), release.env.clone(), release.version);
        match run(&state, &release).await {
            Ok(()) => tracing::info!(app = %app, env = %env, release = version, "release is live"),
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(app = %app, env = %env, release = version, error = %msg, "deploy failed");
                if let Err(db) = state.store.abort_rollout(&app, &env, version, &msg).await {
                    tracing::error!(app = %app, env = %env, release = version, error = %db, "recording the failed deploy failed");
                }
                state.bump();
                state.deploy_event(&app, &env, version, "error", &[msg]).await;
            }
        }
        state.events_changed();
    };
    tokio::spawn(task.instrument(span));
}

async fn run(state: &AppState, release: &Release) -> anyhow::Result<()> {
    let (app, env, version) = (release.app.as_str(), release.env.as_str(), release.version);
    let stage = |text: String| async move { state.deploy_event(app, env, version, "stage", &[text]).await };

    let image = wait_for_image(state, app, env, version).await?;
    stage(format!("Image {} ready", short_id(&image))).await;

    let env_row = state.store.get_env(app, env).await?;
    let instances = assign::place(state, app, env, "web", version, env_row.replicas).await?;
    state.store.start_rollout(app, env, version, &instances).await?;
    state.bump();
    stage(format!("Starting {} replica(s) of release v{version}", instances.len())).await;

    wait_healthy(state, app, env, version, env_row.replicas).await?;
    stage(format!("All replicas of v{version} are healthy; switching traffic")).await;

    state.store.finish_rollout(app, env, version).await?;
    state.bump();
    // Report the release live only once every ingress serves it, so the first request after
    // `paas deploy` returns already reaches the new release.
    let switch = state.index();
    let ingress: Vec<String> =
        assign::ready_nodes(state).await?.into_iter().filter(|n| n.ingress).map(|n| n.name).collect();
    tracing::info!(app, env, release = version, index = switch, nodes = ?ingress, "waiting for ingress nodes to apply the switch");
    let late = state.wait_applied(&ingress, switch, ROUTE_PROPAGATION).await;
    if !late.is_empty() {
        tracing::warn!(nodes = ?late, "ingress nodes did not confirm the new routes in time");
        stage(format!("Ingress node(s) {} have not confirmed the switch yet", late.join(", "))).await;
    }
    state.store.set_release_status(app, env, version, ReleaseStatus::Active, None).await?;
    state.bump();
    Ok(())
}

fn short_id(image: &str) -> &str {
    let id = image.strip_prefix("sha256:").unwrap_or(image);
    &id[..id.len().min(12)]
}

/// Waits for the node's build result and returns the image id.
async fn wait_for_image(state: &AppState, app: &str, env: &str, version: u32) -> anyhow::Result<String> {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let mut rx = state.subscribe();
    loop {
        let r = state.store.get_release(app, env, version).await?;
        if let Some(err) = r.error {
            anyhow::bail!("{err}");
        }
        if let Some(image) = r.image_id {
            return Ok(image);
        }
        if r.status != ReleaseStatus::Building {
            anyhow::bail!("the release was cancelled while building");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "the build did not finish within {} minutes",
            BUILD_TIMEOUT.as_secs() / 60
        );
        let _ = tokio::time::timeout(left.min(Duration::from_secs(5)), rx.changed()).await;
    }
}

/// Waits until every new replica is healthy; fails on timeout or a crash loop, with the
/// replicas' last log lines so the user sees why.
async fn wait_healthy(
    state: &AppState,
    app: &str,
    env: &str,
    version: u32,
    replicas: u32,
) -> anyhow::Result<()> {
    let timeout = state.config.deploy_timeout;
    let deadline = Instant::now() + timeout;
    let mut rx = state.subscribe();
    loop {
        let mine: Vec<_> = state
            .store
            .instances_for_env(app, env)
            .await?
            .into_iter()
            .filter(|i| i.release == version)
            .collect();
        anyhow::ensure!(!mine.is_empty(), "the release's containers were removed while it was deploying");
        if mine.len() as u32 >= replicas && mine.iter().all(|i| i.healthy) {
            return Ok(());
        }
        let crashed = mine.iter().find(|i| i.restarts >= CRASH_LOOP_RESTARTS);
        let expired = Instant::now() >= deadline;
        if crashed.is_some() || expired {
            let worst =
                crashed.or_else(|| mine.iter().find(|i| !i.healthy)).expect("some replica is unhealthy");
            let head = if let Some(c) = crashed {
                format!(
                    "release v{version} is crash-looping: replica {} exited and was restarted {} times",
                    c.replica, c.restarts
                )
            } else {
                format!(
                    "release v{version} did not become healthy within {}s: replica {} is {} and its port does not accept connections",
                    timeout.as_secs(),
                    worst.replica,
                    worst.state
                )
            };
            let tail = if worst.log_tail.is_empty() {
                "(the container printed nothing)".to_string()
            } else {
                worst.log_tail.join("\n")
            };
            anyhow::bail!("{head}; the old release keeps serving. Last log lines:\n{tail}");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left.min(Duration::from_secs(2)), rx.changed()).await;
    }
}
