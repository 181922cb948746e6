//! Who is asking and what they may do: authenticates API tokens and console sessions into a
//! [`Caller`] with their grants, and answers "may this caller do that on this app". Users,
//! tokens and sign-in live in the submodules; the per-route rules in `http::routes`.

pub mod signin;
pub mod users;

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::tokens;
use protocol::access::{Grant, Role, ALL_APPS};

/// Console session ids start with this, so one bearer header carries either kind of secret.
pub const SESSION_PREFIX: &str = "paas_session_";

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A named API token, by its public id.
    Token(String),
    /// A console session, by the sha256 of its id.
    Session(String),
}

/// An authenticated user with their grants, as loaded for this request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub grants: Vec<Grant>,
    pub via: Via,
    /// When the credential used expires (tokens it makes expire no later).
    pub expires_at: Option<String>,
    /// The client's address, for the audit log and sign-in limits.
    pub addr: String,
}

impl Caller {
    /// The highest role the caller holds on `app` (a grant on every app counts).
    pub fn role_on(&self, app: &str) -> Option<Role> {
        self.grants.iter().filter(|g| g.app == app || g.app == ALL_APPS).map(|g| g.role).max()
    }

    /// Admin of every app: manages users and nodes.
    pub fn is_platform_admin(&self) -> bool {
        self.role_on_all() == Some(Role::Admin)
    }

    fn role_on_all(&self) -> Option<Role> {
        self.grants.iter().filter(|g| g.app == ALL_APPS).map(|g| g.role).max()
    }

    /// Refuses unless the caller holds at least `need` on `app`. The refusal is the same whether
    /// or not the app exists, so names of other teams' apps do not leak.
    pub fn require(&self, app: &str, need: Role, what: &str) -> Result<()> {
        match self.role_on(app) {
            Some(role) if role >= need => Ok(()),
            Some(role) => Err(DomainError::Forbidden(format!(
                "{what} on app {app:?} needs the {need} role; {} is {role} there",
                self.user
            ))),
            None => Err(DomainError::Forbidden(format!(
                "{} has no role on app {app:?}; an admin can grant one with `paas users grant {} {need} --app {app}`",
                self.user, self.user
            ))),
        }
    }

    /// Refuses unless the caller is admin of every app.
    pub fn require_platform_admin(&self, what: &str) -> Result<()> {
        if self.is_platform_admin() {
            return Ok(());
        }
        Err(DomainError::Forbidden(format!(
            "{what} needs the admin role on every app; {} does not have it",
            self.user
        )))
    }

    /// The apps the caller may see, or `None` when they may see every app.
    pub fn visible_apps(&self) -> Option<Vec<String>> {
        if self.role_on_all().is_some() {
            return None;
        }
        Some(self.grants.iter().map(|g| g.app.clone()).collect())
    }

    pub fn can_see(&self, app: &str) -> bool {
        self.role_on(app).is_some()
    }

    #[cfg(test)]
    pub fn admin_for_tests() -> Self {
        let grants = vec![Grant { app: ALL_APPS.into(), role: Role::Admin }];
        Self {
            user: "admin".into(),
            grants,
            via: Via::Token("test".into()),
            expires_at: None,
            addr: String::new(),
        }
    }
}

/// Secret values (config vars, database passwords) are shown only to deployers and admins of
/// the app, and each showing goes into the audit log as `action`.
pub async fn reveal(state: &AppState, caller: &Caller, app: &str, env: &str, action: &str) -> Result<()> {
    caller.require(app, Role::Deployer, &format!("`{action}`"))?;
    tracing::info!(app, env, user = %caller.user, action, "secret values revealed");
    let entry = crate::store::AuditRecord {
        user: &caller.user,
        action,
        app,
        env,
        addr: &caller.addr,
        outcome: "ok",
        detail: "",
    };
    Ok(state.store.record_audit(&entry).await?)
}

/// Turns a bearer secret into a caller, or says in a sentence why not.
pub async fn authenticate(state: &AppState, secret: Option<&str>, addr: &str) -> Result<Caller> {
    let secret = secret.filter(|s| !s.is_empty()).ok_or_else(|| {
        DomainError::Unauthenticated(
            "this request needs an API token: run `paas login` or pass --token".into(),
        )
    })?;
    let hash = tokens::hash(secret);
    let (user, via, expires_at) = if secret.starts_with(SESSION_PREFIX) {
        match state.store.session_user(&hash, &signin::timestamp(time::OffsetDateTime::now_utc())).await? {
            Some((user, expires)) => (user, Via::Session(hash), Some(expires)),
            None => {
                return Err(DomainError::Unauthenticated(
                    "this console session has ended (signed out or expired); sign in again".into(),
                ))
            }
        }
    } else {
        match state.store.user_token(&hash).await? {
            Some(t) if t.expires_at.as_deref().is_some_and(signin::is_past) => {
                return Err(DomainError::Unauthenticated(format!(
                    "the API token {} has expired; make a new one with `paas tokens create` or run `paas login`",
                    t.id
                )))
            }
            Some(t) => (t.user, Via::Token(t.id), t.expires_at),
            None => {
                return Err(DomainError::Unauthenticated(
                    "the API token is not valid (it may have been revoked); run `paas login`".into(),
                ))
            }
        }
    };
    let grants = state.store.grants_of(&user).await?;
    Ok(Caller { user, grants, via, expires_at, addr: addr.to_string() })
}

/// The bootstrap admin token, kept in `admin-token` in the data directory so `paas up` can
/// write the CLI config again after a restart. It is made (with user `admin`, admin of every
/// app) on first start, or when the store has no users at all (a reset store); otherwise the
/// file is only read, so a token rotated or revoked since stays that way.
pub async fn bootstrap(store: &crate::store::Store, data_dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    const USER: &str = "admin";
    let path = data_dir.join("admin-token");
    // A rotation cut short: keep the new token if the store switched to it.
    let next = data_dir.join(users::NEXT_ADMIN_TOKEN);
    if let Ok(t) = std::fs::read_to_string(&next) {
        if store.user_token(&tokens::hash(t.trim())).await?.is_some() {
            std::fs::rename(&next, &path).with_context(|| format!("renaming {}", next.display()))?;
        } else {
            let _ = std::fs::remove_file(&next);
        }
    }
    let existing =
        std::fs::read_to_string(&path).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    let fresh = existing.is_none() || store.users().await?.is_empty();
    let token = existing.unwrap_or_else(tokens::generate);
    if fresh {
        protocol::files::write_private(&path, token.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        store.insert_token(&tokens::hash(&token), USER, crate::store::TokenKind::User).await?;
    }
    // Data directories from before users: the token's owner becomes the first admin. And when
    // no one is admin of every app any more (a store edited by hand), the owner of the token in
    // the data directory is made one again: whoever holds the data directory holds it all anyway.
    if let Some(t) = store.user_token(&tokens::hash(&token)).await? {
        store.ensure_admin_user(&t.user).await?;
        if !store.has_platform_admin().await? {
            tracing::warn!(user = %t.user, "no user was admin of every app; the admin token's owner is again");
            store.grant(&t.user, protocol::access::ALL_APPS, Role::Admin).await?;
        }
    }
    let hash = tokens::hash(&token);
    store.name_token(&hash, &hash[..12], "bootstrap").await?;
    Ok(token)
}
