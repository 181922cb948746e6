//! Alert rules, alerts and notification targets in state.db (migration 0021).

use super::{Result, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: String,
    pub kind: String,
    pub metric: String,
    pub op: String,
    pub threshold: f64,
    pub for_secs: i64,
    pub app: Option<String>,
    pub env: Option<String>,
    pub enabled: bool,
    pub silenced_until: Option<String>,
    pub description: String,
    pub builtin: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertRow {
    pub rule: String,
    pub subject: String,
    pub app: Option<String>,
    pub env: Option<String>,
    pub state: String,
    pub since: String,
    pub resolved_at: Option<String>,
    pub value: f64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetRow {
    pub id: String,
    pub kind: String,
    /// Sealed (hex).
    pub target: String,
    /// Sealed (hex): a webhook's signing key.
    pub secret: Option<String>,
    pub app: Option<String>,
    pub deploys: bool,
    pub created_at: String,
    pub created_by: String,
}

impl Store {
    pub async fn alert_rules(&self) -> Result<Vec<RuleRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM alert_rules ORDER BY id").fetch_all(ex).await)?)
    }

    pub async fn alert_rule(&self, id: &str) -> Result<Option<RuleRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM alert_rules WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await)?)
    }

    pub async fn insert_alert_rule(&self, r: &RuleRow) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query(
            "INSERT INTO alert_rules (id, kind, metric, op, threshold, for_secs, app, env, enabled, description)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.id)
        .bind(&r.kind)
        .bind(&r.metric)
        .bind(&r.op)
        .bind(r.threshold)
        .bind(r.for_secs)
        .bind(&r.app)
        .bind(&r.env)
        .bind(r.enabled)
        .bind(&r.description)
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    /// Deletes a rule of one's own (with its alerts); false when there is none.
    pub async fn delete_alert_rule(&self, id: &str) -> Result<bool> {
        let done =
            exec!(self.pool, |ex| sqlx::query("DELETE FROM alert_rules WHERE id = $1 AND builtin = FALSE")
                .bind(id)
                .execute(ex)
                .await)?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn update_alert_rule(&self, r: &RuleRow) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE alert_rules SET threshold = $1, for_secs = $2, enabled = $3, silenced_until = $4 WHERE id = $5",
        )
        .bind(r.threshold)
        .bind(r.for_secs)
        .bind(r.enabled)
        .bind(&r.silenced_until)
        .bind(&r.id)
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    pub async fn alerts(&self) -> Result<Vec<AlertRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM alerts ORDER BY state, since DESC")
            .fetch_all(ex)
            .await)?)
    }

    pub async fn put_alert(&self, a: &AlertRow) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO alerts (rule, subject, app, env, state, since, resolved_at, value)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (rule, subject) DO UPDATE SET app = excluded.app, env = excluded.env,
               state = excluded.state, since = excluded.since, resolved_at = excluded.resolved_at,
               value = excluded.value",
        )
        .bind(&a.rule)
        .bind(&a.subject)
        .bind(&a.app)
        .bind(&a.env)
        .bind(&a.state)
        .bind(&a.since)
        .bind(&a.resolved_at)
        .bind(a.value)
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// Environments whose newest release failed: (app, env).
    pub async fn failed_newest_releases(&self) -> Result<Vec<(String, String)>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT r.app, r.env FROM releases r
             WHERE r.status = 'failed'
               AND r.version = (SELECT MAX(version) FROM releases WHERE app = r.app AND env = r.env)",
        )
        .fetch_all(ex)
        .await)?)
    }

    /// Environments whose newest finished restore drill failed: (app, env).
    pub async fn failed_newest_drills(&self) -> Result<Vec<(String, String)>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT DISTINCT b.app, b.env FROM backups b
             WHERE b.verify_status = 'failed'
               AND b.verified_at = (SELECT MAX(verified_at) FROM backups
                                    WHERE app = b.app AND env = b.env AND verify_status IN ('ok', 'failed'))",
        )
        .fetch_all(ex)
        .await)?)
    }

    /// Each database's newest failover news, if that is a failover or a refused one (a later
    /// switchover ends it): (app, env, kind, at).
    pub async fn newest_failovers(&self) -> Result<Vec<(String, String, String, String)>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT e.app, e.env, e.kind, e.at FROM events e
             WHERE e.actor IS NULL AND e.kind IN ('db.failover', 'db.failover.refused')
               AND e.id = (SELECT MAX(id) FROM events WHERE app = e.app AND env = e.env AND actor IS NULL
                             AND kind IN ('db.failover', 'db.failover.refused', 'db.switchover'))",
        )
        .fetch_all(ex)
        .await)?)
    }

    /// Forgets resolved alerts that ended before `before` (RFC 3339).
    pub async fn prune_alerts(&self, before: &str) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "DELETE FROM alerts WHERE state = 'resolved' AND resolved_at < $1"
        )
        .bind(before)
        .execute(ex)
        .await)?;
        Ok(())
    }

    pub async fn notify_targets(&self) -> Result<Vec<TargetRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM notify_targets ORDER BY created_at, id")
            .fetch_all(ex)
            .await)?)
    }

    pub async fn insert_notify_target(&self, t: &TargetRow) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO notify_targets (id, kind, target, secret, app, deploys, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.kind)
        .bind(&t.target)
        .bind(&t.secret)
        .bind(&t.app)
        .bind(t.deploys)
        .bind(&t.created_at)
        .bind(&t.created_by)
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// Deletes target `id`; false when there is none.
    pub async fn delete_notify_target(&self, id: &str) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query("DELETE FROM notify_targets WHERE id = $1")
            .bind(id)
            .execute(ex)
            .await)?;
        Ok(done.rows_affected() > 0)
    }
}
