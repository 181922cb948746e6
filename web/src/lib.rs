//! The web console: server-rendered Tera pages on axum. It reaches data only through the public
//! API (the typed client) with the signed-in user's session id, so the console can do nothing
//! the CLI cannot, and the server checks every change whatever the page showed. This file owns
//! the router, the templates and what every page shares (its context, flash messages, static
//! files); sign-in is `session`, pages are `dashboard`, `app`, `settings`, changes `actions`.

mod actions;
mod app;
mod chart;
mod dashboard;
mod live;
mod session;
mod settings;
#[cfg(test)]
mod tests;
mod upload;

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use protocol::access::{Grant, Role, ALL_APPS};
use protocol::Client;
use std::sync::Arc;
use tera::Tera;

pub use session::Signed;

#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Base URL of the control plane's API, which the console calls like any client.
    pub api_url: String,
    /// Lets the API believe the visitor's address this console passes on at sign-in.
    pub console_key: String,
    /// Mark cookies `Secure` (the console is served over HTTPS).
    pub secure_cookies: bool,
}

#[derive(Clone)]
pub(crate) struct WebState {
    pub(crate) tera: Arc<Tera>,
    pub(crate) config: Arc<WebConfig>,
}

/// The templates, by name, as compiled into the binary.
pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("dashboard.html", include_str!("../templates/dashboard.html")),
    ("dashboard_live.html", include_str!("../templates/dashboard_live.html")),
    ("app.html", include_str!("../templates/app.html")),
    ("release.html", include_str!("../templates/release.html")),
    ("settings.html", include_str!("../templates/settings.html")),
    ("token.html", include_str!("../templates/token.html")),
    ("error.html", include_str!("../templates/error.html")),
];

/// The console's only script and style sheet: written here, no build step, no third party.
pub(crate) const SCRIPT: &str = include_str!("../static/console.js");
pub(crate) const STYLE: &str = include_str!("../static/console.css");

/// Every template, compiled once at start so a broken template fails boot, not a request.
pub fn templates() -> anyhow::Result<Tera> {
    let mut tera = Tera::default();
    tera.add_raw_templates(TEMPLATES.to_vec())?;
    // `{{ n | bytes }}`: a size as `3.5 MiB` (Tera's own filter needs a feature we leave out).
    tera.register_filter(
        "bytes",
        |value: &tera::Value, _: &std::collections::HashMap<String, tera::Value>| {
            let n = value.as_f64().ok_or_else(|| tera::Error::msg("`bytes` takes a number"))?;
            Ok(tera::Value::String(chart::format_value(n, "bytes")))
        },
    );
    // `{{ at | when }}`: an RFC 3339 time to the second, `2026-11-28 21:30:12`, in UTC as stored.
    tera.register_filter(
        "when",
        |value: &tera::Value, _: &std::collections::HashMap<String, tera::Value>| {
            let s = value.as_str().unwrap_or_default();
            let shown = match s.get(..19) {
                Some(head) if s.as_bytes().get(10) == Some(&b'T') => {
                    format!("{} UTC", head.replace('T', " "))
                }
                _ => s.to_string(),
            };
            Ok(tera::Value::String(shown))
        },
    );
    Ok(tera)
}

pub fn router(config: WebConfig) -> anyhow::Result<Router> {
    let state = WebState { tera: Arc::new(templates()?), config: Arc::new(config) };
    Ok(Router::<WebState>::new()
        .route("/", get(dashboard::page))
        .route("/live/dashboard", get(dashboard::live))
        .route("/apps", post(actions::create_app))
        .route("/apps/{app}", get(app::first_env))
        .route("/apps/{app}/{env}", get(app::page))
        .route("/apps/{app}/{env}/deploy", post(actions::deploy))
        .route(
            "/apps/{app}/{env}/upload",
            // The one route that takes more than a form: a source archive, as large as the API allows.
            post(upload::deploy_archive).layer(axum::extract::DefaultBodyLimit::max(
                protocol::api::MAX_SOURCE_BYTES as usize + (64 << 10),
            )),
        )
        .route("/apps/{app}/{env}/rollback", post(actions::rollback))
        .route("/apps/{app}/{env}/promote", post(actions::promote))
        .route("/apps/{app}/{env}/scale", post(actions::scale))
        .route("/apps/{app}/{env}/config", post(actions::config))
        .route("/apps/{app}/{env}/maintenance", post(actions::maintenance))
        .route("/apps/{app}/{env}/db/backup", post(actions::db_backup))
        .route("/apps/{app}/{env}/db/verify", post(actions::db_verify))
        .route("/apps/{app}/{env}/db/restore", post(actions::db_restore))
        .route("/apps/{app}/{env}/db/settings", post(actions::db_settings))
        .route("/apps/{app}/{env}/domains", post(actions::add_domain))
        .route("/apps/{app}/{env}/domains/remove", post(actions::remove_domain))
        .route("/apps/{app}/{env}/releases/{version}", get(app::release))
        .route("/live/apps/{app}/{env}/releases/{version}", get(live::deploy_events))
        .route("/live/apps/{app}/{env}/logs", get(live::logs))
        .route("/settings", get(settings::page))
        .route("/settings/users", post(settings::add_user))
        .route("/settings/users/grant", post(settings::grant))
        .route("/settings/notify/test", post(settings::test_targets))
        .route("/settings/tokens", post(settings::create_token))
        .route("/settings/tokens/revoke", post(settings::revoke_token))
        .route("/settings/notify", post(settings::add_target))
        .route("/settings/notify/remove", post(settings::remove_target))
        .route("/settings/alerts/silence", post(settings::silence))
        .route("/static/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/static/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        // Every `{app}` and `{env}` is a valid name before anything uses it in an API path.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), checked_names))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .with_state(state)
        .layer(axum::middleware::map_response(page_headers)))
}

/// Refuses a path whose app or environment is not a valid name (`..`, `%2F`, spaces), so
/// the API paths the console builds from them hold exactly one segment each.
async fn checked_names(
    axum::extract::State(s): axum::extract::State<WebState>,
    params: axum::extract::RawPathParams,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    for (key, value) in &params {
        let bad = match key {
            "app" => protocol::AppName::new(value).err(),
            "env" => protocol::EnvName::new(value).err(),
            _ => None,
        };
        if let Some(e) = bad {
            return error_page(&s.tera, StatusCode::NOT_FOUND, &e.to_string());
        }
    }
    next.run(req).await
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // Named with the version in every page (`?v=`), so a new binary's files are fetched anew.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=86400")], body)
        .into_response()
}

/// No page may be framed by another site (clickjacking) or load anything from elsewhere; no
/// inline script runs, so injected markup could not run one either.
async fn page_headers(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    resp
}

/// The highest role `grants` give on `app` (a grant on every app counts).
pub(crate) fn role_on(grants: &[Grant], app: &str) -> Option<Role> {
    grants.iter().filter(|g| g.app == app || g.app == ALL_APPS).map(|g| g.role).max()
}

/// Renders `name` with `ctx`; a failure is logged and answered with a plain 500.
pub(crate) fn render(tera: &Tera, name: &str, ctx: &tera::Context) -> Response {
    match tera.render(name, ctx) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = ?e, template = name, "rendering a console page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error rendering the page").into_response()
        }
    }
}

/// The error page, for a request that has no page of its own to show the sentence on.
pub(crate) fn error_page(tera: &Tera, status: StatusCode, message: &str) -> Response {
    let mut ctx = tera::Context::new();
    ctx.insert("message", message);
    ctx.insert("version", env!("CARGO_PKG_VERSION"));
    (status, render(tera, "error.html", &ctx)).into_response()
}

/// Back to `to` with a one-sentence message shown there once (the flash cookie).
pub(crate) fn back(config: &WebConfig, to: &str, ok: bool, message: &str) -> Response {
    let cookie = session::flash_cookie(config, ok, message);
    ([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response()
}

/// Answers a change: back to the page with the API's sentence, success or not.
pub(crate) fn answered<T>(
    config: &WebConfig,
    to: &str,
    result: Result<T, protocol::ClientError>,
    ok: impl FnOnce(T) -> String,
) -> Response {
    match result {
        Ok(value) => back(config, to, true, &ok(value)),
        Err(e) => back(config, to, false, &e.message),
    }
}

/// The API client of a session.
pub(crate) fn client(config: &WebConfig, session: &str) -> Client {
    Client::new(&config.api_url, session)
}

/// `/apps/{app}/{env}` with both names as path segments.
pub(crate) fn env_path(app: &str, env: &str) -> String {
    format!("/apps/{}/{}", protocol::client::seg(app), protocol::client::seg(env))
}
