//! Per-app log retention: an app may keep its lines for less time or in less space than the
//! store's own limits (`paas apps log-retention`); the store's limits still apply to every app.

use super::store::{LogStore, Trimmed, DELETE_CHUNK};
use protocol::logs::LogRetention;

/// Stored lines take about this many times their text (the row and the text index).
const BYTES_PER_TEXT_BYTE: u64 = 3;

impl LogStore {
    /// The app's own limits (`None`: the store's).
    pub async fn app_limits(&self, app: &str) -> anyhow::Result<(Option<u64>, Option<u64>)> {
        let row: Option<(Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT age_secs, max_bytes FROM app_limits WHERE app = ?")
                .bind(app)
                .fetch_optional(&self.pool)
                .await?;
        let (age, max) = row.unwrap_or((None, None));
        Ok((age.and_then(|a| u64::try_from(a).ok()), max.and_then(|m| u64::try_from(m).ok())))
    }

    /// Sets the app's limits; both `None` returns it to the store's.
    pub async fn set_app_limits(
        &self,
        app: &str,
        age_secs: Option<u64>,
        max_bytes: Option<u64>,
    ) -> anyhow::Result<()> {
        let as_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        if age_secs.is_none() && max_bytes.is_none() {
            sqlx::query("DELETE FROM app_limits WHERE app = ?").bind(app).execute(&self.pool).await?;
        } else {
            sqlx::query(
                "INSERT INTO app_limits (app, age_secs, max_bytes) VALUES (?, ?, ?)
                 ON CONFLICT (app) DO UPDATE SET age_secs = excluded.age_secs, max_bytes = excluded.max_bytes",
            )
            .bind(app)
            .bind(as_i64(age_secs))
            .bind(as_i64(max_bytes))
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Applies every app's own limits at `now` (unix ns); what goes is recorded as dropped.
    pub async fn trim_apps(&self, now: i64) -> anyhow::Result<Trimmed> {
        let apps: Vec<(String, Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT app, age_secs, max_bytes FROM app_limits").fetch_all(&self.pool).await?;
        let mut trimmed = Trimmed::default();
        for (app, age, max) in apps {
            // Names were checked when set; checked again as they go into the statement.
            let Ok(app) = protocol::AppName::new(app.as_str()) else { continue };
            let app = app.as_str();
            if let Some(age) = age {
                let cutoff = now.saturating_sub(age.saturating_mul(1_000_000_000));
                let pick = format!(
                    "id IN (SELECT id FROM lines WHERE app = '{app}' AND at < ? ORDER BY id LIMIT ?)"
                );
                loop {
                    let n = self.delete_where(&pick, cutoff, "age").await?;
                    trimmed.by_age += n;
                    if n < DELETE_CHUNK as u64 {
                        break;
                    }
                }
            }
            if let Some(max) = max.and_then(|m| u64::try_from(m).ok()) {
                let (count, text): (i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*), COALESCE(SUM(length(CAST(text AS BLOB))), 0) FROM lines WHERE app = ?",
                )
                .bind(app)
                .fetch_one(&self.pool)
                .await?;
                let used = u64::try_from(text).unwrap_or(0) * BYTES_PER_TEXT_BYTE;
                if used > max {
                    // Down to 90% of the limit, as the store's own trim does.
                    let over = used - max * 9 / 10;
                    let count = u64::try_from(count).unwrap_or(0);
                    let mut left = ((count as u128 * over as u128).div_ceil(used as u128) as u64).max(1);
                    let pick =
                        format!("id IN (SELECT id FROM lines WHERE app = '{app}' ORDER BY id LIMIT ?)");
                    while left > 0 {
                        let n =
                            self.delete_where(&pick, left.min(DELETE_CHUNK as u64) as i64, "size").await?;
                        trimmed.by_size += n;
                        if n == 0 {
                            break;
                        }
                        left = left.saturating_sub(n);
                    }
                }
            }
        }
        Ok(trimmed)
    }
}

/// The answer of `GET .../logs/retention`: the app's limits and the store's.
pub fn view(app: (Option<u64>, Option<u64>), store: super::Retention) -> LogRetention {
    LogRetention {
        age_secs: app.0,
        max_mib: app.1.map(|b| b >> 20),
        store_age_secs: store.age.as_secs(),
        store_max_mib: store.max_bytes >> 20,
    }
}
