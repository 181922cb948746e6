//! Users, their grants, named API tokens, console sessions and the audit log (user changes in
//! the one events table). Secrets appear here only as hashes (tokens, session ids, passwords)
//! or sealed (TOTP secrets).

use super::{now, Result, Store, StoreError};
use protocol::access::{AuditEntry, Grant, Role, TokenInfo};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub name: String,
    /// argon2id PHC string; `None` for a user who signs in with tokens only.
    pub password_hash: Option<String>,
    /// Sealed TOTP secret (base64), when the user has a second factor.
    pub totp_secret: Option<String>,
    pub created_at: String,
}

/// A user token found by its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserToken {
    pub id: String,
    pub user: String,
    pub expires_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    app: String,
    #[sqlx(try_from = "String")]
    role: Role,
}

impl From<GrantRow> for Grant {
    fn from(r: GrantRow) -> Self {
        Grant { app: r.app, role: r.role }
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: String,
    actor: String,
    kind: String,
    app: String,
    env: String,
    addr: String,
    outcome: String,
    message: String,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        let AuditRow { id, at, actor, kind, app, env, addr, outcome, message } = r;
        AuditEntry { id, at, user: actor, action: kind, app, env, addr, outcome, detail: message }
    }
}

/// A change to record in the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord<'a> {
    pub user: &'a str,
    pub action: &'a str,
    pub app: &'a str,
    pub env: &'a str,
    pub addr: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub app: Option<String>,
    /// RFC 3339: only entries at or after this.
    pub since: Option<String>,
    /// Apps the reader may see; `None` for every app and the platform's own entries.
    pub visible: Option<Vec<String>>,
    pub limit: u32,
}

/// How many audit entries of changes are kept (the oldest go first), and of refused attempts.
pub const AUDIT_KEEP: i64 = 200_000;
pub const AUDIT_KEEP_DENIED: i64 = 20_000;

/// Refuses when `user` is the only admin of every app: without one, no one could manage users.
async fn last_admin_check(tx: &mut super::Tx, user: &str) -> Result<()> {
    let (is_admin, others): (bool, i64) = on!(tx, |ex| sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM grants WHERE app = '*' AND role = 'admin' AND \"user\" = $1),
                (SELECT COUNT(*) FROM grants WHERE app = '*' AND role = 'admin' AND \"user\" != $2)",
    )
    .bind(user)
    .bind(user)
    .fetch_one(ex)
    .await)?;
    if is_admin && others == 0 {
        return Err(StoreError::Conflict(format!(
            "{user:?} is the last admin of every app; make another user admin first"
        )));
    }
    Ok(())
}

impl Store {
    // --- users ---

    /// Adds a user; `Conflict` when the name is taken.
    pub async fn add_user(&self, name: &str, password_hash: Option<&str>) -> Result<()> {
        let done = exec!(self.pool, |ex| {
            sqlx::query(
            "INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now())
        .execute(ex)
        .await
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("there is already a user named {name:?}")));
        }
        Ok(())
    }

    /// Makes `name` a user who is admin of every app, unless the user exists (then their
    /// grants, as admins changed them, stay).
    pub async fn ensure_admin_user(&self, name: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let added = exec!(tx, |ex| sqlx::query(
            "INSERT INTO users (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
        )
        .bind(name)
        .bind(now())
        .execute(ex)
        .await)?;
        if added.rows_affected() > 0 {
            exec!(tx, |ex| sqlx::query(
                "INSERT INTO grants (\"user\", app, role) VALUES ($1, '*', 'admin') ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .execute(ex)
            .await)?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT name, password_hash, totp_secret, created_at FROM users WHERE name = $1"
        )
        .bind(name)
        .fetch_optional(ex)
        .await)?)
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT name, password_hash, totp_secret, created_at FROM users ORDER BY name"
        )
        .fetch_all(ex)
        .await)?)
    }

    pub async fn set_password(&self, name: &str, password_hash: Option<&str>) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query("UPDATE users SET password_hash = $1 WHERE name = $2")
            .bind(password_hash)
            .bind(name)
            .execute(ex)
            .await)?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_totp(&self, name: &str, sealed: Option<&str>) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query("UPDATE users SET totp_secret = $1 WHERE name = $2")
            .bind(sealed)
            .bind(name)
            .execute(ex)
            .await)?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a user with their grants, tokens and sessions, unless they are the last admin of
    /// every app (then no one could manage users any more).
    pub async fn remove_user(&self, name: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        last_admin_check(&mut tx, name).await?;
        exec!(tx, |ex| sqlx::query("DELETE FROM tokens WHERE \"user\" = $1 AND kind = 'user'")
            .bind(name)
            .execute(ex)
            .await)?;
        let done =
            exec!(tx, |ex| sqlx::query("DELETE FROM users WHERE name = $1").bind(name).execute(ex).await)?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // --- grants ---

    pub async fn has_platform_admin(&self) -> Result<bool> {
        Ok(on!(self.pool, |ex| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM grants WHERE app = '*' AND role = 'admin')"
        )
        .fetch_one(ex)
        .await)?)
    }

    pub async fn grants_of(&self, user: &str) -> Result<Vec<Grant>> {
        let rows: Vec<GrantRow> = on!(self.pool, |ex| sqlx::query_as(
            "SELECT app, role FROM grants WHERE \"user\" = $1 ORDER BY app"
        )
        .bind(user)
        .fetch_all(ex)
        .await)?;
        Ok(rows.into_iter().map(Grant::from).collect())
    }

    /// Gives `user` `role` on `app`, replacing the role they had there; refuses to make the
    /// last admin of every app less than that.
    pub async fn grant(&self, user: &str, app: &str, role: Role) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if app == protocol::access::ALL_APPS && role != Role::Admin {
            last_admin_check(&mut tx, user).await?;
        }
        exec!(tx, |ex| sqlx::query(
            "INSERT INTO grants (\"user\", app, role) VALUES ($1, $2, $3)
             ON CONFLICT (\"user\", app) DO UPDATE SET role = excluded.role",
        )
        .bind(user)
        .bind(app)
        .bind(role.as_str())
        .execute(ex)
        .await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes `user`'s role on `app` away; refuses to take the last admin of every app's.
    pub async fn revoke(&self, user: &str, app: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        if app == protocol::access::ALL_APPS {
            last_admin_check(&mut tx, user).await?;
        }
        let done = exec!(tx, |ex| sqlx::query("DELETE FROM grants WHERE \"user\" = $1 AND app = $2")
            .bind(user)
            .bind(app)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    // --- named user tokens ---

    pub async fn insert_user_token(&self, hash: &str, info: &TokenInfo) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO tokens (hash, id, \"user\", name, kind, created_at, expires_at) VALUES ($1, $2, $3, $4, 'user', $5, $6)",
        )
        .bind(hash)
        .bind(&info.id)
        .bind(&info.user)
        .bind(&info.name)
        .bind(&info.created_at)
        .bind(&info.expires_at)
        .execute(ex)
        .await)
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(format!("{} already has a token named {:?}", info.user, info.name))
            }
            e => e.into(),
        })?;
        Ok(())
    }

    /// A user token by its hash, whatever its expiry (the caller decides).
    pub async fn user_token(&self, hash: &str) -> Result<Option<UserToken>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT COALESCE(id, substr(hash, 1, 12)) AS id, \"user\", expires_at FROM tokens
             WHERE hash = $1 AND kind = 'user'",
        )
        .bind(hash)
        .fetch_optional(ex)
        .await)?)
    }

    /// Tokens of `user`, or everyone's.
    pub async fn user_tokens(&self, user: Option<&str>) -> Result<Vec<TokenInfo>> {
        let rows: Vec<(String, String, String, String, Option<String>)> = on!(self.pool, |ex| {
            sqlx::query_as(
            "SELECT COALESCE(id, substr(hash, 1, 12)), \"user\", COALESCE(name, ''), created_at, expires_at
             FROM tokens WHERE kind = 'user' AND ($1 IS NULL OR \"user\" = $2) ORDER BY \"user\", created_at",
        )
        .bind(user)
        .bind(user)
        .fetch_all(ex)
        .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(id, user, name, created_at, expires_at)| TokenInfo {
                id,
                user,
                name,
                created_at,
                expires_at,
            })
            .collect())
    }

    /// Deletes a token: of `owner` by id or name, or (`None`, for an admin) anyone's by id.
    /// True when there was one.
    pub async fn revoke_token(&self, owner: Option<&str>, id_or_name: &str) -> Result<bool> {
        let done = match owner {
            Some(user) => exec!(self.pool, |ex| sqlx::query(
                r#"DELETE FROM tokens WHERE kind = 'user' AND "user" = $1 AND (id = $2 OR name = $3)"#
            )
            .bind(user)
            .bind(id_or_name)
            .bind(id_or_name)
            .execute(ex)
            .await)?,
            None => exec!(self.pool, |ex| sqlx::query("DELETE FROM tokens WHERE kind = 'user' AND id = $1")
                .bind(id_or_name)
                .execute(ex)
                .await)?,
        };
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the bootstrap admin token (the one in the data directory) with `hash`.
    pub async fn replace_token(&self, old_hash: &str, new_hash: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| sqlx::query("UPDATE tokens SET hash = $1, created_at = $2 WHERE hash = $3")
            .bind(new_hash)
            .bind(now())
            .bind(old_hash)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the token `hash` its user's token called `name`, renaming any other of that name
    /// (the admin token made again after its file was deleted takes over the name).
    pub async fn name_token(&self, hash: &str, id: &str, name: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| {
            sqlx::query(
            "UPDATE tokens SET name = name || '-' || COALESCE(id, substr(hash, 1, 12))
             WHERE kind = 'user' AND name = $1 AND hash != $2 AND \"user\" = (SELECT \"user\" FROM tokens WHERE hash = $3)",
        )
        .bind(name)
        .bind(hash)
        .bind(hash)
        .execute(ex)
        .await
        })?;
        exec!(tx, |ex| sqlx::query("UPDATE tokens SET id = COALESCE(id, $1), name = $2 WHERE hash = $3")
            .bind(id)
            .bind(name)
            .bind(hash)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        Ok(())
    }

    // --- console sessions ---

    pub async fn insert_session(&self, hash: &str, user: &str, addr: &str, expires_at: &str) -> Result<()> {
        // Expired sessions go here, at a sign-in, rather than on every request.
        exec!(self.pool, |ex| sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(crate::access::signin::timestamp(time::OffsetDateTime::now_utc()))
            .execute(ex)
            .await)?;
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO sessions (hash, \"user\", addr, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)"
        )
        .bind(hash)
        .bind(user)
        .bind(addr)
        .bind(now())
        .bind(expires_at)
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// The user and expiry of a session that has not expired at `at`. Only reads: a request
    /// with a made-up session id must not cost a write.
    pub async fn session_user(&self, hash: &str, at: &str) -> Result<Option<(String, String)>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT \"user\", expires_at FROM sessions WHERE hash = $1 AND expires_at > $2"
        )
        .bind(hash)
        .bind(at)
        .fetch_optional(ex)
        .await)?)
    }

    /// Ends every session of `user` (a new password or second factor).
    pub async fn end_sessions_of(&self, user: &str) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("DELETE FROM sessions WHERE \"user\" = $1")
            .bind(user)
            .execute(ex)
            .await)?;
        exec!(self.pool, |ex| sqlx::query(
            "DELETE FROM tokens WHERE kind = 'user' AND \"user\" = $1 AND name LIKE 'login%'"
        )
        .bind(user)
        .execute(ex)
        .await)?;
        Ok(())
    }

    pub async fn delete_session(&self, hash: &str) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(hash)
            .execute(ex)
            .await)?;
        Ok(done.rows_affected() > 0)
    }

    // --- audit log ---

    /// Records a change. The log keeps the newest [`AUDIT_KEEP`] entries, so a client sending
    /// refused requests all day cannot fill the disk with them.
    pub async fn record_audit(&self, r: &AuditRecord<'_>) -> Result<()> {
        let id: i64 = on!(self.pool, |ex| sqlx::query_scalar(
            "INSERT INTO events (at, app, env, kind, severity, message, actor, addr, outcome)
             VALUES ($1, $2, $3, $4, 'info', $5, $6, $7, $8) RETURNING id",
        )
        .bind(now())
        .bind(r.app)
        .bind(r.env)
        .bind(r.action)
        .bind(r.detail)
        .bind(r.user)
        .bind(r.addr)
        .bind(r.outcome)
        .fetch_one(ex)
        .await)?;
        if id % 1000 == 0 {
            // Refused attempts have a smaller cap of their own, so a client sending them all day
            // cannot push the record of real changes out.
            for (denied, keep) in [(true, AUDIT_KEEP_DENIED), (false, AUDIT_KEEP)] {
                exec!(self.pool, |ex| sqlx::query(
                    "DELETE FROM events WHERE actor IS NOT NULL AND (outcome = 'denied') = $1 AND id <= (
                     SELECT id FROM events WHERE actor IS NOT NULL AND (outcome = 'denied') = $2
                     ORDER BY id DESC LIMIT 1 OFFSET $3)",
                )
                .bind(denied)
                .bind(denied)
                .bind(keep)
                .execute(ex)
                .await)?;
            }
        }
        self.event_added();
        Ok(())
    }

    /// The newest entries matching `f`, newest first.
    pub async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let visible = f.visible.as_ref().map(|apps| serde_json::to_string(apps).expect("a list of strings"));
        let visible_apps = self.json_strings("$6");
        let rows: Vec<AuditRow> = on!(self.pool, |ex| {
            sqlx::query_as(&format!(
            "SELECT id, at, actor, kind, app, env, COALESCE(addr, '') AS addr, COALESCE(outcome, '') AS outcome,
                    message FROM events WHERE actor IS NOT NULL
               AND ($1 IS NULL OR app = $2)
               AND ($3 IS NULL OR at >= $4)
               AND ($5 IS NULL OR app IN ({visible_apps}))
             ORDER BY id DESC LIMIT $7"
        ))
        .bind(&f.app)
        .bind(&f.app)
        .bind(&f.since)
        .bind(&f.since)
        .bind(&visible)
        .bind(&visible)
        .bind(super::int(f.limit))
        .fetch_all(ex)
        .await
        })?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_admin_of_every_app_stays_one() {
        let store = Store::open_in_memory().await.unwrap();
        store.ensure_admin_user("admin").await.unwrap();
        let refused = |r: Result<()>| matches!(r, Err(StoreError::Conflict(m)) if m.contains("last admin"));
        assert!(refused(store.remove_user("admin").await.map(|_| ())));
        assert!(refused(store.revoke("admin", "*").await.map(|_| ())));
        assert!(refused(store.grant("admin", "*", Role::Viewer).await));
        // With a second admin, the first may go.
        store.add_user("root2", None).await.unwrap();
        store.grant("root2", "*", Role::Admin).await.unwrap();
        store.grant("admin", "*", Role::Viewer).await.unwrap();
        assert!(refused(store.remove_user("root2").await.map(|_| ())));
        assert!(store.remove_user("admin").await.unwrap());
        // A user who exists keeps their grants at the next start.
        store.ensure_admin_user("root2").await.unwrap();
        store.grant("root2", "shop", Role::Viewer).await.unwrap();
        assert_eq!(store.grants_of("root2").await.unwrap().len(), 2);
    }
}
