//! Runs the user joins (`paas run` with stdin, a TTY at a terminal; `paas db psql` at a
//! terminal): the agent dials the control plane for the user's side of the session, starts the
//! process with its streams attached (a new container of the job, or, for psql, a command on a
//! TTY inside the running database server), and passes frames (`protocol::attach`) both ways
//! until the process ends: its exit code is the last frame and the job's result. When the user
//! goes first, a container is stopped (nothing can join it again, so nothing may keep it
//! running) and a command in a server loses its TTY, which ends it. [`sweep`] removes what a
//! session cut short by a restart left.

use crate::docker::DockerClient;
use anyhow::Context;
use bollard::container::LogOutput;
use futures_util::{Stream, StreamExt};
use protocol::agent::{Assignment, JobSpec};
use protocol::attach::{Frame, MAX_PAYLOAD};
use protocol::Client;
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Joined runs this process is running now, by job id: [`sweep`] leaves their containers to them.
static ACTIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn active() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `job` joined to its user; reports its result and removes its container.
pub async fn run(
    docker: DockerClient,
    client: Client,
    logs: crate::logs::LogHandle,
    job: JobSpec,
    tty: bool,
) {
    active().insert(job.id.clone());
    run_once(&docker, &client, &logs, &job, tty).await;
    active().remove(&job.id);
}

/// Removes the containers of joined runs that are over, at start and whenever the assignment
/// changes (at least each minute): an agent or control plane stopped mid-session leaves one,
/// perhaps a shell waiting on a TTY nobody can reach again.
pub async fn sweep(
    docker: DockerClient,
    mut assignment: watch::Receiver<Option<Assignment>>,
    stop: CancellationToken,
) {
    loop {
        if let Ok(found) = docker.attached_jobs().await {
            // Read after the listing: every container listed came from this or an earlier one.
            let assigned: Option<BTreeSet<String>> =
                assignment.borrow().as_ref().map(|a| a.jobs.iter().map(|j| j.id.clone()).collect());
            for (job, name) in found {
                let over = assigned.as_ref().is_some_and(|a| !a.contains(&job)) && !active().contains(&job);
                if over {
                    tracing::info!(job = %job, container = %name, "removing the container of a joined run that is over");
                    if let Err(e) = docker.stop_and_remove(&name, 1).await {
                        tracing::debug!(error = %format!("{e:#}"), "removing a joined run's container failed");
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = assignment.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

async fn run_once(
    docker: &DockerClient,
    client: &Client,
    logs: &crate::logs::LogHandle,
    job: &JobSpec,
    tty: bool,
) {
    let name = crate::jobs::container_name(job);
    let outcome = match job.exec_in.clone() {
        Some(server) => in_server(docker, client, job, &server).await,
        None => {
            logs.config(&name, &job.config);
            in_container(docker, client, logs, job, &name, tty).await
        }
    };
    crate::jobs::report(client, &job.id, outcome).await;
    if job.exec_in.is_none() {
        logs.drained(&name).await;
        if let Err(e) = docker.stop_and_remove(&name, 1).await {
            tracing::debug!(error = %format!("{e:#}"), "removing the run's container failed");
        }
    }
}

async fn in_container(
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
    let (from_user, mut to_user) = tokio::io::split(tunnel);
    let streams = match docker.attach(name).await {
        Ok(s) => s,
        Err(e) => return fail(&mut to_user, e.context("attaching to the run's container")).await,
    };
    if let Err(e) = docker.start(name).await {
        return fail(&mut to_user, e).await;
    }
    logs.started();
    let resize = |cols, rows| async move {
        if tty {
            docker.resize(name, cols, rows).await?;
        }
        anyhow::Ok(())
    };
    let ended = pump(from_user, &mut to_user, streams.output, streams.input, resize).await;
    if let Err(why) = ended {
        docker.stop(name, 1).await;
        anyhow::bail!("{why}; the command was stopped");
    }
    let code = docker.wait_exit(name).await?;
    exit(&mut to_user, code).await;
    Ok(code)
}

/// The job's command on a TTY inside the running database server `server`.
async fn in_server(
    docker: &DockerClient,
    client: &Client,
    job: &JobSpec,
    server: &str,
) -> anyhow::Result<i64> {
    let tunnel = client.agent_attach(&job.id).await.context("joining the user's session")?;
    let (from_user, mut to_user) = tokio::io::split(tunnel);
    let mut exec =
        match docker.exec_tty(server, job.command.clone(), crate::dbtasks::psql::SESSION_USER).await {
            Ok(e) => e,
            Err(e) => return fail(&mut to_user, e).await,
        };
    let input = exec.input.take().context("the session's stdin is not attached")?;
    let output = std::mem::replace(&mut exec.output, Box::pin(futures_util::stream::empty()));
    let id = exec.id().to_string();
    let resize = |cols, rows| {
        let id = id.clone();
        async move { docker.resize_exec(&id, cols, rows).await }
    };
    // A user gone closes the TTY, which ends the command.
    pump(from_user, &mut to_user, output, input, resize).await.map_err(anyhow::Error::msg)?;
    let code = exec.exit_code().await?;
    exit(&mut to_user, code).await;
    Ok(code)
}

/// Passes the user's input and resizes to the process and its output to the user until the
/// output ends (the process exited); `Err` with the reason when the user went first.
async fn pump<R, W, F, Fut>(
    mut from_user: R,
    to_user: &mut W,
    mut output: Output,
    mut stdin: Input,
    resize: F,
) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    F: Fn(u16, u16) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
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
                Ok(Some(Frame::Resize { cols, rows })) => {
                    if let Err(e) = resize(cols, rows).await {
                        tracing::debug!(error = %format!("{e:#}"), "resizing the session's TTY failed");
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
        std::io::Result::Ok(())
    };
    tokio::select! {
        sent = process => sent.map_err(|_| "the user's connection broke off".to_string()),
        () = user => {
            tracing::info!("the user left the session");
            Err("the user's connection ended before the command did".to_string())
        }
    }
}

async fn exit<W: AsyncWrite + Unpin>(to_user: &mut W, code: i64) {
    let _ = to_user.write_all(&Frame::Exit(code as i32).encode()).await;
    let _ = to_user.shutdown().await;
}

/// Tells the user why the session cannot go on, and returns that as the run's error.
async fn fail<W: AsyncWrite + Unpin>(to_user: &mut W, e: anyhow::Error) -> anyhow::Result<i64> {
    let _ = to_user.write_all(&Frame::Error(format!("{e:#}")).encode()).await;
    let _ = to_user.shutdown().await;
    Err(e)
}
