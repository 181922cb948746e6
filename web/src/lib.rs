//! The web console: server-rendered Tera pages on axum. It reaches data only through the public
//! API with the signed-in user's token (the typed client), so the console can do nothing the CLI
//! cannot.

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use protocol::Client;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tera::Tera;

const COOKIE: &str = "paas_token";

#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Base URL of the control plane's API, which the console calls like any client.
    pub api_url: String,
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
        .with_state(state))
}

/// Context of `login.html`.
#[derive(Serialize, Default)]
pub struct LoginPage {
    pub error: Option<String>,
}

/// Context of `apps.html`.
#[derive(Serialize)]
pub struct AppsPage {
    pub user: String,
    pub apps: Vec<protocol::api::App>,
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

fn token(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
}

async fn apps_page(State(s): State<WebState>, headers: HeaderMap) -> Response {
    let Some(token) = token(&headers) else { return Redirect::to("/login").into_response() };
    let client = Client::new(&s.config.api_url, token);
    let who = match client.whoami().await {
        Ok(w) => w,
        Err(e) if e.status == Some(401) => return Redirect::to("/login").into_response(),
        Err(e) => return render(&s.tera, "error.html", &ErrorPage { message: e.message }),
    };
    match client.list_apps().await {
        Ok(apps) => render(&s.tera, "apps.html", &AppsPage { user: who.user, apps }),
        Err(e) => render(&s.tera, "error.html", &ErrorPage { message: e.message }),
    }
}

async fn login_page(State(s): State<WebState>) -> Response {
    render(&s.tera, "login.html", &LoginPage::default())
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(s): State<WebState>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim().to_string();
    let client = Client::new(&s.config.api_url, &token);
    match client.whoami().await {
        Ok(_) => {
            let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(e) => {
            let page = LoginPage { error: Some(e.message) };
            (StatusCode::UNAUTHORIZED, render(&s.tera, "login.html", &page)).into_response()
        }
    }
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
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
                }],
            }],
        };
        let html = tera.render("apps.html", &tera::Context::from_serialize(&apps).unwrap()).unwrap();
        assert!(html.contains("hello.localhost") && html.contains("v3"), "{html}");
        let login = LoginPage { error: Some("the API token is not valid".into()) };
        let html = tera.render("login.html", &tera::Context::from_serialize(&login).unwrap()).unwrap();
        assert!(html.contains("not valid"));
        let err = ErrorPage { message: "boom".into() };
        assert!(tera
            .render("error.html", &tera::Context::from_serialize(&err).unwrap())
            .unwrap()
            .contains("boom"));
    }
}
