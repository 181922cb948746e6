//! Making releases: a deploy of an uploaded source or an image, a rollback, a promotion (and,
//! from `config`, a config change) each make a new release and start it the one way
//! ([`start`]); `scale` changes the replicas of the serving release in place.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::NewRelease;
use crate::{assign, deploy, source};
use protocol::api::{DeployEvents, Formation, Release, ReleaseStatus};
use protocol::manifest::{self, Manifest};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Starts a deploy: picks the node that builds (or resolves) the image, records the release
/// made by `new` from that node (a conflict while another release of the environment is
/// unfinished), moves an uploaded source `bundle` to where that node fetches it, and hands the
/// release to its deploy task.
pub async fn start(
    state: &AppState,
    app: &str,
    env: &str,
    bundle: Option<&Path>,
    new: impl FnOnce(String) -> NewRelease,
) -> Result<Release> {
    let new = new(assign::build_node(state).await?);
    let release = state.store.create_release(app, env, &new).await?;
    if let Some(bundle) = bundle {
        let to = bundle_path(state, app, env, release.version);
        tokio::fs::rename(bundle, to).await.map_err(anyhow::Error::from)?;
    }
    tracing::info!(app, env, release = release.version, user = %new.created_by, what = %new.description, "deploy started");
    state.deploy_event(app, env, release.version, "stage", std::slice::from_ref(&new.description)).await;
    deploy::started(state, &release).await;
    // Only the build node's assignment shows a new release (its build) before it is placed.
    state.bump_nodes(std::slice::from_ref(&new.build_node), &[(app.to_string(), env.to_string())]);
    deploy::spawn(state.clone(), release.clone());
    Ok(release)
}

/// How long the build node's fetch waits for a source bundle still being moved into place.
const BUNDLE_WAIT: Duration = Duration::from_secs(10);

/// Release `version`'s source bundle, for its build node. The release is recorded (and may
/// reach the node with any other change) a moment before [`start`] moves its bundle into
/// place, so a fetch in that moment waits for it rather than failing the deploy.
pub async fn source_bundle(state: &AppState, app: &str, env: &str, version: u32) -> Result<tokio::fs::File> {
    let path = bundle_path(state, app, env, version);
    let deadline = tokio::time::Instant::now() + BUNDLE_WAIT;
    loop {
        match tokio::fs::File::open(&path).await {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                return Err(DomainError::NotFound(format!("no source bundle for {app}/{env} v{version}")));
            }
        }
    }
}

/// Where the build node fetches release `version`'s source from.
pub fn bundle_path(state: &AppState, app: &str, env: &str, version: u32) -> PathBuf {
    state.sources_dir().join(app).join(env).join(format!("{version}.tar.gz"))
}

/// Deploys an image by reference, with the manifest given as `paas.toml` text (or none).
pub async fn deploy_image(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    image: &str,
    toml: Option<String>,
) -> Result<Release> {
    let image = image.trim();
    if image.is_empty() || image.chars().any(char::is_whitespace) || image == "build" {
        return Err(DomainError::Invalid(format!("{image:?} is not an image reference")));
    }
    let text = toml.unwrap_or_default();
    let manifest = manifest::parse(&text, env).map_err(|e| DomainError::Invalid(e.to_string()))?;
    deploy(state, user, app, env, image, (manifest, text), None).await
}

/// Deploys a source bundle saved at `bundle` (a gzipped tar), read for its `paas.toml` and
/// built on the build node. The bundle is moved where the build node reads it, or removed.
pub async fn deploy_upload(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    bundle: &Path,
) -> Result<Release> {
    let deployed = async {
        let (path, env_name) = (bundle.to_path_buf(), env.to_string());
        let parsed = tokio::task::spawn_blocking(move || source::manifest_from_bundle(&path, &env_name))
            .await
            .map_err(anyhow::Error::from)?;
        let parsed = parsed.map_err(|e| DomainError::Invalid(e.to_string()))?;
        deploy(state, user, app, env, "build", parsed, Some(bundle)).await
    }
    .await;
    if deployed.is_err() {
        let _ = tokio::fs::remove_file(bundle).await;
    }
    deployed
}

/// A new release of `source` (`build` or an image reference) with the environment's config.
async fn deploy(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    source: &str,
    (manifest, manifest_text): (Manifest, String),
    bundle: Option<&Path>,
) -> Result<Release> {
    let (config, config_keys) = state.config_snapshot(&state.store.get_env(app, env).await?)?;
    let description = match source {
        "build" => "Deploy of a source upload".to_string(),
        image => format!("Deploy of image {image}"),
    };
    start(state, app, env, bundle, |build_node| NewRelease {
        source: source.to_string(),
        created_by: user.to_string(),
        build_node,
        manifest,
        manifest_text,
        description,
        image_id: None,
        config,
        config_keys,
    })
    .await
}

/// A new release with an earlier release's image, manifest and config snapshot (by default the
/// one that served before the current one), deployed blue/green like any other; no build.
pub async fn rollback(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    to: Option<u32>,
) -> Result<Release> {
    let row = state.store.get_env(app, env).await?;
    let current = row.current_release.ok_or_else(|| {
        DomainError::Conflict(format!("{app}/{env} has no release serving yet; nothing to roll back"))
    })?;
    let releases = state.store.list_releases(app, env).await?;
    let target = match to {
        Some(v) => releases
            .iter()
            .find(|r| r.version == v)
            .ok_or_else(|| DomainError::NotFound(format!("{app}/{env} has no release v{v}")))?,
        None => releases
            .iter()
            .find(|r| r.version < current && r.status == ReleaseStatus::Superseded)
            .ok_or_else(|| {
                DomainError::Conflict(format!("{app}/{env} has no earlier release to roll back to"))
            })?,
    };
    if target.version == current {
        return Err(DomainError::Conflict(format!("v{current} is already serving {app}/{env}")));
    }
    let Some(image) = target.image_id.clone().filter(|_| target.status != ReleaseStatus::Failed) else {
        let why = format!("v{} never served; pick a release that did", target.version);
        return Err(DomainError::Conflict(why));
    };
    let (config, manifest_text) = state.store.release_inputs(app, env, target.version).await?;
    start(state, app, env, None, |build_node| NewRelease {
        source: target.source.clone(),
        created_by: user.to_string(),
        build_node,
        manifest: target.manifest.clone(),
        manifest_text,
        description: format!("Rollback to v{}", target.version),
        image_id: Some(image),
        config,
        config_keys: target.config_keys.clone(),
    })
    .await
}

/// A restart: the serving release again, as a new release of the same image, config and
/// manifest, rolled out like any deploy (new replicas start beside the old ones and take over
/// only once healthy), so a restart never takes the app down.
pub async fn restart(state: &AppState, user: &str, app: &str, env: &str) -> Result<Release> {
    restart_described(state, user, app, env, |v| format!("Restart of v{v}")).await
}

/// [`restart`] with its own description of the release, from the serving version.
pub async fn restart_described(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    describe: impl FnOnce(u32) -> String,
) -> Result<Release> {
    let row = state.store.get_env(app, env).await?;
    let current = row.current_release.ok_or_else(|| {
        DomainError::Conflict(format!("{app}/{env} has no release serving yet; nothing to restart"))
    })?;
    let serving = state.store.get_release(app, env, current).await?;
    let image = serving.image_id.clone().ok_or_else(|| {
        DomainError::Conflict(format!("v{current} of {app}/{env} has no image; deploy it again instead"))
    })?;
    let (config, manifest_text) = state.store.release_inputs(app, env, current).await?;
    start(state, app, env, None, |build_node| NewRelease {
        source: serving.source.clone(),
        created_by: user.to_string(),
        build_node,
        manifest: serving.manifest.clone(),
        manifest_text,
        description: describe(current),
        image_id: Some(image),
        config,
        config_keys: serving.config_keys.clone(),
    })
    .await
}

/// Build once, promote everywhere: the image serving in `from` runs in `to`, with `to`'s own
/// config and `to`'s overrides of the same paas.toml.
pub async fn promote(state: &AppState, user: &str, app: &str, from: &str, to: &str) -> Result<Release> {
    if from == to {
        return Err(DomainError::Invalid("promote from one environment to another, not to itself".into()));
    }
    let from_row = state.store.get_env(app, from).await?;
    let to_row = state.store.get_env(app, to).await?;
    let current = from_row
        .current_release
        .ok_or_else(|| DomainError::Conflict(format!("{app}/{from} runs no release to promote")))?;
    let source = state.store.get_release(app, from, current).await?;
    let image = match (&source.image_id, source.status) {
        (Some(id), ReleaseStatus::Active) => id.clone(),
        _ => return Err(DomainError::Conflict(format!("{app}/{from} v{current} is not serving"))),
    };
    let (_, manifest_text) = state.store.release_inputs(app, from, current).await?;
    let manifest = manifest::parse(&manifest_text, to).map_err(|e| DomainError::Invalid(e.to_string()))?;
    let (config, config_keys) = state.config_snapshot(&to_row)?;
    start(state, app, to, None, |build_node| NewRelease {
        source: source.source.clone(),
        created_by: user.to_string(),
        build_node,
        manifest,
        manifest_text,
        description: format!("Promotion of {from} v{current}"),
        image_id: Some(image),
        config,
        config_keys,
    })
    .await
}

/// Sets a process's replica count and adds or unassigns replicas of the serving release
/// without touching the healthy ones.
pub async fn scale(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    process: &str,
    replicas: u32,
) -> Result<Formation> {
    protocol::names::check_process(process).map_err(|e| DomainError::Invalid(e.to_string()))?;
    if replicas > 100 {
        return Err(DomainError::Invalid("at most 100 replicas per process".into()));
    }
    let row = state.store.get_env(app, env).await?;
    if let Some(t) = row.target_release {
        let why = format!("a deploy of {app}/{env} is in progress (release v{t}); scale after it");
        return Err(DomainError::Conflict(why));
    }
    let mut added = Vec::new();
    if let Some(current) = row.current_release {
        let release = state.store.get_release(app, env, current).await?;
        has_process(&release, process)?;
        let running = state
            .store
            .instances_for_env(app, env)
            .await?
            .iter()
            .filter(|i| i.release == current && i.process == process)
            .map(|i| i.replica)
            .max()
            .unwrap_or(0);
        if replicas > running {
            added = assign::place(state, &row, process, current, running + 1..=replicas).await?;
        }
    }
    state.store.scale(app, env, process, replicas, &added).await?;
    tracing::info!(app, env, process, replicas, user, "scaled");
    state.bump();
    let processes = state.store.get_env(app, env).await?.formation;
    Ok(Formation { app: app.to_string(), env: env.to_string(), processes })
}

/// Refuses a process the release does not run, naming the ones it does.
pub fn has_process(release: &Release, process: &str) -> Result<()> {
    if release.manifest.processes.contains_key(process) {
        return Ok(());
    }
    let known: Vec<&str> = release.manifest.processes.keys().map(String::as_str).collect();
    Err(DomainError::Invalid(format!(
        "release v{} has no process {process:?} (it has: {})",
        release.version,
        known.join(", ")
    )))
}

/// A release's deploy progress after event `after`; waits up to `wait` when there is nothing
/// new and the release is unfinished.
pub async fn events(
    state: &AppState,
    app: &str,
    env: &str,
    version: u32,
    after: u64,
    wait: Duration,
) -> Result<DeployEvents> {
    let mut rx = state.subscribe_events();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let release = state.store.get_release(app, env, version).await?;
        let events = state.store.events_after(app, env, version, after).await?;
        let done = release.status.is_finished();
        if !events.is_empty() || done || tokio::time::Instant::now() >= deadline {
            let next = events.last().map(|e| e.seq).unwrap_or(after);
            let url = state.url_for(&state.store.get_env(app, env).await?);
            return Ok(DeployEvents { events, next, release, url });
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::api::ConfigChange;
    use std::collections::BTreeMap;

    /// Refusals of the release operations, each of the kind that says what to do about it;
    /// none of them leaves anything behind.
    #[tokio::test]
    async fn refusals_say_what_kind_they_are() {
        let (state, dir) = AppState::for_tests().await;
        let nothing = rollback(&state, "u", "shop", "production", None).await;
        assert!(matches!(nothing, Err(DomainError::Conflict(_))), "{nothing:?}");
        let huge = scale(&state, "u", "shop", "production", "web", 101).await;
        assert!(matches!(huge, Err(DomainError::Invalid(_))), "{huge:?}");
        let to_itself = promote(&state, "u", "shop", "production", "production").await;
        assert!(matches!(to_itself, Err(DomainError::Invalid(_))), "{to_itself:?}");
        let gone = deploy_image(&state, "u", "shop", "nope", "nginx", None).await;
        assert!(matches!(gone, Err(DomainError::NotFound(_))), "{gone:?}");
        // No agent has reported: nothing to build on.
        let no_node = deploy_image(&state, "u", "shop", "production", "nginx", None).await;
        assert!(matches!(no_node, Err(DomainError::Unavailable(_))), "{no_node:?}");
        assert!(state.store.list_releases("shop", "production").await.unwrap().is_empty());
        let empty = ConfigChange { set: BTreeMap::new(), unset: Vec::new(), secret: false };
        let empty = crate::config::change(&state, "u", "shop", "production", empty).await;
        assert!(matches!(empty, Err(DomainError::Invalid(_))), "{empty:?}");
        // Without a serving release a config change is only stored.
        let set = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let changed = crate::config::change(
            &state,
            "u",
            "shop",
            "production",
            ConfigChange { set, unset: Vec::new(), secret: false },
        );
        assert!(changed.await.unwrap().release.is_none());
        let vars = crate::config::vars(
            &state,
            &crate::access::Caller::admin_for_tests(),
            "shop",
            "production",
            true,
        )
        .await
        .unwrap();
        assert_eq!(vars.vars["A"], "1");
        let _ = std::fs::remove_dir_all(dir);
    }
}
