//! Settings: users and their roles, the visitor's API tokens, notification targets, alert rules
//! with their silences and the firing alerts, and the audit log. What the visitor may not read
//! (users and the audit log are the platform admin's) is left out rather than shown as an
//! error. A new token or webhook key is shown once, on its own page, never in a redirect.

use super::{answered, back, Signed};
use axum::extract::Form;
use axum::response::Response;
use protocol::alerts::AddTarget;
use serde::Deserialize;

const PAGE: &str = "/settings";

pub(crate) async fn page(me: Signed) -> Response {
    let c = &me.client;
    let (users, tokens, targets, rules, alerts, audit) = tokio::join!(
        c.users(),
        c.tokens(None, false),
        c.notify_targets(),
        c.alert_rules(),
        c.alerts(),
        c.audit(None, Some("7d")),
    );
    let mut ctx = me.context("settings");
    let mut problems = Vec::new();
    if let Ok(users) = users {
        ctx.insert("users", &users);
    }
    match tokens {
        Ok(t) => ctx.insert("tokens", &t),
        Err(e) => problems.push(format!("tokens: {}", e.message)),
    }
    if let Ok(t) = targets {
        ctx.insert("targets", &t);
    }
    if let Ok(r) = rules {
        ctx.insert("rules", &r);
    }
    if let Ok(a) = alerts {
        ctx.insert("alerts", &a);
    }
    if let Ok(mut a) = audit {
        a.truncate(100);
        ctx.insert("audit", &a);
    }
    ctx.insert("problems", &problems);
    me.page("settings.html", &ctx)
}

/// A secret shown once, on a page of its own (never in a redirect or a cookie).
fn show_once(me: &Signed, title: &str, name: &str, secret: &str, hint: &str) -> Response {
    let mut ctx = me.context("settings");
    ctx.insert("title", title);
    ctx.insert("name", name);
    ctx.insert("secret", secret);
    ctx.insert("hint", hint);
    me.page("token.html", &ctx)
}

#[derive(Deserialize)]
pub(crate) struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    role: String,
}

/// Adds a user with a password, and a role on an app (or `*`) when one is given.
pub(crate) async fn add_user(me: Signed, Form(f): Form<UserForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let name = f.name.trim();
    let password = Some(f.password.clone()).filter(|p| !p.is_empty());
    if let Err(e) = me.client.add_user(name, password).await {
        return back(me.config(), PAGE, false, &e.message);
    }
    if f.app.trim().is_empty() {
        return back(me.config(), PAGE, true, &format!("Added user {name}."));
    }
    let role = match f.role.parse() {
        Ok(role) => role,
        Err(_) => return back(me.config(), PAGE, false, "Pick a role: viewer, deployer or admin."),
    };
    let result = me.client.grant(name, f.app.trim(), role).await;
    answered(me.config(), PAGE, result, |_| format!("Added user {name} as {} of {}.", f.role, f.app.trim()))
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// For revoking: the token's id or name.
    #[serde(default)]
    token: String,
}

/// Makes a token for the visitor and shows it once.
pub(crate) async fn create_token(me: Signed, Form(f): Form<TokenForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    match me.client.create_token(f.name.trim(), None).await {
        Ok(created) => {
            let hint =
                "Copy it now: it is not shown again. Use it with `paas login --token` or as a bearer token.";
            show_once(&me, "Your new API token", f.name.trim(), &created.token, hint)
        }
        Err(e) => back(me.config(), PAGE, false, &e.message),
    }
}

pub(crate) async fn revoke_token(me: Signed, Form(f): Form<TokenForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let result = me.client.revoke_token(&f.token).await;
    answered(me.config(), PAGE, result, |_| "Revoked the token.".to_string())
}

#[derive(Deserialize)]
pub(crate) struct TargetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    app: String,
    deploys: Option<String>,
    /// For removing: the target's id.
    #[serde(default)]
    id: String,
}

pub(crate) async fn add_target(me: Signed, Form(f): Form<TargetForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let add = AddTarget {
        kind: f.kind.clone(),
        target: f.target.trim().to_string(),
        app: Some(f.app.trim().to_string()).filter(|a| !a.is_empty()),
        deploys: f.deploys.is_some(),
    };
    match me.client.add_notify_target(&add).await {
        Ok(t) => {
            match t.secret {
                // A webhook's signing key: shown once, like a token.
                Some(secret) => {
                    let hint = "Copy it now: the receiver checks X-Paas-Signature with it, and it is not shown again.";
                    show_once(&me, "Your webhook's signing key", &t.target, &secret, hint)
                }
                None => back(me.config(), PAGE, true, &format!("Added {} {}.", t.kind, t.target)),
            }
        }
        Err(e) => back(me.config(), PAGE, false, &e.message),
    }
}

pub(crate) async fn remove_target(me: Signed, Form(f): Form<TargetForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let result = me.client.remove_notify_target(&f.id).await;
    answered(me.config(), PAGE, result, |_| "Removed the notification target.".to_string())
}

#[derive(Deserialize)]
pub(crate) struct SilenceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    rule: String,
    /// A duration (`2h`), or empty to end the silence.
    #[serde(default)]
    duration: String,
}

pub(crate) async fn silence(me: Signed, Form(f): Form<SilenceForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let duration = Some(f.duration.trim().to_string()).filter(|d| !d.is_empty());
    let silenced = duration.is_some();
    let result = me.client.silence_alert_rule(&f.rule, duration).await;
    answered(me.config(), PAGE, result, |r| {
        if silenced {
            format!("Silenced {} until {}.", r.id, r.silenced_until.unwrap_or_default())
        } else {
            format!("Ended the silence of {}.", r.id)
        }
    })
}

/// Gives a user a role on an app (or `*`), or takes their role there away (`revoke`).
pub(crate) async fn grant(me: Signed, Form(f): Form<UserForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    let (name, app) = (f.name.trim(), f.app.trim());
    if f.role == "revoke" {
        let result = me.client.revoke(name, app).await;
        return answered(me.config(), PAGE, result, |_| format!("{name} no longer has a role on {app}."));
    }
    let role = match f.role.parse() {
        Ok(role) => role,
        Err(_) => return back(me.config(), PAGE, false, "Pick a role: viewer, deployer or admin."),
    };
    let result = me.client.grant(name, app, role).await;
    answered(me.config(), PAGE, result, |_| format!("{name} is now {} of {app}.", f.role))
}

/// Sends a test message to every notification target and says how each went.
pub(crate) async fn test_targets(me: Signed, Form(f): Form<super::session::CsrfForm>) -> Response {
    if let Some(refused) = me.refused(&f.csrf) {
        return refused;
    }
    match me.client.test_notify().await {
        Ok(outcomes) if outcomes.is_empty() => {
            back(me.config(), PAGE, false, "There is no notification target to test.")
        }
        Ok(outcomes) => {
            let failed: Vec<String> = outcomes
                .iter()
                .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.target)))
                .collect();
            if failed.is_empty() {
                back(
                    me.config(),
                    PAGE,
                    true,
                    &format!("Sent a test message to {} target(s).", outcomes.len()),
                )
            } else {
                back(me.config(), PAGE, false, &format!("Some test messages failed: {}.", failed.join("; ")))
            }
        }
        Err(e) => back(me.config(), PAGE, false, &e.message),
    }
}
