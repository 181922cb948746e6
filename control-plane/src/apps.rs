//! Apps and their environments: creating and deleting them, and how they look to users (each
//! environment's state, and the processes that run).

use crate::access::Caller;
use crate::error::{DomainError, Result};
use crate::state::AppState;
use protocol::api::{App, AppDeleted, EnvSummary, Process};
use protocol::{AppName, EnvName};
use std::collections::HashMap;

/// An app as users see it: each environment with its releases and replica health.
pub async fn view(state: &AppState, name: &str) -> Result<App> {
    let (name, created_at) = state.store.get_app(name).await?;
    summary(state, name, created_at).await
}

async fn summary(state: &AppState, name: String, created_at: String) -> Result<App> {
    let mut envs = Vec::new();
    for e in state.store.list_envs(&name).await? {
        let instances = state.store.instances_for_env(&name, &e.name).await?;
        let healthy = instances
            .iter()
            .filter(|i| Some(i.release) == e.current_release && i.process == "web" && i.healthy)
            .count() as u32;
        let current = match e.current_release {
            Some(v) => Some(state.store.get_release(&name, &e.name, v).await?),
            None => None,
        };
        let replicas = match &current {
            Some(r) => e.replicas(&r.manifest, "web"),
            None => e.formation.get("web").copied().unwrap_or(1),
        };
        let last_deploy = match &current {
            Some(r) => {
                let done = state.store.last_deploy_event_at(&name, &e.name, r.version).await?;
                let took = done
                    .as_deref()
                    .and_then(crate::store::unix_seconds)
                    .zip(crate::store::unix_seconds(&r.created_at))
                    .map(|(end, start)| (end - start).max(0));
                Some(protocol::api::LastDeploy {
                    version: r.version,
                    by: r.created_by.clone(),
                    at: r.created_at.clone(),
                    took_secs: took,
                })
            }
            None => None,
        };
        let status = if e.target_release.is_some() {
            "deploying"
        } else if e.current_release.is_none() {
            "idle"
        } else if healthy < replicas {
            "degraded"
        } else {
            "running"
        };
        envs.push(EnvSummary {
            hostname: e.hostname(&state.config.base_domain),
            url: state.url_for(&e),
            current_release: e.current_release,
            target_release: e.target_release,
            status: status.to_string(),
            replicas,
            healthy_replicas: healthy,
            maintenance: e.maintenance,
            last_deploy,
            name: e.name,
        });
    }
    Ok(App { name, created_at, envs })
}

/// Turns maintenance mode of `app`'s environment `env` on or off; the ingress nodes serve the
/// maintenance page (or the app again) once they have the new route table.
pub async fn set_maintenance(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    enabled: bool,
) -> Result<protocol::api::MaintenanceMode> {
    AppName::new(app)?;
    EnvName::new(env)?;
    state.store.get_env(app, env).await?;
    state.store.set_maintenance(app, env, enabled).await?;
    tracing::info!(app, env, enabled, user, "maintenance mode changed");
    state.bump();
    Ok(protocol::api::MaintenanceMode { app: app.to_string(), env: env.to_string(), enabled })
}

/// The apps `caller` holds a role on.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<App>> {
    let mut out = Vec::new();
    for (name, created_at) in state.store.list_apps().await? {
        if !caller.can_see(&name) {
            continue;
        }
        out.push(summary(state, name, created_at).await?);
    }
    Ok(out)
}

pub async fn create(state: &AppState, user: &str, name: String) -> Result<App> {
    let name = AppName::new(name)?;
    // Its nodes would remove the new app's volumes and images along with the old one's.
    if state.upkeep.purging(name.as_str()) {
        return Err(DomainError::Conflict(format!(
            "a deleted app named {name} is still being purged; create it again once `paas apps delete` has returned"
        )));
    }
    state.store.create_app(name.as_str()).await?;
    tracing::info!(app = %name, user, "app created");
    // Nothing runs for it yet: no worker node's assignment changes, only route tables may.
    state.bump_routes();
    view(state, name.as_str()).await
}

/// Deletes an app with its environments; agents remove what ran for it. Its database volumes,
/// images and backups stay unless `purge` (volumes, networks, images on every ready node) and
/// `purge_backups` (every copy of its backups) say otherwise.
pub async fn delete(
    state: &AppState,
    user: &str,
    app: &str,
    purge: bool,
    purge_backups: bool,
) -> Result<AppDeleted> {
    if purge_backups && !purge {
        let why = "--purge-backups goes with --purge: backups are removed only when everything else is";
        return Err(DomainError::Invalid(why.into()));
    }
    // Read before the app goes: backups outlive their app's rows.
    let backups = if purge_backups { state.store.app_backups(app).await? } else { Vec::new() };
    state.store.delete_app(app).await?;
    let _ = std::fs::remove_dir_all(state.sources_dir().join(app));
    // Its pushed history too: a new app of the same name must not serve it to its viewers.
    let _ = std::fs::remove_dir_all(crate::http::git_repo_dir(state, app));
    crate::logs::forget(state, app, None);
    crate::metrics::forget_app(state, app).await;
    tracing::info!(app, user, purge, purge_backups, "app deleted");
    state.bump();
    let mut done = AppDeleted { deleted: app.to_string(), ..Default::default() };
    if purge {
        for (node, outcome) in crate::upkeep::purge(state, app).await? {
            let on =
                |names: Vec<String>| names.into_iter().map(|n| format!("{node}: {n}")).collect::<Vec<_>>();
            done.volumes.extend(on(outcome.volumes));
            done.networks.extend(on(outcome.networks));
            done.images.extend(on(outcome.images));
            done.left.extend(on(outcome.left));
        }
    }
    for b in backups {
        match state.backup_storage.delete(&b).await {
            Ok(()) => {
                state.store.delete_backup(&b.id).await?;
                done.backups.push(b.id);
            }
            Err(e) => done.left.push(format!("backup {}: {e:#}", b.id)),
        }
    }
    if purge_backups {
        match crate::backups::delete_app_archive(state, app).await {
            Ok(n) => tracing::info!(app, files = n, "deleted the app's WAL archive"),
            Err(e) => done.left.push(format!("WAL archive: {e:#}")),
        }
    }
    if purge {
        tracing::info!(app, user, volumes = ?done.volumes, networks = ?done.networks, images = ?done.images, backups = ?done.backups, left = ?done.left, "app purged");
    }
    Ok(done)
}

pub async fn create_env(state: &AppState, user: &str, app: &str, env: String) -> Result<App> {
    let env = EnvName::new(env)?;
    state.store.create_env(app, env.as_str()).await?;
    tracing::info!(app, env = %env, user, "environment created");
    state.bump_routes();
    view(state, app).await
}

/// Deletes an environment other than production (which goes only with its app).
/// Swaps the hostnames (and custom domains) of two environments at once: Elastic Beanstalk's
/// "swap environment URLs", the blue/green between production and staging. Swapping again
/// swaps back.
pub async fn swap_envs(state: &AppState, user: &str, app: &str, a: &str, b: &str) -> Result<App> {
    AppName::new(app)?;
    let (a, b) = (EnvName::new(a)?, EnvName::new(b)?);
    if a == b {
        return Err(DomainError::Invalid(format!("give two different environments to swap, not {a} twice")));
    }
    state.store.swap_hosts(app, a.as_str(), b.as_str()).await?;
    tracing::info!(app, a = %a, b = %b, user, "environment hostnames swapped");
    // One route table with both hosts moved: the ingress swaps it whole, before the answer.
    crate::assign::publish_routes(state).await?;
    view(state, app).await
}

pub async fn delete_env(state: &AppState, user: &str, app: &str, env: &str) -> Result<()> {
    if env == protocol::PRODUCTION {
        return Err(DomainError::Conflict("production cannot be deleted; delete the app instead".into()));
    }
    state.store.delete_env(app, env).await?;
    let _ = std::fs::remove_dir_all(state.sources_dir().join(app).join(env));
    crate::logs::forget(state, app, Some(env));
    tracing::info!(app, env, user, "environment deleted");
    state.bump();
    Ok(())
}

/// The containers placed for an environment, with their nodes' addresses and their limits.
pub async fn processes(state: &AppState, app: &str, env: &str) -> Result<Vec<Process>> {
    state.store.get_env(app, env).await?;
    let nodes: HashMap<String, String> =
        state.store.list_nodes().await?.into_iter().map(|n| (n.name, n.private_addr)).collect();
    let mut manifests = HashMap::new();
    let mut out = Vec::new();
    for i in state.store.instances_for_env(app, env).await? {
        if let std::collections::hash_map::Entry::Vacant(e) = manifests.entry(i.release) {
            e.insert(state.store.get_release(app, env, i.release).await?.manifest);
        }
        let mut p = i.to_process(nodes.get(&i.node).map(String::as_str));
        p.limits = manifests[&i.release].processes.get(&i.process).map(|p| p.limits);
        out.push(p);
    }
    Ok(out)
}
