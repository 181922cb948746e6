//! Wire types of users, roles, API tokens, sign-in and the audit log.

use serde::{Deserialize, Serialize};

crate::string_enum! {
    /// What a user may do on an app (or on every app). Ordered: each role can do what the ones
    /// before it can.
    #[derive(PartialOrd, Ord)]
    pub enum Role {
        /// Reads the app, its releases, logs and metrics; config values stay masked.
        Viewer = "viewer",
        /// Also deploys, rolls back, scales, changes config, runs commands and backs up.
        Deployer = "deployer",
        /// Everything on the app; on every app (`*`), also users and nodes.
        Admin = "admin",
    }
}

/// Every app: a grant on this covers apps made later too.
pub const ALL_APPS: &str = "*";

/// A role on one app, or on every app (`app` = `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub app: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub grants: Vec<Grant>,
    /// Whether the user can sign in with a password (else only with a token).
    pub password: bool,
    /// Whether console sign-in asks for a one-time code.
    pub totp: bool,
    pub created_at: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRole {
    pub app: String,
    pub role: Role,
}

/// A named API token, as listed: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateToken {
    pub name: String,
    /// Lifetime in seconds; `None` for a token that lasts until revoked.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}

/// Signing in with a password, for the CLI (which gets a token) or the console (a session).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Login {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    /// Instead of a user name and password: an API token, whose user the session is for.
    #[serde(default)]
    pub token: Option<String>,
    /// The address the console's visitor signs in from; believed only with `console_key`.
    #[serde(default)]
    pub client_addr: Option<String>,
    /// The key the control plane gave its own console, so the console may say who signs in.
    #[serde(default)]
    pub console_key: Option<String>,
    /// The one-time code, for users with a second factor.
    #[serde(default)]
    pub code: Option<String>,
    /// What the token is called (`paas login` names it after the machine).
    #[serde(default)]
    pub token_name: Option<String>,
}

/// A console session: its id is the cookie, and the bearer the console calls the API with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user: String,
    pub expires_at: String,
}

/// A second factor just enabled: the secret, once, for an authenticator app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TotpSetup {
    pub secret: String,
    pub url: String,
}

/// One change made by a user, as the audit log shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub user: String,
    /// What was done, e.g. `config.change`, `deploy.create`, `user.grant`.
    pub action: String,
    pub app: String,
    pub env: String,
    /// The client's address.
    pub addr: String,
    /// `ok`, `denied` or `failed`, with the status the API answered.
    pub outcome: String,
    pub detail: String,
}

// Written by hand so a password, token or key never reaches a log through `{:?}`.
impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser").field("name", &self.name).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("client_addr", &self.client_addr)
            .finish_non_exhaustive()
    }
}
