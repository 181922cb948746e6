//! The console's changes: each form posts here, is checked for the session's CSRF value, calls
//! the API with the visitor's session (which checks the role), and goes back to the page with
//! the API's sentence. Nothing here decides who may do what; the server does.

use super::app::status_of;
use super::{answered, back, env_path, error_page, Signed};
use axum::extract::{Form, Path};
use axum::response::{IntoResponse, Redirect, Response};
use protocol::api::{ConfigChange, DatabaseSettings, StartRestore};
use protocol::domains::AddDomain;
use serde::Deserialize;

/// The path parameters of an environment's routes.
type EnvPath = Path<(String, String)>;

#[derive(Deserialize)]
pub(crate) struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub(crate) async fn create_app(me: Signed, Form(f): Form<NameForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let name = f.name.trim();
    match me.client.create_app(name).await {
        Ok(app) => {
            let env = app.envs.first().map_or("production", |e| e.name.as_str());
            back(me.config(), &env_path(&app.name, env), true, &format!("Created app {}.", app.name))
        }
        Err(e) => back(me.config(), "/", false, &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct DeployForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    image: String,
}

/// Starts a deploy of an image and opens its output.
pub(crate) async fn deploy(me: Signed, Path((app, env)): EnvPath, Form(f): Form<DeployForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let image = f.image.trim();
    if image.is_empty() {
        return back(
            me.config(),
            &env_path(&app, &env),
            false,
            "Name the image to deploy, like registry/app:tag.",
        );
    }
    match me.client.deploy_image(&app, &env, image, None).await {
        Ok(r) => Redirect::to(&format!("{}/releases/{}", env_path(&app, &env), r.version)).into_response(),
        Err(e) => back(me.config(), &env_path(&app, &env), false, &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct RollbackForm {
    #[serde(default)]
    csrf: String,
    to: Option<u32>,
}

pub(crate) async fn rollback(me: Signed, Path((app, env)): EnvPath, Form(f): Form<RollbackForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    match me.client.rollback(&app, &env, f.to).await {
        Ok(r) => Redirect::to(&format!("{}/releases/{}", env_path(&app, &env), r.version)).into_response(),
        Err(e) => back(me.config(), &env_path(&app, &env), false, &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct PromoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
}

pub(crate) async fn promote(me: Signed, Path((app, env)): EnvPath, Form(f): Form<PromoteForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    match me.client.promote(&app, &env, &f.to).await {
        Ok(r) => Redirect::to(&format!("{}/releases/{}", env_path(&app, &f.to), r.version)).into_response(),
        Err(e) => back(me.config(), &env_path(&app, &env), false, &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct ScaleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    process: String,
    #[serde(default)]
    replicas: String,
}

pub(crate) async fn scale(me: Signed, Path((app, env)): EnvPath, Form(f): Form<ScaleForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let to = env_path(&app, &env);
    let Ok(replicas) = f.replicas.trim().parse::<u32>() else {
        return back(me.config(), &to, false, &format!("{:?} is not a number of replicas.", f.replicas));
    };
    let result = me.client.scale(&app, &env, &f.process, replicas).await;
    answered(me.config(), &to, result, |_| format!("Scaled {} to {replicas}.", f.process))
}

#[derive(Deserialize)]
pub(crate) struct ConfigForm {
    #[serde(default)]
    csrf: String,
    /// Set `key` to `value`...
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    /// ... as a secret (a checkbox: present when ticked).
    secret: Option<String>,
    /// ... or unset this key.
    #[serde(default)]
    unset: String,
}

/// Sets or unsets one config var (a new release when the environment runs one).
pub(crate) async fn config(me: Signed, Path((app, env)): EnvPath, Form(f): Form<ConfigForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let mut change = ConfigChange { secret: f.secret.is_some(), ..Default::default() };
    let done = if !f.unset.trim().is_empty() {
        change.unset.push(f.unset.trim().to_string());
        format!("Unset {}.", f.unset.trim())
    } else if !f.key.trim().is_empty() {
        change.set.insert(f.key.trim().to_string(), f.value);
        format!("Set {}.", f.key.trim())
    } else {
        return back(me.config(), &env_path(&app, &env), false, "Give the config var a name.");
    };
    let result = me.client.change_config(&app, &env, &change).await;
    answered(me.config(), &format!("{}#config", env_path(&app, &env)), result, |changed| {
        match changed.release {
            Some(r) => format!("{done} Release v{} is rolling out.", r.version),
            None => done,
        }
    })
}

#[derive(Deserialize)]
pub(crate) struct MaintenanceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    enabled: String,
}

pub(crate) async fn maintenance(
    me: Signed,
    Path((app, env)): EnvPath,
    Form(f): Form<MaintenanceForm>,
) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let on = f.enabled == "on";
    let result = me.client.set_maintenance(&app, &env, on).await;
    answered(me.config(), &env_path(&app, &env), result, |_| {
        if on { "Maintenance mode is on: visitors get the 503 page." } else { "Maintenance mode is off." }
            .to_string()
    })
}

pub(crate) async fn db_backup(
    me: Signed,
    Path((app, env)): EnvPath,
    Form(f): Form<super::session::CsrfForm>,
) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let result = me.client.db_backup(&app, &env, false).await;
    answered(me.config(), &format!("{}#database", env_path(&app, &env)), result, |b| {
        format!("Backup {} is {}; its restore is proven next.", b.id, b.status)
    })
}

#[derive(Deserialize)]
pub(crate) struct BackupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    backup: String,
    /// `new` (restore into a new database) or `in_place`.
    #[serde(default)]
    mode: String,
    /// For `in_place`: the app's name, typed.
    #[serde(default)]
    confirm: String,
}

pub(crate) async fn db_verify(me: Signed, Path((app, env)): EnvPath, Form(f): Form<BackupForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let result = me.client.db_verify(&app, &env, &f.backup).await;
    answered(me.config(), &format!("{}#database", env_path(&app, &env)), result, |b| {
        format!("Verifying backup {}: {}.", b.id, b.verification)
    })
}

pub(crate) async fn db_restore(me: Signed, Path((app, env)): EnvPath, Form(f): Form<BackupForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let to = format!("{}#database", env_path(&app, &env));
    let to_new = f.mode != "in_place";
    if !to_new && f.confirm.trim() != app {
        let message = format!("Type the app's name, {app}, to replace its database with the backup.");
        return back(me.config(), &to, false, &message);
    }
    let req = StartRestore { backup: f.backup.clone(), confirm: !to_new, to_new, to_time: None };
    match me.client.db_restore(&app, &env, &req).await {
        Ok(task) => {
            // The page follows the task until it ends.
            let to = format!("{}?task={}#database", env_path(&app, &env), task.id);
            back(me.config(), &to, true, &format!("Restore of backup {} started.", f.backup))
        }
        Err(e) if e.status.is_none() => error_page(me.tera(), status_of(&e), &e.message),
        Err(e) => back(me.config(), &to, false, &e.message),
    }
}

#[derive(Deserialize)]
pub(crate) struct DomainForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    domain: String,
    /// An uploaded certificate and key (PEM), pasted; both empty for the platform's own.
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
}

/// Adds a custom domain to this environment; the answer says which DNS record it needs.
pub(crate) async fn add_domain(me: Signed, Path((app, env)): EnvPath, Form(f): Form<DomainForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let pem = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let add = AddDomain {
        domain: f.domain.trim().to_string(),
        env: Some(env.clone()),
        cert_pem: pem(&f.cert),
        key_pem: pem(&f.key),
    };
    let result = me.client.add_domain(&app, &add).await;
    answered(me.config(), &format!("{}#domains", env_path(&app, &env)), result, |d| {
        format!("Added {}. {}", d.domain, d.dns)
    })
}

pub(crate) async fn remove_domain(
    me: Signed,
    Path((app, env)): EnvPath,
    Form(f): Form<DomainForm>,
) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let result = me.client.remove_domain(&app, f.domain.trim()).await;
    answered(me.config(), &format!("{}#domains", env_path(&app, &env)), result, |d| {
        format!("Removed {}.", d.domain)
    })
}

#[derive(Deserialize)]
pub(crate) struct DbSettingsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    schedule: String,
    #[serde(default)]
    keep: String,
    #[serde(default)]
    keep_days: String,
}

/// The database's backup schedule and retention.
pub(crate) async fn db_settings(
    me: Signed,
    Path((app, env)): EnvPath,
    Form(f): Form<DbSettingsForm>,
) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let to = format!("{}#database", env_path(&app, &env));
    let number = |what: &str, v: &str| -> Result<Option<u32>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| format!("{v:?} is not a number of {what}."))
    };
    let (keep, keep_days) = match (number("backups", &f.keep), number("days", &f.keep_days)) {
        (Ok(k), Ok(d)) => (k, d),
        (Err(e), _) | (_, Err(e)) => return back(me.config(), &to, false, &e),
    };
    let schedule = Some(f.schedule.trim().to_string()).filter(|s| !s.is_empty());
    let settings = DatabaseSettings { backup_schedule: schedule, keep, keep_days };
    let result = me.client.db_settings(&app, &env, &settings).await;
    answered(me.config(), &to, result, |db| {
        format!("Backups now run on {} and keep {} for {} days.", db.backup_schedule, db.keep, db.keep_days)
    })
}
