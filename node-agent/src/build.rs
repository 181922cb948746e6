//! Image builds: for each build task in the assignment, fetch the uploaded source, build its
//! Dockerfile (or resolve an existing image), stream the output to the control plane (the
//! deploy's progress) and to central logs (source `build`), and report the image id. Also
//! sends the images the control plane keeps for other nodes.

use crate::docker::DockerClient;
use crate::handover::{deliver, start_each_once};
use crate::logs::LogHandle;
use protocol::agent::{Assignment, BuildKind, BuildLog, BuildResult, BuildTask};
use protocol::logs::{LogSource, LogStream, ShippedLine};
use protocol::{labels, Client};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub struct Builder {
    docker: DockerClient,
    client: Client,
    network: Option<String>,
    logs: LogHandle,
}

impl Builder {
    pub fn new(docker: DockerClient, client: Client, network: Option<String>, logs: LogHandle) -> Self {
        Self { docker, client, network, logs }
    }

    pub async fn run(self, assignment: watch::Receiver<Option<Assignment>>, shutdown: CancellationToken) {
        let start = |task: BuildTask| {
            let (docker, client, network) = (self.docker.clone(), self.client.clone(), self.network.clone());
            let span = tracing::info_span!("build", app = %task.app, env = %task.env, release = task.release);
            tokio::spawn(build_one(docker, client, network, self.logs.clone(), task).instrument(span));
        };
        let key = |t: &BuildTask| (t.app.clone(), t.env.clone(), t.release);
        start_each_once(assignment, shutdown, |a| a.builds.clone(), key, start).await
    }
}

async fn build_one(
    docker: DockerClient,
    client: Client,
    network: Option<String>,
    logs: LogHandle,
    task: BuildTask,
) {
    tracing::info!("build started");
    // Output waits in a bounded outbox while the control plane takes it (see `lines`).
    let (tx, rx) = crate::lines::outbox();
    let shipper = tokio::spawn(ship_logs(client.clone(), task.clone(), rx));
    let on_line = |line: String| {
        logs.push(build_line(&task, &line));
        tx.send(line)
    };
    let result = match &task.kind {
        BuildKind::Image { reference } => docker.resolve_image(reference, on_line).await,
        BuildKind::Dockerfile => match fetch_source(&client, &task).await {
            Ok(context) => {
                let image_labels = docker.node_labels(&[
                    (labels::APP, &task.app),
                    (labels::ENV, &task.env),
                    (labels::RELEASE, &task.release.to_string()),
                ]);
                docker
                    .build(context, &task.tag, image_labels, Default::default(), network.as_deref(), on_line)
                    .await
            }
            Err(e) => Err(e),
        },
    };
    drop(tx);
    let _ = shipper.await;
    let result = match result {
        Ok(id) => docker.claim_built(&id).await.map(|()| id),
        Err(e) => Err(e),
    };
    let report = match result {
        Ok(id) => {
            tracing::info!(image = %id, "build finished");
            BuildResult { image_id: Some(id), error: None }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::warn!(error = %msg, "build failed");
            BuildResult { image_id: None, error: Some(msg) }
        }
    };
    // The result must arrive, or the deploy would wait for nothing: retry for a while.
    let send = || client.build_result(&task, &report);
    deliver("build result", Duration::from_secs(60), send).await;
}

/// A line of a build's output as central logs keep it.
fn build_line(task: &BuildTask, text: &str) -> ShippedLine {
    ShippedLine {
        seq: 0,
        at: crate::logs::now(),
        app: task.app.clone(),
        env: task.env.clone(),
        source: LogSource::Build,
        process: "build".to_string(),
        replica: 0,
        release: task.release,
        stream: LogStream::Stdout,
        text: crate::lines::cut(text.to_string(), crate::logs::MAX_LINE_BYTES),
    }
}

async fn fetch_source(client: &Client, task: &BuildTask) -> anyhow::Result<bytes::Bytes> {
    let resp = client.build_source(task).await?;
    Ok(resp.bytes().await?)
}

/// Sends build output in batches, so a chatty build does not cost a request per line.
async fn ship_logs(client: Client, task: BuildTask, rx: crate::lines::LineReceiver) {
    crate::lines::ship(rx, |lines| {
        let (client, task) = (client.clone(), task.clone());
        async move { client.build_log(&task, &BuildLog { lines }).await.map(drop) }
    })
    .await
}

/// Sends the images the control plane asks this node for (`Assignment::send_images`), each
/// once while asked, so other nodes can run them.
pub async fn send_images(
    docker: DockerClient,
    client: Client,
    assignment: watch::Receiver<Option<Assignment>>,
    shutdown: CancellationToken,
) {
    let start = |id: String| {
        let (docker, client) = (docker.clone(), client.clone());
        let span = tracing::info_span!("image", image = %id);
        let send = async move {
            let what = format!("image {}", crate::docker::transfer::short(&id));
            let send = || docker.send_image(&client, &id);
            deliver(&what, Duration::from_secs(600), send).await;
        };
        tokio::spawn(send.instrument(span));
    };
    start_each_once(assignment, shutdown, |a| a.send_images.clone(), String::clone, start).await
}
