//! Per-app log retention: an app may keep its lines for less time or in less space than the
//! store's own limits (`paas apps log-retention`); the store's limits still apply to every app.
//! Space is freed a segment at a time, oldest first.

use super::meta::{chain_key, Entry, Limits};
use super::store::{trim_size, LogStore, Trimmed};
use protocol::logs::LogRetention;

impl LogStore {
    /// The app's own limits (`None`: the store's).
    pub async fn app_limits(&self, app: &str) -> anyhow::Result<(Option<u64>, Option<u64>)> {
        let l = self.lock().state.limits.get(app).copied().unwrap_or_default();
        Ok((l.age_secs, l.max_bytes))
    }

    /// Sets the app's limits; both `None` returns it to the store's.
    pub async fn set_app_limits(
        &self,
        app: &str,
        age_secs: Option<u64>,
        max_bytes: Option<u64>,
    ) -> anyhow::Result<()> {
        let (app, limits) = (app.to_string(), Limits { age_secs, max_bytes });
        self.blocking(move |s| s.record(Entry::Limits { app, limits })).await
    }

    /// Applies every app's own limits at `now` (unix ns); what goes is recorded as dropped.
    pub async fn trim_apps(&self, now: i64) -> anyhow::Result<Trimmed> {
        self.blocking(move |s| {
            let mut trimmed = Trimmed::default();
            let apps: Vec<(String, Limits)> = s.state.limits.iter().map(|(a, l)| (a.clone(), *l)).collect();
            for (app, limits) in apps {
                let prefix = chain_key(&app, "");
                let of_app = |k: &str| k.starts_with(&prefix);
                if let Some(age) = limits.age_secs {
                    let cutoff = now
                        .saturating_sub(i64::try_from(age).unwrap_or(i64::MAX).saturating_mul(1_000_000_000));
                    let keys: Vec<String> = s.chains.keys().filter(|k| of_app(k)).cloned().collect();
                    for k in keys {
                        let floor = s.age_floor(&k, cutoff)?;
                        trimmed.by_age += s.raise_floor(&k, floor, "age")?;
                    }
                }
                if let Some(max) = limits.max_bytes {
                    trimmed.by_size += trim_size(s, max, of_app)?;
                }
            }
            Ok(trimmed)
        })
        .await
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
