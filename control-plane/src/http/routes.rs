//! The public API's route table. Every route is added here with the role it needs and the
//! name its changes are audited under, so the router and its authorization rules are one list:
//! a route cannot exist without a rule, the authorization test walks the same list, and one
//! middleware authenticates, authorizes and writes the audit log for every route.

use super::error::ApiError;
use crate::access::{self, Caller};
use crate::error::DomainError;
use crate::state::AppState;
use crate::store::AuditRecord;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use protocol::access::Role;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone, signed in or not: signing in itself.
    Public,
    /// Any signed-in user; what they see is filtered to their apps.
    Signed,
    /// At least this role on the app named in the path (`{app}`).
    App(Role),
    /// Admin of every app: users, nodes, creating apps.
    Platform,
}

/// One route's rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Method,
    /// As written in the table, below `/api/v1`.
    pub path: String,
    pub need: Need,
    /// What the audit log calls a change made through this route; reads are not audited.
    pub action: &'static str,
}

/// The client's address, as the accept loop recorded it (`ConnectInfo`) for every connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        let peer = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
        Self(peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))))
    }
}

/// What a change did, in user words (`Scaled web to 3`, `Set config KEY1, KEY2`: names, never
/// values): a handler puts it in its response's extensions and it becomes the audit entry's
/// detail, which the app's log shows as a platform line.
#[derive(Debug, Clone)]
pub struct AuditNote(pub String);

/// Routes with their rules, built per resource and merged in `http/mod.rs`.
#[derive(Default)]
pub struct Api {
    routes: BTreeMap<String, MethodRouter<AppState>>,
    rules: Vec<Rule>,
}

impl Api {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, need: Need, h: H) -> Self {
        self.on(Method::GET, path, need, "", h)
    }

    /// A route that changes something, audited as `action`.
    pub fn on<H: Handler<T, AppState>, T: 'static>(
        mut self,
        method: Method,
        path: &str,
        need: Need,
        action: &'static str,
        h: H,
    ) -> Self {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        let route = self.routes.remove(path).unwrap_or_default().on(filter, h);
        self.routes.insert(path.to_string(), route);
        self.rules.push(Rule { method, path: path.to_string(), need, action });
        self
    }

    pub fn merge(mut self, other: Api) -> Self {
        for (path, route) in other.routes {
            let merged = match self.routes.remove(&path) {
                Some(mine) => mine.merge(route),
                None => route,
            };
            self.routes.insert(path, merged);
        }
        self.rules.extend(other.rules);
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The router, every route behind [`authorize`] with its rule.
    pub fn into_router(self, state: AppState, prefix: &'static str) -> Router<AppState> {
        // Keyed as the router matched it: with the prefix the router is nested under.
        let rules: HashMap<(Method, String), Rule> =
            self.rules.into_iter().map(|r| ((r.method.clone(), format!("{prefix}{}", r.path)), r)).collect();
        let guard = Guard { state, rules: Arc::new(rules) };
        let mut router = Router::new();
        for (path, route) in self.routes {
            router = router.route(&path, route);
        }
        router.route_layer(from_fn_with_state(guard, authorize))
    }
}

#[derive(Clone)]
struct Guard {
    state: AppState,
    rules: Arc<HashMap<(Method, String), Rule>>,
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<String> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// Authenticates the caller, checks the route's rule, runs the handler, and records a change
/// (allowed or not) in the audit log. A route without a rule is refused, never served open.
async fn authorize(
    State(guard): State<Guard>,
    matched: MatchedPath,
    params: RawPathParams,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(rule) = guard.rules.get(&(req.method().clone(), matched.as_str().to_string())).cloned() else {
        tracing::error!(path = matched.as_str(), method = %req.method(), "an API route has no authorization rule");
        return ApiError::from(DomainError::Forbidden("this route has no authorization rule".into()))
            .into_response();
    };
    let addr = ClientAddr::of(req.extensions()).ip();
    if rule.need == Need::Public {
        return next.run(req).await;
    }
    let caller = match access::authenticate(&guard.state, bearer(req.headers()).as_deref(), &addr).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let param =
        |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()).unwrap_or_default();
    let (app, env) = (param("app"), param("env"));
    let allowed = match rule.need {
        Need::Public | Need::Signed => Ok(()),
        Need::App(role) => caller.require(&app, role, &describe(&rule)),
        Need::Platform => caller.require_platform_admin(&describe(&rule)),
    };
    let audited = rule.method != Method::GET;
    let response = match allowed {
        Ok(()) => {
            req.extensions_mut().insert(caller.clone());
            next.run(req).await
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    if audited {
        // The handler's own note, else the other path parameters name what was changed (a
        // user, a token, a backup).
        let detail = match response.extensions().get::<AuditNote>() {
            Some(note) => note.0.clone(),
            None => Vec::from_iter(
                params.iter().filter(|(k, _)| !["app", "env"].contains(k)).map(|(k, v)| format!("{k} {v}")),
            )
            .join(", "),
        };
        record(&guard.state, &caller, &rule, &app, &env, &detail, response.status().as_u16()).await;
    }
    response
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    /// The address the accept loop recorded; unspecified for a request that did not come
    /// through it (tests calling the router directly).
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

impl ClientAddr {
    pub fn ip(&self) -> String {
        self.0.ip().to_string()
    }
}

/// "deploy", "config.change": what the refusal sentence calls the route's action.
fn describe(rule: &Rule) -> String {
    if rule.action.is_empty() {
        "reading this".into()
    } else {
        format!("`{}`", rule.action)
    }
}

async fn record(
    state: &AppState,
    caller: &Caller,
    rule: &Rule,
    app: &str,
    env: &str,
    detail: &str,
    status: u16,
) {
    let outcome = match status {
        200..=399 => "ok".to_string(),
        401 | 403 => "denied".to_string(),
        s => format!("failed ({s})"),
    };
    let entry = AuditRecord {
        user: &caller.user,
        action: rule.action,
        app,
        env,
        addr: &caller.addr,
        outcome: &outcome,
        detail,
    };
    // The change is done either way; a lost audit line is logged loudly rather than undoing it.
    if let Err(e) = state.store.record_audit(&entry).await {
        tracing::error!(error = %e, action = rule.action, user = %caller.user, "writing the audit log failed");
    }
}
