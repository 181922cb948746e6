//! One-off jobs (release phases, `paas run`, `[cron]`; runs the user joins are `attach`'s): each runs once in its own container, its output
//! streams to the control plane, its exit code is reported, and the container is removed. A
//! restarted agent finds a job's container by label and follows it instead of starting another.

use crate::docker::DockerClient;
use crate::handover::{deliver, start_each_once};
use protocol::agent::{Assignment, JobLog, JobResult, JobSpec};
use protocol::Client;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a job's result is offered to a control plane that does not take it.
const RESULT_DELIVERY: Duration = Duration::from_secs(60);

pub struct JobRunner {
    pub docker: DockerClient,
    pub client: Client,
    pub logs: crate::logs::LogHandle,
}

impl JobRunner {
    pub async fn run(self, assignment: watch::Receiver<Option<Assignment>>, shutdown: CancellationToken) {
        let start = |job: JobSpec| {
            let span = tracing::info_span!("job", app = %job.app, env = %job.env, release = job.release, job = %job.id);
            let (docker, client, logs) = (self.docker.clone(), self.client.clone(), self.logs.clone());
            match job.attach {
                Some(a) => {
                    tokio::spawn(crate::attach::run(docker, client, logs, job, a.tty).instrument(span))
                }
                None => tokio::spawn(run_job(docker, client, logs, job).instrument(span)),
            };
        };
        start_each_once(assignment, shutdown, |a| a.jobs.clone(), |j| j.id.clone(), start).await
    }
}

/// The container of a job: in its environment's network's name, so it sorts with the app's.
pub fn container_name(job: &JobSpec) -> String {
    format!("{}-job-{}", job.network, job.id)
}

/// Offers a job's outcome (its exit code, or why it has none) to the control plane until taken.
pub async fn report(client: &Client, id: &str, outcome: anyhow::Result<i64>) {
    let report = match outcome {
        Ok(code) => {
            tracing::info!(exit_code = code, "job finished");
            JobResult { exit_code: Some(code), error: None }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::warn!(error = %msg, "job ended without an exit code");
            JobResult { exit_code: None, error: Some(msg) }
        }
    };
    deliver("job result", RESULT_DELIVERY, || client.job_result(id, &report)).await;
}

async fn run_job(docker: DockerClient, client: Client, logs: crate::logs::LogHandle, job: JobSpec) {
    let name = container_name(&job);
    // Output waits in a bounded outbox while the control plane takes it (see `lines`).
    let (tx, rx) = crate::lines::outbox();
    let (c, id) = (client.clone(), job.id.clone());
    let shipper = tokio::spawn(crate::lines::ship(rx, move |lines| {
        let (c, id) = (c.clone(), id.clone());
        async move { c.job_log(&id, &JobLog { lines }).await.map(drop) }
    }));
    logs.config(&name, &job.config);
    let result = async {
        match docker.find_job(&job.id).await? {
            Some(_) => tracing::info!("adopting the job's existing container"),
            None => {
                tracing::info!("starting job");
                docker.start_job(&job, &name).await?;
                logs.started();
            }
        }
        let secrets = if job.mask_output { protocol::secrets::secret_texts(&job.config) } else { Vec::new() };
        let mask = |line: String| protocol::secrets::mask_texts(&line, &secrets).into_owned();
        let follow = docker.follow_logs(&name, |line| tx.send(mask(line)));
        if job.timeout_secs == 0 {
            follow.await;
        } else if tokio::time::timeout(Duration::from_secs(job.timeout_secs), follow).await.is_err() {
            tracing::warn!(timeout_secs = job.timeout_secs, "job ran out of time; stopping it");
            docker.stop(&name, 10).await;
            let limit = humantime::format_duration(Duration::from_secs(job.timeout_secs));
            anyhow::bail!("it was still running after its timeout of {limit} and was stopped");
        }
        docker.exit_code(&name).await
    }
    .await;
    drop(tx);
    let _ = shipper.await;
    report(&client, &job.id, result).await;
    // Central logs read the container's last lines before it goes.
    logs.drained(&name).await;
    if let Err(e) = docker.stop_and_remove(&name, 1).await {
        tracing::debug!(error = %format!("{e:#}"), "removing the job container failed");
    }
}
