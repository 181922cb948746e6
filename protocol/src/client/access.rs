//! The client's calls for users, roles, tokens, sign-in and the audit log.

use super::{Client, ClientError};
use crate::access::{
    AuditEntry, CreateToken, CreateUser, CreatedToken, GrantRole, Login, Role, Session, TokenInfo, TotpSetup,
    User,
};
use serde_json::{json, Value};

/// Escapes one path segment (user names are plain, but `*` and token names need not be).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    async fn delete<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http().delete(self.url(path))).await
    }

    /// Signs in with a password; the answer holds a new API token.
    pub async fn login(&self, login: &Login) -> Result<CreatedToken, ClientError> {
        self.post("/api/v1/login", login).await
    }

    /// Starts a console session.
    pub async fn start_session(&self, login: &Login) -> Result<Session, ClientError> {
        self.post("/api/v1/sessions", login).await
    }

    /// Ends the session this client calls with.
    pub async fn end_session(&self) -> Result<Value, ClientError> {
        self.delete("/api/v1/sessions/current").await
    }

    pub async fn users(&self) -> Result<Vec<User>, ClientError> {
        self.get("/api/v1/users").await
    }

    pub async fn add_user(&self, name: &str, password: Option<String>) -> Result<User, ClientError> {
        self.post("/api/v1/users", &CreateUser { name: name.to_string(), password }).await
    }

    pub async fn remove_user(&self, name: &str) -> Result<Value, ClientError> {
        self.delete(&format!("/api/v1/users/{}", seg(name))).await
    }

    pub async fn set_password(&self, name: &str, password: &str) -> Result<Value, ClientError> {
        self.post(&format!("/api/v1/users/{}/password", seg(name)), &json!({ "password": password })).await
    }

    pub async fn grant(&self, name: &str, app: &str, role: Role) -> Result<User, ClientError> {
        let body = GrantRole { app: app.to_string(), role };
        self.post(&format!("/api/v1/users/{}/grants", seg(name)), &body).await
    }

    pub async fn revoke(&self, name: &str, app: &str) -> Result<User, ClientError> {
        self.delete(&format!("/api/v1/users/{}/grants/{}", seg(name), seg(app))).await
    }

    pub async fn enable_totp(&self) -> Result<TotpSetup, ClientError> {
        self.post("/api/v1/me/totp", &json!({})).await
    }

    pub async fn disable_totp(&self, name: &str) -> Result<Value, ClientError> {
        self.delete(&format!("/api/v1/users/{}/totp", seg(name))).await
    }

    /// The caller's tokens, or `user`'s, or (`all`) everyone's.
    pub async fn tokens(&self, user: Option<&str>, all: bool) -> Result<Vec<TokenInfo>, ClientError> {
        let query = match user {
            Some(u) => format!("?user={}", seg(u)),
            None if all => "?all=true".to_string(),
            None => String::new(),
        };
        self.get(&format!("/api/v1/tokens{query}")).await
    }

    pub async fn create_token(&self, name: &str, ttl_secs: Option<u64>) -> Result<CreatedToken, ClientError> {
        self.post("/api/v1/tokens", &CreateToken { name: name.to_string(), ttl_secs }).await
    }

    pub async fn revoke_token(&self, id_or_name: &str) -> Result<Value, ClientError> {
        self.delete(&format!("/api/v1/tokens/{}", seg(id_or_name))).await
    }

    pub async fn rotate_admin_token(&self) -> Result<CreatedToken, ClientError> {
        self.post("/api/v1/tokens/rotate-admin", &json!({})).await
    }

    /// Audit entries, newest first; `since` is a duration such as `1d`.
    pub async fn audit(
        &self,
        app: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<AuditEntry>, ClientError> {
        let mut query = vec![];
        if let Some(a) = app {
            query.push(format!("app={}", seg(a)));
        }
        if let Some(s) = since {
            query.push(format!("since={}", seg(s)));
        }
        self.get(&format!("/api/v1/audit?{}", query.join("&"))).await
    }
}
