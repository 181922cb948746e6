//! An environment's config vars: sealed at rest, masked unless revealed; a change rolls out as
//! a new release with the serving release's image and the new values.

use crate::access::Caller;
use crate::error::{DomainError, Result};
use crate::releases;
use crate::state::AppState;
use crate::store::NewRelease;
use protocol::api::{ConfigChange, ConfigChanged, ConfigVars};
use std::collections::BTreeMap;

/// The vars with secret values (`protocol::secrets`) masked unless `reveal`; others in clear.
/// The marks of keys set `--secret` are the platform's own entry: never listed.
fn masked(app: &str, env: &str, vars: BTreeMap<String, String>, reveal: bool) -> ConfigVars {
    let hidden = |k: &str, v: &str| !reveal && protocol::secrets::is_hidden(&vars, k, v);
    let listed = protocol::secrets::app_env(&vars)
        .map(|(k, v)| (k.clone(), if hidden(k, v) { "****".to_string() } else { v.clone() }))
        .collect();
    ConfigVars { app: app.to_string(), env: env.to_string(), vars: listed, revealed: reveal }
}

/// The config vars of `app`/`env`, their values masked unless `reveal`, which needs the
/// deployer role and goes into the audit log.
pub async fn vars(
    state: &AppState,
    caller: &Caller,
    app: &str,
    env: &str,
    reveal: bool,
) -> Result<ConfigVars> {
    let row = state.store.get_env(app, env).await?;
    let vars = state.secrets.open_map(&row.config)?;
    if reveal {
        crate::access::reveal(state, caller, app, env, "config.reveal").await?;
    }
    Ok(masked(app, env, vars, reveal))
}

/// Validates and applies a config change; when the environment runs a release, starts a new
/// release with it. The database commands use it to set `DATABASE_URL`.
pub async fn change(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    change: ConfigChange,
) -> Result<ConfigChanged> {
    if change.set.is_empty() && change.unset.is_empty() {
        let why = "nothing to change: give KEY=VALUE pairs to set or keys to unset";
        return Err(DomainError::Invalid(why.into()));
    }
    for key in change.set.keys().chain(&change.unset) {
        protocol::names::check_config_key(key).map_err(|e| DomainError::Invalid(e.to_string()))?;
    }
    if let Some((k, _)) = change.set.iter().find(|(_, v)| v.contains('\0')) {
        return Err(DomainError::Invalid(format!("the value of {k} contains a NUL byte")));
    }
    let _guard = state.config_lock.lock().await;
    let row = state.store.get_env(app, env).await?;
    if let Some(t) = row.target_release {
        let why = format!("a deploy of {app}/{env} is in progress (release v{t}); change config after it");
        return Err(DomainError::Conflict(why));
    }
    let mut vars = state.secrets.open_map(&row.config)?;
    if let Some(k) = change.unset.iter().find(|k| !vars.contains_key(*k) && !change.set.contains_key(*k)) {
        return Err(DomainError::Invalid(format!("{k} is not set in {app}/{env}")));
    }
    for k in &change.unset {
        vars.remove(k);
    }
    vars.extend(change.set.clone());
    let marks = if change.secret { change.set.keys().cloned().collect() } else { Vec::new() };
    protocol::secrets::mark(&mut vars, marks);
    let sealed = state.secrets.seal_map(&vars);

    let set = (!change.set.is_empty())
        .then(|| format!("Set {}", Vec::from_iter(change.set.keys().cloned()).join(", ")));
    let unset = (!change.unset.is_empty()).then(|| format!("Unset {}", change.unset.join(", ")));
    let what = Vec::from_iter(set.into_iter().chain(unset)).join("; ");
    let release = match row.current_release {
        Some(current) => {
            let base = state.store.get_release(app, env, current).await?;
            let (_, manifest_text) = state.store.release_inputs(app, env, current).await?;
            // The release holds its own snapshot: the environment's config follows once the
            // release exists, so a refused release leaves the config as it was.
            let release = releases::start(state, app, env, None, |build_node| NewRelease {
                source: base.source.clone(),
                created_by: user.to_string(),
                build_node,
                manifest: base.manifest.clone(),
                manifest_text,
                description: what.clone(),
                image_id: base.image_id.clone(),
                config: sealed.clone(),
                config_keys: protocol::secrets::app_keys(&vars),
            })
            .await?;
            Some(release)
        }
        None => None,
    };
    state.store.set_env_config(app, env, &sealed).await?;
    // Names only: values never reach the log.
    tracing::info!(app, env, user, change = %what, "config changed");
    Ok(ConfigChanged { vars: masked(app, env, vars, false), release })
}
