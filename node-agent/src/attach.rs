//! Runs the user joins (`paas run` with stdin, a TTY at a terminal): the container is created,
//! the agent dials the control plane for the user's side of the session, attaches to the
//! container's streams, starts it, and passes frames (`protocol::attach`) both ways until the
//! process ends: its exit code is the last frame and the job's result. When the user goes
//! first, the process is stopped: nothing can join it again, so nothing may keep it running.

use crate::docker::DockerClient;
use anyhow::Context;
use bollard::container::LogOutput;
use futures_util::StreamExt;
use protocol::agent::{JobResult, JobSpec};
use protocol::attach::{Frame, MAX_PAYLOAD};
use protocol::Client;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// How long a job's result is offered to a control plane that does not take it.
const RESULT_DELIVERY: Duration = Duration::from_secs(60);

/// Runs `job` joined to its user; reports its result and removes its container.
pub async fn run(
    docker: DockerClient,
    client: Client,
    logs: crate::logs::LogHandle,
    job: JobSpec,
    tty: bool,
) {
    let name = format!("{}-job-{}", job.network, job.id);
    logs.config(&name, &job.config);
    let report = match session(&docker, &client, &logs, &job, &name, tty).await {
        Ok(code) => {
            tracing::info!(exit_code = code, "attached run finished");
            JobResult { exit_code: Some(code), error: None }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::warn!(error = %msg, "attached run ended without an exit code");
            JobResult { exit_code: None, error: Some(msg) }
        }
    };
    crate::handover::deliver("job result", RESULT_DELIVERY, || client.job_result(&job.id, &report)).await;
    logs.drained(&name).await;
    if let Err(e) = docker.stop_and_remove(&name, 1).await {
        tracing::debug!(error = %format!("{e:#}"), "removing the run's container failed");
    }
}

async fn session(
    docker: &DockerClient,
    client: &Client,
    logs: &crate::logs::LogHandle,
    job: &JobSpec,
    name: &str,
    tty: bool,
) -> anyhow::Result<i64> {
    if docker.find_job(&job.id).await?.is_some() {
        // Left by an agent that restarted mid-session: its user's connection went with it.
        docker.stop(name, 1).await;
        anyhow::bail!("the node agent restarted during the session, which ended it");
    }
    docker.create_attached_job(job, name, tty).await.context("creating the run's container")?;
    let tunnel = client.agent_attach(&job.id).await.context("joining the user's session")?;
    let (mut from_user, mut to_user) = tokio::io::split(tunnel);
    let streams = match docker.attach(name).await {
        Ok(s) => s,
        Err(e) => return fail(&mut to_user, e.context("attaching to the run's container")).await,
    };
    if let Err(e) = docker.start(name).await {
        return fail(&mut to_user, e).await;
    }
    logs.started();
    let (mut output, mut stdin) = (streams.output, streams.input);
    let user = async {
        loop {
            match Frame::read(&mut from_user).await {
                Ok(Some(Frame::Stdin(bytes))) => {
                    // A process that closed its stdin takes no more; the session goes on.
                    let _ = stdin.write_all(&bytes).await;
                }
                Ok(Some(Frame::StdinEnd)) => {
                    let _ = stdin.shutdown().await;
                }
                Ok(Some(Frame::Resize { cols, rows })) if tty => {
                    if let Err(e) = docker.resize(name, cols, rows).await {
                        tracing::debug!(error = %format!("{e:#}"), "resizing the run's TTY failed");
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    let process = async {
        while let Some(Ok(chunk)) = output.next().await {
            let (bytes, err) = match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => (message, false),
                LogOutput::StdErr { message } => (message, true),
                LogOutput::StdIn { .. } => continue,
            };
            for part in bytes.chunks(MAX_PAYLOAD) {
                let frame = if err { Frame::Stderr(part.to_vec()) } else { Frame::Stdout(part.to_vec()) };
                to_user.write_all(&frame.encode()).await?;
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        sent = process => {
            if sent.is_err() {
                docker.stop(name, 1).await;
                anyhow::bail!("the user's connection broke off; the command was stopped");
            }
        }
        () = user => {
            tracing::info!("the user left the session; stopping the command");
            docker.stop(name, 1).await;
            anyhow::bail!("the user's connection ended before the command did; it was stopped");
        }
    }
    let code = docker.wait_exit(name).await?;
    let _ = to_user.write_all(&Frame::Exit(code as i32).encode()).await;
    let _ = to_user.shutdown().await;
    Ok(code)
}

/// Tells the user why the session cannot go on, and returns that as the run's error.
async fn fail<W: AsyncWrite + Unpin>(to_user: &mut W, e: anyhow::Error) -> anyhow::Result<i64> {
    let _ = to_user.write_all(&Frame::Error(format!("{e:#}")).encode()).await;
    let _ = to_user.shutdown().await;
    Err(e)
}
