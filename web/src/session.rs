//! Sign-in and what every signed-in request carries: the session cookie (a session id of its
//! own, made at sign-in and ended at sign-out, never an API token; `HttpOnly`,
//! `SameSite=Strict`, `Secure` behind HTTPS), the per-session CSRF value every form must send
//! back, the caller's roles, and the one-time flash message a change leaves for the next page.

use super::{client, render, role_on, WebConfig, WebState};
use axum::extract::{ConnectInfo, Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use protocol::access::{Grant, Role};
use protocol::Client;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// The session cookie.
const COOKIE: &str = "paas_session";
/// The sign-in form's CSRF cookie (double submit: the form must carry the same value).
const CSRF_COOKIE: &str = "paas_csrf";
/// A message for the next page, set by a change and cleared by the page that shows it.
const FLASH_COOKIE: &str = "paas_flash";
/// How long the session cookie lives in the browser (the session itself ends on the server).
const SESSION_MAX_AGE: u64 = 12 * 3600;

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

/// The flash cookie for `message` (hex, so any sentence is a valid cookie value).
pub(crate) fn flash_cookie(config: &WebConfig, ok: bool, message: &str) -> String {
    let value = format!("{}{}", if ok { 'o' } else { 'e' }, hex::encode(message.as_bytes()));
    set_cookie(config, FLASH_COOKIE, &value, 60)
}

/// The CSRF value of a session's forms: derived from the session id (which only the browser
/// holding the cookie knows), so no state is kept for it.
pub(crate) fn session_csrf(session: &str) -> String {
    hex::encode(&Sha256::digest(format!("paas-console-csrf:{session}").as_bytes())[..16])
}

/// Compares without an early exit, so the time taken says nothing about the expected value.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refused(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("{why}\n")).into_response()
}

/// A signed-in visitor: the API client of their session, who they are and may be. Pages and
/// changes take it as an extractor; without a valid session the browser goes to sign-in.
pub struct Signed {
    pub(crate) client: Client,
    pub(crate) user: String,
    pub(crate) grants: Vec<Grant>,
    pub(crate) csrf: String,
    /// The message a change left for this page: (success, sentence).
    flash: Option<(bool, String)>,
    config: std::sync::Arc<WebConfig>,
    tera: std::sync::Arc<tera::Tera>,
}

impl FromRequestParts<WebState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &WebState) -> Result<Self, Response> {
        let Some(session) = cookie(&parts.headers, COOKIE) else {
            return Err(Redirect::to("/login").into_response());
        };
        let client = client(&s.config, &session);
        let who = match client.whoami().await {
            Ok(w) => w,
            Err(e) if e.status == Some(401) => return Err(Redirect::to("/login").into_response()),
            Err(e) => return Err(super::error_page(&s.tera, StatusCode::BAD_GATEWAY, &e.message)),
        };
        let flash = cookie(&parts.headers, FLASH_COOKIE).and_then(|v| {
            let ok = v.starts_with('o');
            let text = String::from_utf8(hex::decode(v.get(1..)?).ok()?).ok()?;
            Some((ok, text))
        });
        Ok(Self {
            client,
            user: who.user,
            grants: who.grants,
            csrf: session_csrf(&session),
            flash,
            config: s.config.clone(),
            tera: s.tera.clone(),
        })
    }
}

impl Signed {
    /// Refuses a form that does not carry this session's CSRF value (another site's post).
    pub(crate) fn refused(&self, csrf: &str) -> Option<Response> {
        (!same(&self.csrf, csrf)).then(|| {
            refused("this form did not come from this console (or the session changed); reload the page")
        })
    }

    pub(crate) fn role_on(&self, app: &str) -> Option<Role> {
        role_on(&self.grants, app)
    }

    pub(crate) fn platform_admin(&self) -> bool {
        self.role_on(protocol::access::ALL_APPS) == Some(Role::Admin)
    }

    pub(crate) fn config(&self) -> &WebConfig {
        &self.config
    }

    pub(crate) fn tera(&self) -> &tera::Tera {
        &self.tera
    }

    /// What every page's template needs: the user, the CSRF value, the flash message, the
    /// version (for static file names), and the page's navigation entry.
    pub(crate) fn context(&self, nav: &str) -> tera::Context {
        let mut ctx = tera::Context::new();
        ctx.insert("user", &self.user);
        ctx.insert("csrf", &self.csrf);
        ctx.insert("nav", nav);
        ctx.insert("version", env!("CARGO_PKG_VERSION"));
        ctx.insert("platform_admin", &self.platform_admin());
        if let Some((ok, text)) = &self.flash {
            ctx.insert("flash", &serde_json::json!({ "ok": ok, "text": text }));
        }
        ctx
    }

    /// Renders a page; the flash message it showed is cleared.
    pub(crate) fn page(&self, name: &str, ctx: &tera::Context) -> Response {
        let resp = render(&self.tera, name, ctx);
        if self.flash.is_none() {
            return resp;
        }
        ([(header::SET_COOKIE, set_cookie(&self.config, FLASH_COOKIE, "", 0))], resp).into_response()
    }
}

/// The sign-in form, with a fresh CSRF value in the form and in a cookie.
fn login_form(s: &WebState, status: StatusCode, error: Option<String>) -> Response {
    let csrf = hex::encode(rand::random::<[u8; 16]>());
    let mut ctx = tera::Context::new();
    ctx.insert("error", &error);
    ctx.insert("csrf", &csrf);
    ctx.insert("version", env!("CARGO_PKG_VERSION"));
    let cookie = set_cookie(&s.config, CSRF_COOKIE, &csrf, 3600);
    (status, [(header::SET_COOKIE, cookie)], render(&s.tera, "login.html", &ctx)).into_response()
}

pub(crate) async fn login_page(State(s): State<WebState>) -> Response {
    login_form(&s, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
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

pub(crate) async fn login(
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
    match client(&s.config, "").start_session(&login).await {
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
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

pub(crate) async fn logout(
    State(s): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some(session) = cookie(&headers, COOKIE) else { return Redirect::to("/login").into_response() };
    if !same(&session_csrf(&session), &form.csrf) {
        return refused("this form did not come from this console; reload the page");
    }
    // Ends the session on the server: the id stops working even where the cookie was copied.
    if let Err(e) = client(&s.config, &session).end_session().await {
        if e.status != Some(401) {
            return super::error_page(&s.tera, StatusCode::BAD_GATEWAY, &e.message);
        }
    }
    let cookie = set_cookie(&s.config, COOKIE, "", 0);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}
