//! `[cron]` jobs of `paas.toml`: each minute, the scheduled commands of every environment's
//! serving release run as one-off jobs (as `paas run` does: a fresh container of the release,
//! with its config, on the build node), their output in the central log under the process
//! `cron-<name>`. A run's id is fixed by job and minute, so a restarted control plane, or two
//! passes over one minute, never starts it twice. A run still going when the next is due is not
//! doubled: the new one is skipped with a warning event. Failures are warning events; the newest
//! runs of each job are kept.

use crate::assign;
use crate::cron::Schedule;
use crate::error::Result;
use crate::state::AppState;
use crate::store::unix_now;
use crate::store::{CronRunRow, EnvRow, JobKind, JobRow, JobStatus, NewEvent};
use protocol::api::{CronRun, CronStatus};
use protocol::manifest::CronJob;
use std::collections::HashSet;
use std::time::Duration;

/// Runs kept per job (their rows and output); older ones are deleted.
const KEEP_RUNS: i64 = 50;
/// Minutes a late pass still catches up on (a busy machine, a suspended VM); a control plane
/// that was down longer does not run what it missed, as cron does not.
const CATCH_UP_MINUTES: i64 = 3;
/// Who the activity feed and the jobs table say started a run.
const BY: &str = "platform";
/// A run its node has not reported ended this long after its timeout is given up on.
const LOST_AFTER: Duration = Duration::from_secs(300);

/// The id of `name`'s run at `minute` (unix minutes). `--` separates the parts, as in Docker
/// names: no app, environment or job name contains it.
fn run_id(app: &str, env: &str, name: &str, minute: i64) -> String {
    format!("{}{minute}", run_prefix(app, env, name))
}

fn run_prefix(app: &str, env: &str, name: &str) -> String {
    format!("cron-{app}--{env}--{name}--")
}

/// The `[cron]` job a run's id belongs to.
pub fn job_name(id: &str) -> Option<&str> {
    let parts: Vec<&str> = id.strip_prefix("cron-")?.split("--").collect();
    match parts.as_slice() {
        [_, _, name, _] => Some(name),
        _ => None,
    }
}

/// The process a run's output is logged under.
pub fn process(id: &str) -> String {
    format!("cron-{}", job_name(id).unwrap_or("job"))
}

/// The scheduler: a pass at the start of every minute until shutdown.
pub async fn run(state: AppState) {
    let stop = state.shutting_down();
    // The current minute is looked at on start: what a run before the restart started in it
    // has its id already and is not started again.
    let mut done_through = unix_now() / 60 - 1;
    let mut skipped = HashSet::new();
    loop {
        let now = unix_now() / 60;
        for minute in (done_through + 1).max(now - CATCH_UP_MINUTES + 1)..=now {
            if let Err(e) = pass(&state, minute, &mut skipped).await {
                tracing::warn!(error = %format!("{e:#}"), minute, "the cron pass failed");
            }
        }
        done_through = now;
        // Ids of runs long over; a run holding others back for this many is no longer one.
        if skipped.len() > 10_000 {
            skipped.clear();
        }
        let into_minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(Duration::ZERO, |d| Duration::from_millis((d.as_millis() % 60_000) as u64));
        let wait = Duration::from_secs(60).saturating_sub(into_minute) + Duration::from_millis(200);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Starts the runs due at `minute` (unix minutes) in every environment.
/// `skipped`: the runs whose overlap was reported already.
async fn pass(state: &AppState, minute: i64, skipped: &mut HashSet<String>) -> anyhow::Result<()> {
    let at = minute * 60;
    for env in state.store.all_envs().await? {
        let Some(version) = env.current_release else { continue };
        let release = state.store.get_release(&env.app, &env.name, version).await?;
        for (name, job) in &release.manifest.cron {
            let Ok(schedule) = job.schedule.parse::<Schedule>() else { continue };
            if schedule.next_after(at - 1) != Some(at) {
                continue;
            }
            if let Err(e) = start(state, &env, version, name, job, minute, skipped).await {
                let error = format!("{e:#}");
                tracing::warn!(app = %env.app, env = %env.name, release = version, job = %name, error, "a cron run did not start");
                let message = format!("Cron job {name} did not start: {error}");
                warn(state, &env.app, &env.name, "cron.failed", &message, version).await;
            }
        }
    }
    Ok(())
}

async fn start(
    state: &AppState,
    env: &EnvRow,
    version: u32,
    name: &str,
    job: &CronJob,
    minute: i64,
    skipped: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let (app, env_name) = (env.app.as_str(), env.name.as_str());
    let prefix = run_prefix(app, env_name, name);
    let id = run_id(app, env_name, name, minute);
    let runs = state.store.cron_runs(app, env_name).await?;
    if let Some(going) = runs.iter().find(|r| r.id.starts_with(&prefix) && r.status == JobStatus::Pending) {
        if going.id == id {
            return Ok(());
        }
        let age = minute * 60 - crate::store::unix_seconds(&going.created_at).unwrap_or(minute * 60);
        if age <= (job.timeout_secs + LOST_AFTER.as_secs()) as i64 {
            // One warning per run that holds the others back, not one a minute.
            if skipped.insert(going.id.clone()) {
                let message = format!(
                    "Cron job {name} skipped a run: the one started at {} is still going",
                    going.created_at
                );
                tracing::warn!(app, env = env_name, job = name, "{message}");
                warn(state, app, env_name, "cron.skipped", &message, version).await;
            }
            return Ok(());
        }
        // Its node never reported the end (lost, or its agent gone): the run is over for us.
        let error = "its node never reported how it ended (was the node lost?)";
        state.store.finish_job(&going.id, None, Some(error)).await?;
        finished(state, &state.store.get_job(&going.id).await?).await;
    }
    let row = JobRow {
        id: id.clone(),
        app: app.to_string(),
        env: env_name.to_string(),
        release: version,
        node: assign::build_node(state).await?,
        kind: JobKind::Cron,
        command: job.command.clone(),
        status: JobStatus::Pending,
        exit_code: None,
        error: None,
        attach_tty: None,
    };
    if state.store.create_job(&row, BY).await? {
        tracing::info!(app, env = env_name, release = version, job = name, run = %id, "cron run started");
        state.bump();
        state.store.prune_cron_runs(app, env_name, &prefix, KEEP_RUNS).await?;
    }
    Ok(())
}

async fn warn(state: &AppState, app: &str, env: &str, kind: &str, message: &str, version: u32) {
    state.record_event(&NewEvent::new(app, env, kind, message).severity("warning").release(version)).await;
    state.events_changed();
}

/// Called when a run ends: a failure is a warning event (its output is in the logs).
pub async fn finished(state: &AppState, job: &JobRow) {
    let name = job_name(&job.id).unwrap_or("?");
    let why = match (&job.error, job.exit_code) {
        (Some(e), _) => e.clone(),
        (None, Some(0)) => return,
        (None, Some(code)) => format!("exit code {code}"),
        (None, None) => "it ended without an exit code".to_string(),
    };
    let message = format!("Cron job {name} (v{}) failed: {why}", job.release);
    warn(state, &job.app, &job.env, "cron.failed", &message, job.release).await;
}

/// The serving release's `[cron]` jobs with their next and last runs.
pub async fn list(state: &AppState, app: &str, env: &str) -> Result<Vec<CronStatus>> {
    let row = state.store.get_env(app, env).await?;
    let Some(version) = row.current_release else { return Ok(Vec::new()) };
    let release = state.store.get_release(app, env, version).await?;
    let runs = state.store.cron_runs(app, env).await?;
    let now = unix_now();
    Ok(release
        .manifest
        .cron
        .iter()
        .map(|(name, job)| {
            let schedule = job.schedule.parse::<Schedule>().ok();
            let next_run = schedule.and_then(|s| s.next_after(now)).map(crate::store::rfc3339);
            let last = runs.iter().find(|r| job_name(&r.id) == Some(name.as_str()));
            CronStatus {
                name: name.clone(),
                schedule: job.schedule.clone(),
                command: job.command.clone(),
                timeout_secs: job.timeout_secs,
                next_run,
                last_run: last.map(run_view),
            }
        })
        .collect())
}

fn run_view(r: &CronRunRow) -> CronRun {
    let status = match (r.status, r.exit_code, &r.error) {
        (JobStatus::Pending, _, _) => "running",
        (_, Some(0), None) => "succeeded",
        _ => "failed",
    };
    CronRun {
        id: r.id.clone(),
        release: r.release,
        started_at: r.created_at.clone(),
        status: status.to_string(),
        exit_code: r.exit_code,
        error: r.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_name_their_job_unambiguously() {
        let id = run_id("shop", "eu-prod", "clean-up", 29_000_000);
        assert_eq!(id, "cron-shop--eu-prod--clean-up--29000000");
        assert_eq!(job_name(&id), Some("clean-up"));
        assert_eq!(process(&id), "cron-clean-up");
        // Job `a` and job `a-b`: one's prefix is not the other's.
        assert!(!run_id("x", "p", "a-b", 1).starts_with(&run_prefix("x", "p", "a")));
        assert_eq!(job_name("run-abc"), None);
    }
}
