//! One-off commands (`paas run`): a job in a fresh container of the serving release, with its
//! config, and its output read back as it comes.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::{JobKind, JobRow, JobStatus};
use protocol::api::RunOutput;
use std::time::Duration;

/// Queues `command` on the build node; returns the run's id.
pub async fn start(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    command: Vec<String>,
    attach: Option<protocol::api::Attach>,
) -> Result<String> {
    if command.first().is_none_or(|c| c.is_empty()) {
        let why = "give the command to run, e.g. `paas run --app A -- ls -l`";
        return Err(DomainError::Invalid(why.into()));
    }
    let release = state
        .store
        .get_env(app, env)
        .await?
        .current_release
        .ok_or_else(|| DomainError::Conflict(format!("{app}/{env} runs no release yet; deploy first")))?;
    let node = crate::assign::build_node(state).await?;
    let id = new_id("run");
    let job = JobRow {
        id: id.clone(),
        app: app.to_string(),
        env: env.to_string(),
        release,
        node,
        kind: JobKind::Run,
        command,
        status: JobStatus::Pending,
        exit_code: None,
        error: None,
        attach_tty: attach.map(|a| a.tty),
    };
    state.store.create_job(&job, user).await?;
    // The command line may hold secrets: log its program only.
    tracing::info!(app, env, release, job = %id, program = %job.command[0], user, "one-off run started");
    state.bump();
    Ok(id)
}

/// A fresh id for a one-off job: `prefix-` and 12 random characters.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", crate::tokens::random_hex(12))
}

/// A run's output after line `after`; waits up to `wait` when there is none yet and the run is
/// not finished.
pub async fn output(
    state: &AppState,
    app: &str,
    env: &str,
    id: &str,
    after: u64,
    wait: Duration,
) -> Result<RunOutput> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = state.subscribe_events();
    loop {
        let job = state.store.get_job(id).await?;
        if job.app != app || job.env != env {
            return Err(DomainError::NotFound(format!("{app}/{env} has no run {id:?}")));
        }
        let (lines, next) = state.store.job_output_after(id, after).await?;
        if !lines.is_empty() || job.done() || tokio::time::Instant::now() >= deadline {
            // Output first: a finished run is reported finished only once its output is read.
            let finished = job.done() && lines.is_empty();
            return Ok(RunOutput {
                id: id.to_string(),
                lines,
                next,
                finished,
                exit_code: if finished { job.exit_code } else { None },
                error: if finished { job.error } else { None },
            });
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}
