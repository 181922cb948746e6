//! `[cron.<name>]` in `paas.toml`: scheduled one-off commands of the serving release (Heroku
//! Scheduler, Dokku's cron), with per-environment overrides (`[env.staging.cron.<name>]`, where
//! `enabled = false` turns a job off). Checked here, with no IO, so the CLI refuses a bad
//! schedule before upload with the same sentence the control plane would give.

use super::{parse_duration, DurationValue, ManifestError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One scheduled job as a release runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJob {
    /// The cron expression, normalized (five fields or a macro such as `@daily`, UTC).
    pub schedule: String,
    pub command: Vec<String>,
    /// A run still going after this long is stopped and reported failed.
    pub timeout_secs: u64,
}

/// Longest a job may be given, and what it gets when `timeout` is not set.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
const DEFAULT_TIMEOUT_SECS: u64 = 3600;

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCron {
    schedule: Option<String>,
    command: Option<Vec<String>>,
    timeout: Option<DurationValue>,
    enabled: Option<bool>,
}

impl FileCron {
    /// This job with an environment's override on top.
    fn under(&self, over: Option<&FileCron>) -> FileCron {
        let Some(o) = over else { return self.clone() };
        FileCron {
            schedule: o.schedule.clone().or_else(|| self.schedule.clone()),
            command: o.command.clone().or_else(|| self.command.clone()),
            timeout: o.timeout.clone().or_else(|| self.timeout.clone()),
            enabled: o.enabled.or(self.enabled),
        }
    }
}

/// The jobs of one environment: the top level, then that environment's overrides on top.
pub(super) fn jobs(
    top: &BTreeMap<String, FileCron>,
    over: Option<&BTreeMap<String, FileCron>>,
    env: &str,
) -> Result<BTreeMap<String, CronJob>, ManifestError> {
    let err = |message: String| ManifestError { line: None, message };
    let empty = BTreeMap::new();
    let over = over.unwrap_or(&empty);
    if let Some(name) = over.keys().find(|n| !top.contains_key(*n)) {
        return Err(err(format!(
            "env.{env}.cron.{name} overrides a job that is not defined: add [cron.{name}] at the top level"
        )));
    }
    let mut out = BTreeMap::new();
    for (name, base) in top {
        crate::names::check_process(name).map_err(|e| err(e.to_string().replace("process", "cron job")))?;
        let job = base.under(over.get(name));
        if !job.enabled.unwrap_or(true) {
            continue;
        }
        let key = format!("cron.{name}");
        let schedule = job
            .schedule
            .ok_or_else(|| err(format!("{key}.schedule is missing, e.g. schedule = \"0 3 * * *\"")))?;
        let schedule = schedule
            .parse::<crate::cron::Schedule>()
            .map_err(|e| err(format!("{key}.schedule: {e}")))?
            .to_string();
        let command = job.command.unwrap_or_default();
        if command.first().is_none_or(|c| c.is_empty()) {
            return Err(err(format!(
                "{key}.command must be a non-empty list, e.g. [\"python3\", \"job.py\"]"
            )));
        }
        let timeout_secs = match &job.timeout {
            Some(v) => parse_duration(&format!("{key}.timeout"), v)? / 1000,
            None => DEFAULT_TIMEOUT_SECS,
        };
        if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
            return Err(err(format!("{key}.timeout must be between 1s and 24h")));
        }
        out.insert(name.clone(), CronJob { schedule, command, timeout_secs });
    }
    Ok(out)
}
