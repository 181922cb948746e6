//! The web console: server-rendered Tera pages on axum. It reaches data only through the public
//! API (the typed client) with the signed-in user's session id, so the console can do nothing
//! the CLI cannot. Sign-in takes a user name and password (and one-time code), or an API token,
//! and yields a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` behind HTTPS); every
//! form carries a CSRF value.

use axum::extract::{ConnectInfo, Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, Router};
use protocol::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use tera::Tera;

/// The session cookie: a session id of its own (made at sign-in, ended at sign-out), never an
/// API token.
const COOKIE: &str = "paas_session";
/// The sign-in form's CSRF cookie (double submit: the form must carry the same value).
const CSRF_COOKIE: &str = "paas_csrf";
/// How long the session cookie lives in the browser (the session itself ends on the server).
const SESSION_MAX_AGE: u64 = 12 * 3600;

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
struct WebState {
    tera: Arc<Tera>,
    config: Arc<WebConfig>,
}

/// Every template, compiled once at start so a broken template fails boot, not a request.
pub fn templates() -> anyhow::Result<Tera> {
    let mut tera = Tera::default();
    tera.add_raw_templates(vec![
        ("base.html", include_str!("../templates/base.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("apps.html", include_str!("../templates/apps.html")),
        ("error.html", include_str!("../templates/error.html")),
    ])?;
    Ok(tera)
}

pub fn router(config: WebConfig) -> anyhow::Result<Router> {
    let state = WebState { tera: Arc::new(templates()?), config: Arc::new(config) };
    Ok(Router::new()
        .route("/", get(apps_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .with_state(state)
        .layer(axum::middleware::map_response(page_headers)))
}

/// No page may be framed by another site (clickjacking) or load anything from elsewhere.
async fn page_headers(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("same-origin"));
    resp
}

/// Context of `login.html`.
#[derive(Serialize, Default)]
pub struct LoginPage {
    pub error: Option<String>,
    /// The form's CSRF value (also in the CSRF cookie).
    pub csrf: String,
}

/// Context of `apps.html`.
#[derive(Serialize)]
pub struct AppsPage {
    pub user: String,
    pub apps: Vec<protocol::api::App>,
    /// The session's CSRF value, for the page's forms.
    pub csrf: String,
}

/// Context of `error.html`.
#[derive(Serialize)]
pub struct ErrorPage {
    pub message: String,
}

fn render<T: Serialize>(tera: &Tera, name: &str, ctx: &T) -> Response {
    let ctx = match tera::Context::from_serialize(ctx) {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    match tera.render(name, &ctx) {
        Ok(html) => Html(html).into_response(),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "rendering a console page failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error rendering the page").into_response()
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&prefix).map(str::to_string))
        .filter(|v| !v.is_empty())
}

fn set_cookie(config: &WebConfig, name: &str, value: &str, max_age: u64) -> String {
    let secure = if config.secure_cookies { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
}

/// The CSRF value of a session's forms: derived from the session id (which only the browser
/// holding the cookie knows), so no state is kept for it.
fn session_csrf(session: &str) -> String {
    hex::encode(&Sha256::digest(format!("paas-console-csrf:{session}").as_bytes())[..16])
}

/// Compares without an early exit, so the time taken says nothing about the expected value.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn apps_page(State(s): State<WebState>, headers: HeaderMap) -> Response {
    let Some(session) = cookie(&headers, COOKIE) else { return Redirect::to("/login").into_response() };
    let client = Client::new(&s.config.api_url, &session);
    let who = match client.whoami().await {
        Ok(w) => w,
        Err(e) if e.status == Some(401) => return Redirect::to("/login").into_response(),
        Err(e) => return render(&s.tera, "error.html", &ErrorPage { message: e.message }),
    };
    match client.list_apps().await {
        Ok(apps) => {
            render(&s.tera, "apps.html", &AppsPage { user: who.user, apps, csrf: session_csrf(&session) })
        }
        Err(e) => render(&s.tera, "error.html", &ErrorPage { message: e.message }),
    }
}

/// The sign-in form, with a fresh CSRF value in the form and in a cookie.
fn login_form(s: &WebState, status: StatusCode, error: Option<String>) -> Response {
    let csrf = hex::encode(rand::random::<[u8; 16]>());
    let page = LoginPage { error, csrf: csrf.clone() };
    let cookie = set_cookie(&s.config, CSRF_COOKIE, &csrf, 3600);
    (status, [(header::SET_COOKIE, cookie)], render(&s.tera, "login.html", &page)).into_response()
}

async fn login_page(State(s): State<WebState>) -> Response {
    login_form(&s, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    token: String,
}

fn refused(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("{why}\n")).into_response()
}

async fn login(
    State(s): State<WebState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&expected, &form.csrf) {
        return refused("this sign-in form has expired or did not come from this console; reload the page");
    }
    let token = Some(form.token.trim().to_string()).filter(|t| !t.is_empty());
    let code = Some(form.code.trim().to_string()).filter(|c| !c.is_empty());
    let login = protocol::access::Login {
        user: form.user.trim().to_string(),
        password: form.password,
        token,
        code,
        token_name: None,
        client_addr: peer.map(|Extension(ConnectInfo(p))| p.ip().to_string()),
        console_key: Some(s.config.console_key.clone()),
    };
    match Client::new(&s.config.api_url, "").start_session(&login).await {
        Ok(session) => {
            let cookie = set_cookie(&s.config, COOKIE, &session.id, SESSION_MAX_AGE);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(e) => {
            let status =
                e.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::UNAUTHORIZED);
            login_form(&s, status, Some(e.message))
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(s): State<WebState>, headers: HeaderMap, Form(form): Form<LogoutForm>) -> Response {
    let Some(session) = cookie(&headers, COOKIE) else { return Redirect::to("/login").into_response() };
    if !same(&session_csrf(&session), &form.csrf) {
        return refused("this form did not come from this console; reload the page");
    }
    // Ends the session on the server: the id stops working even where the cookie was copied.
    if let Err(e) = Client::new(&s.config.api_url, &session).end_session().await {
        if e.status != Some(401) {
            return render(&s.tera, "error.html", &ErrorPage { message: e.message });
        }
    }
    let cookie = set_cookie(&s.config, COOKIE, "", 0);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders every page with a representative context, so a template error fails here.
    #[test]
    fn every_page_renders() {
        let tera = templates().unwrap();
        let apps = AppsPage {
            user: "admin".into(),
            apps: vec![protocol::api::App {
                name: "hello".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
                envs: vec![protocol::api::EnvSummary {
                    name: "production".into(),
                    hostname: "hello.localhost".into(),
                    url: "http://hello.localhost:8080/".into(),
                    current_release: Some(3),
                    target_release: None,
                    status: "running".into(),
                    replicas: 1,
                    healthy_replicas: 1,
                    maintenance: false,
                }],
            }],
            csrf: "c".into(),
        };
        let html = tera.render("apps.html", &tera::Context::from_serialize(&apps).unwrap()).unwrap();
        assert!(html.contains("hello.localhost") && html.contains("v3"), "{html}");
        let login = LoginPage { error: Some("the API token is not valid".into()), csrf: "c".into() };
        let html = tera.render("login.html", &tera::Context::from_serialize(&login).unwrap()).unwrap();
        assert!(html.contains("not valid"));
        let err = ErrorPage { message: "boom".into() };
        assert!(tera
            .render("error.html", &tera::Context::from_serialize(&err).unwrap())
            .unwrap()
            .contains("boom"));
    }
}
