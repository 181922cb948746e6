//! Managing users, their roles and their API tokens. Who may call these is decided per route
//! (`http::routes`); what is checked here is what depends on the object: a user's own tokens,
//! the last admin, names.

use super::signin::{after, hash_password};
use super::Caller;
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::tokens;
use protocol::access::{CreateUser, CreatedToken, Role, TokenInfo, User, ALL_APPS};
use std::time::Duration;

/// User names: short, printable, no spaces or separators a shell or a log line would trip on.
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c));
    if ok {
        return Ok(());
    }
    Err(DomainError::Invalid(format!(
        "{name:?} is not a valid user name: use 1 to 64 lowercase letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
    )))
}

async fn must_exist(state: &AppState, user: &str) -> Result<()> {
    match state.store.user(user).await? {
        Some(_) => Ok(()),
        None => Err(DomainError::NotFound(format!("there is no user named {user:?}"))),
    }
}

pub async fn add(state: &AppState, new: CreateUser) -> Result<User> {
    check_name(&new.name)?;
    let hash = match new.password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    state.store.add_user(&new.name, hash.as_deref()).await?;
    show(state, &new.name).await
}

pub async fn show(state: &AppState, name: &str) -> Result<User> {
    let Some(u) = state.store.user(name).await? else {
        return Err(DomainError::NotFound(format!("there is no user named {name:?}")));
    };
    let grants = state.store.grants_of(name).await?;
    Ok(User {
        name: u.name,
        grants,
        password: u.password_hash.is_some(),
        totp: u.totp_secret.is_some(),
        created_at: u.created_at,
    })
}

pub async fn list(state: &AppState) -> Result<Vec<User>> {
    let mut out = Vec::new();
    for u in state.store.users().await? {
        out.push(User {
            grants: state.store.grants_of(&u.name).await?,
            password: u.password_hash.is_some(),
            totp: u.totp_secret.is_some(),
            created_at: u.created_at,
            name: u.name,
        });
    }
    Ok(out)
}

pub async fn remove(state: &AppState, caller: &Caller, name: &str) -> Result<()> {
    if caller.user == name {
        return Err(DomainError::Conflict("you cannot remove yourself; ask another admin".into()));
    }
    if !state.store.remove_user(name).await? {
        return Err(DomainError::NotFound(format!("there is no user named {name:?}")));
    }
    Ok(())
}

/// Gives `user` `role` on `app` (an existing app, or `*` for every app).
pub async fn grant(state: &AppState, user: &str, app: &str, role: Role) -> Result<User> {
    must_exist(state, user).await?;
    if app != ALL_APPS {
        state.store.get_app(app).await?;
    }
    state.store.grant(user, app, role).await?;
    show(state, user).await
}

pub async fn revoke(state: &AppState, user: &str, app: &str) -> Result<User> {
    must_exist(state, user).await?;
    if !state.store.revoke(user, app).await? {
        return Err(DomainError::NotFound(format!("{user} has no role on {}", describe(app))));
    }
    show(state, user).await
}

fn describe(app: &str) -> String {
    if app == ALL_APPS {
        "every app".into()
    } else {
        format!("app {app:?}")
    }
}

pub async fn set_password(state: &AppState, user: &str, password: String) -> Result<()> {
    let hash = hash_password(password).await?;
    if !state.store.set_password(user, Some(&hash)).await? {
        return Err(DomainError::NotFound(format!("there is no user named {user:?}")));
    }
    // Whoever signed in with the old password is signed out.
    Ok(state.store.end_sessions_of(user).await?)
}

/// Where a rotated admin token waits until the store has switched to it.
pub const NEXT_ADMIN_TOKEN: &str = "admin-token.next";

/// The bootstrap admin token's name, which no other token may take.
pub const BOOTSTRAP: &str = "bootstrap";

pub fn check_token_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(DomainError::Invalid("a token name needs 1 to 64 printable characters".into()));
    }
    if name == BOOTSTRAP {
        return Err(DomainError::Invalid(format!("{BOOTSTRAP:?} is the admin token's name; choose another")));
    }
    Ok(())
}

/// A token the caller makes for themselves: it expires no later than the credential they use,
/// so a short-lived token or a console session cannot mint a lasting one.
pub async fn create_token(
    state: &AppState,
    caller: &Caller,
    name: &str,
    ttl: Option<Duration>,
) -> Result<CreatedToken> {
    let expires_at = match (ttl.map(after), caller.expires_at.clone()) {
        (Some(wanted), Some(limit)) => Some(wanted.min(limit)),
        (wanted, limit) => wanted.or(limit),
    };
    issue(state, &caller.user, name, expires_at).await
}

/// A new API token for `user`; its secret exists only in the answer.
pub async fn issue_token(
    state: &AppState,
    user: &str,
    name: &str,
    ttl: Option<Duration>,
) -> Result<CreatedToken> {
    issue(state, user, name, ttl.map(after)).await
}

async fn issue(state: &AppState, user: &str, name: &str, expires_at: Option<String>) -> Result<CreatedToken> {
    check_token_name(name)?;
    let token = tokens::generate();
    let info = TokenInfo {
        id: hex::encode(rand::random::<[u8; 6]>()),
        user: user.to_string(),
        name: name.to_string(),
        created_at: crate::store::now(),
        expires_at,
    };
    state.store.insert_user_token(&tokens::hash(&token), &info).await?;
    Ok(CreatedToken { info, token })
}

/// Tokens the caller may see: their own, or (`user`, or `all`, for an admin) others'.
pub async fn tokens_of(
    state: &AppState,
    caller: &Caller,
    user: Option<&str>,
    all: bool,
) -> Result<Vec<TokenInfo>> {
    let whose = match (user, all) {
        (_, true) => None,
        (Some(u), false) => Some(u),
        (None, false) => Some(caller.user.as_str()),
    };
    if whose != Some(caller.user.as_str()) {
        caller.require_platform_admin("listing other users' tokens")?;
    }
    Ok(state.store.user_tokens(whose).await?)
}

/// Revokes one of the caller's tokens (by id or name), or, for an admin, anyone's by id.
pub async fn revoke_token(state: &AppState, caller: &Caller, id_or_name: &str) -> Result<()> {
    if state.store.revoke_token(Some(&caller.user), id_or_name).await? {
        return Ok(());
    }
    if caller.is_platform_admin() && state.store.revoke_token(None, id_or_name).await? {
        return Ok(());
    }
    Err(DomainError::NotFound(format!(
        "you have no token with the id or name {id_or_name:?}; see `paas tokens list`"
    )))
}

/// Replaces the bootstrap admin token (kept in the data directory) with a fresh one; the old
/// one stops working at once.
pub async fn rotate_admin(state: &AppState) -> Result<CreatedToken> {
    let path = state.config.data_dir.join("admin-token");
    let old = std::fs::read_to_string(&path)
        .map_err(|e| DomainError::Internal(anyhow::anyhow!("reading {}: {e}", path.display())))?;
    let old_hash = tokens::hash(old.trim());
    let Some(found) = state.store.user_token(&old_hash).await? else {
        return Err(DomainError::Conflict(
            "the admin token in the data directory is not in use; nothing to rotate".into(),
        ));
    };
    let token = tokens::generate();
    // The new token is on disk (`admin-token.next`) before the store switches to it, and is
    // renamed over the old file after: a crash in between leaves both files, and the next
    // start keeps whichever of them the store knows (`super::bootstrap`).
    let next = state.config.data_dir.join(NEXT_ADMIN_TOKEN);
    let io = |e: std::io::Error| DomainError::Internal(anyhow::anyhow!("writing {}: {e}", next.display()));
    protocol::files::write_private(&next, token.as_bytes()).map_err(io)?;
    state.store.replace_token(&old_hash, &tokens::hash(&token)).await?;
    std::fs::rename(&next, &path).map_err(io)?;
    let info = state
        .store
        .user_tokens(Some(&found.user))
        .await?
        .into_iter()
        .find(|t| t.id == found.id)
        .ok_or_else(|| DomainError::Internal(anyhow::anyhow!("the rotated admin token vanished")))?;
    Ok(CreatedToken { info, token })
}
