//! The agent's containers: app containers (what reconcile creates, starts and retires), one-off
//! job containers, log tails and follows (and what central logs collect), and static-file
//! extraction.

use super::{
    docker_message, limited_host_config, observe, DockerClient, LogSource, Observed, LABEL_ATTACHED,
    LABEL_JOB, LABEL_PORT,
};
use super::{LABEL_DRAIN_MS, LABEL_STOP_GRACE_MS};
use anyhow::Context;
use bollard::container::{
    Config as ContainerConfig, CreateContainerOptions, LogOutput, LogsOptions, RemoveContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use bollard::models::{HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum};
use futures_util::StreamExt;
use protocol::agent::ContainerSpec;
use protocol::labels;
use std::collections::HashMap;

impl DockerClient {
    /// Containers of this node (and only those), running or not.
    pub async fn list(&self) -> anyhow::Result<Vec<Observed>> {
        let list = self.own_containers().await?;
        Ok(list
            .into_iter()
            .filter(|c| {
                let labels = c.labels.as_ref();
                !labels.is_some_and(|l| l.contains_key(LABEL_JOB) || l.contains_key(labels::ROLE))
            })
            .filter_map(|c| observe(c, None))
            .collect())
    }

    /// Creates and starts a container for `spec`, published on the private address only.
    pub async fn create_and_start(&self, spec: &ContainerSpec) -> anyhow::Result<()> {
        let port_key = format!("{}/tcp", spec.port);
        let labels = self.node_labels(&[
            (labels::APP, &spec.app),
            (labels::ENV, &spec.env),
            (labels::PROCESS, &spec.process),
            (labels::RELEASE, &spec.release.to_string()),
            (labels::REPLICA, &spec.replica.to_string()),
            (LABEL_PORT, &spec.port.to_string()),
            // Read back when the container is retired, after it left the assignment.
            (LABEL_DRAIN_MS, &spec.drain_timeout_ms.to_string()),
            (LABEL_STOP_GRACE_MS, &spec.stop_grace_ms.to_string()),
        ]);
        // The user's config first, so the platform's own variables (PORT) win.
        let env: Vec<String> = protocol::secrets::app_env(&spec.config)
            .chain(&spec.env_vars)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(self.private_addr.clone()),
                    host_port: Some(String::new()),
                }]),
            )])),
            network_mode: (!spec.network.is_empty()).then(|| spec.network.clone()),
            // The agent restarts crashed containers itself (with backoff, and reporting it).
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..limited_host_config(&spec.limits)
        };
        let config = ContainerConfig {
            image: Some(self.local_image(&spec.image).await?),
            cmd: spec.command.clone(),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(HashMap::from([(port_key, HashMap::new())])),
            host_config: Some(host_config),
            ..Default::default()
        };
        if !spec.network.is_empty() {
            self.ensure_network(&spec.network, &spec.app, &spec.env, &spec.subnet).await?;
        }
        self.create_started(&spec.name, config).await.with_context(|| format!("creating {}", spec.name))
    }

    /// Creates container `name` from `config` and starts it; errors carry the engine's message.
    pub(super) async fn create_started(
        &self,
        name: &str,
        config: ContainerConfig<String>,
    ) -> anyhow::Result<()> {
        self.create(name, config).await?;
        self.start(name).await
    }

    async fn create(&self, name: &str, config: ContainerConfig<String>) -> anyhow::Result<()> {
        let opts = CreateContainerOptions { name: name.to_string(), platform: None };
        self.docker
            .create_container(Some(opts), config)
            .await
            .map_err(|e| anyhow::anyhow!(docker_message(&e)))?;
        Ok(())
    }

    pub async fn start(&self, name: &str) -> anyhow::Result<()> {
        self.docker
            .start_container(name, None::<StartContainerOptions<String>>)
            .await
            .map_err(|e| anyhow::anyhow!("starting {name}: {}", docker_message(&e)))
    }

    /// SIGTERM, up to `grace_secs` to exit, then removal.
    pub async fn stop_and_remove(&self, name: &str, grace_secs: i64) -> anyhow::Result<()> {
        self.stop(name, grace_secs).await;
        self.remove(name).await
    }

    /// SIGTERM and up to `grace_secs` to exit (then SIGKILL); a container already gone or
    /// stopped is no error.
    pub async fn stop(&self, name: &str, grace_secs: i64) {
        let _ = self.docker.stop_container(name, Some(StopContainerOptions { t: grace_secs })).await;
    }

    /// Removes a container, running or not, with its anonymous volumes.
    pub async fn remove(&self, name: &str) -> anyhow::Result<()> {
        self.docker
            .remove_container(
                name,
                Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }),
            )
            .await
            .with_context(|| format!("removing {name}"))
    }

    /// App and job containers of this node, running or not: those whose output goes to central
    /// logs (not databases, not static-file extraction).
    pub async fn log_sources(&self) -> anyhow::Result<Vec<LogSource>> {
        let list = self.own_containers().await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let job = labels.get(LABEL_JOB);
                let app_or_job = labels.contains_key(labels::PROCESS) || job.is_some_and(|j| j != "extract");
                if !app_or_job || labels.contains_key(labels::ROLE) || !labels.contains_key(labels::APP) {
                    return None;
                }
                let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                let number = |k: &str| labels.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                Some(LogSource {
                    id: c.id?,
                    name: c.names?.first()?.trim_start_matches('/').to_string(),
                    running: c.state.as_deref() == Some("running"),
                    app: label(labels::APP),
                    env: label(labels::ENV),
                    // Job containers from before they were labelled with their process.
                    process: labels.get(labels::PROCESS).cloned().unwrap_or_else(|| "run".into()),
                    release: number(labels::RELEASE),
                    replica: number(labels::REPLICA),
                })
            })
            .collect())
    }

    /// What container `id` wrote at or after `since` (Unix seconds; 0: everything), each entry
    /// with Docker's timestamp in front, and whether it went to stderr. `follow` keeps reading
    /// until the container stops.
    pub fn log_entries(
        &self,
        id: &str,
        since: i64,
        follow: bool,
    ) -> impl futures_util::Stream<Item = Result<(bool, bytes::Bytes), String>> + Send + 'static {
        let opts = LogsOptions::<String> {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            since,
            tail: "all".into(),
            ..Default::default()
        };
        self.docker.logs(id, Some(opts)).filter_map(|chunk| async move {
            match chunk {
                Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                    Some(Ok((false, message)))
                }
                Ok(LogOutput::StdErr { message }) => Some(Ok((true, message))),
                Ok(LogOutput::StdIn { .. }) => None,
                Err(e) => Some(Err(docker_message(&e))),
            }
        })
    }

    /// Where container `id`'s json-file log is on this host, when Docker keeps one there (the
    /// json-file driver, a local engine): central logs read it straight from disk.
    pub async fn log_path(&self, id: &str) -> Option<std::path::PathBuf> {
        let info = self.docker.inspect_container(id, None).await.ok()?;
        let driver = info.host_config.and_then(|h| h.log_config).and_then(|l| l.typ);
        let path = info.log_path.filter(|p| !p.is_empty())?;
        (driver.as_deref() == Some("json-file")).then(|| path.into())
    }

    /// Last `n` lines the container wrote (stdout and stderr).
    pub async fn log_tail(&self, name: &str, n: usize) -> Vec<String> {
        let opts =
            LogsOptions::<String> { stdout: true, stderr: true, tail: n.to_string(), ..Default::default() };
        let mut stream = self.docker.logs(name, Some(opts));
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            match chunk {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => out.push_str(&String::from_utf8_lossy(&message)),
                LogOutput::StdIn { .. } => {}
            }
        }
        out.lines().map(str::to_string).collect()
    }
    /// The state of the job container labelled `job`, if one exists: (name, running).
    pub async fn find_job(&self, job: &str) -> anyhow::Result<Option<(String, bool)>> {
        let list = self
            .labelled(vec![format!("{}={}", labels::NODE, self.node), format!("{LABEL_JOB}={job}")])
            .await?;
        Ok(list.into_iter().find_map(|c| {
            let name = c.names?.first()?.trim_start_matches('/').to_string();
            Some((name, c.state.as_deref() == Some("running")))
        }))
    }

    /// Creates and starts a one-off container for a job: no published ports, capped logs.
    pub async fn start_job(&self, job: &protocol::agent::JobSpec, name: &str) -> anyhow::Result<()> {
        let config = self.job_config(job).await?;
        self.create_started(name, config).await
    }

    /// Creates (does not start) the container of a run the user joins: stdin open until the
    /// user's ends, and a TTY when `tty`. The caller attaches before it starts it, so no output
    /// goes unseen.
    pub async fn create_attached_job(
        &self,
        job: &protocol::agent::JobSpec,
        name: &str,
        tty: bool,
    ) -> anyhow::Result<()> {
        let mut config = ContainerConfig {
            tty: Some(tty),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..self.job_config(job).await?
        };
        config.labels.get_or_insert_default().insert(LABEL_ATTACHED.into(), "true".into());
        self.create(name, config).await
    }

    /// The containers of joined runs on this node, running or not: (job id, container name).
    pub async fn attached_jobs(&self) -> anyhow::Result<Vec<(String, String)>> {
        let filters = vec![format!("{}={}", labels::NODE, self.node), format!("{LABEL_ATTACHED}=true")];
        Ok(self
            .labelled(filters)
            .await?
            .into_iter()
            .filter_map(|c| {
                let job = c.labels.as_ref()?.get(LABEL_JOB)?.clone();
                Some((job, c.names?.first()?.trim_start_matches('/').to_string()))
            })
            .collect())
    }

    /// The streams of a created container, attached before it starts so nothing it prints
    /// goes unseen: its output, and its stdin (shut it down to close the process's stdin).
    pub async fn attach(&self, name: &str) -> anyhow::Result<bollard::container::AttachContainerResults> {
        let opts = bollard::container::AttachContainerOptions::<String> {
            stdin: Some(true),
            stdout: Some(true),
            stderr: Some(true),
            stream: Some(true),
            ..Default::default()
        };
        self.docker.attach_container(name, Some(opts)).await.map_err(|e| anyhow::anyhow!(docker_message(&e)))
    }

    /// Sets the size of a running container's TTY.
    pub async fn resize(&self, name: &str, cols: u16, rows: u16) -> anyhow::Result<()> {
        let size = bollard::container::ResizeContainerTtyOptions { width: cols, height: rows };
        self.docker.resize_container_tty(name, size).await.map_err(|e| anyhow::anyhow!(docker_message(&e)))
    }

    /// Waits for a container to stop; its exit code.
    pub async fn wait_exit(&self, name: &str) -> anyhow::Result<i64> {
        let mut wait =
            self.docker.wait_container(name, None::<bollard::container::WaitContainerOptions<String>>);
        match wait.next().await {
            Some(Ok(done)) => Ok(done.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(anyhow::anyhow!(docker_message(&e))),
            None => anyhow::bail!("Docker did not say how {name} ended"),
        }
    }

    /// A job's container: its release's image and config on its environment's network, held
    /// by the release's limits.
    async fn job_config(&self, job: &protocol::agent::JobSpec) -> anyhow::Result<ContainerConfig<String>> {
        let labels = self.node_labels(&[
            (labels::APP, &job.app),
            (labels::ENV, &job.env),
            (labels::RELEASE, &job.release.to_string()),
            // Central logs tell release phases (their output is masked) from `paas run` and
            // from each `[cron]` job.
            (labels::PROCESS, job.process()),
            (LABEL_JOB, &job.id),
        ]);
        let env: Vec<String> = protocol::secrets::app_env(&job.config)
            .chain(&job.env_vars)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let host_config = HostConfig {
            network_mode: (!job.network.is_empty()).then(|| job.network.clone()),
            ..limited_host_config(&job.limits)
        };
        if !job.network.is_empty() {
            self.ensure_network(&job.network, &job.app, &job.env, &job.subnet).await?;
        }
        Ok(ContainerConfig {
            image: Some(self.local_image(&job.image).await?),
            cmd: Some(job.command.clone()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// Streams what a container prints, line by line, until it exits. Docker 20.10's follow
    /// can end before a stopped container's last entries (seen losing 24 of 30,000 lines), so
    /// the end of the log is read once more and what the follow missed is passed on too.
    pub async fn follow_logs(&self, name: &str, mut on_line: impl FnMut(String)) {
        /// Entries read again at the end; far more than the follow was seen to miss.
        const READ_AGAIN: usize = 5000;
        let opts = |follow: bool, tail: String| LogsOptions::<String> {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            tail,
            ..Default::default()
        };
        // Holds at most one (cut) line, however long the lines are.
        let mut reader = crate::lines::LogReader::default();
        let mut stream = self.docker.logs(name, Some(opts(true, "all".into())));
        while let Some(Ok(chunk)) = stream.next().await {
            if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = chunk {
                reader.entry(&message, &mut on_line);
            }
        }
        let mut stream = self.docker.logs(name, Some(opts(false, READ_AGAIN.to_string())));
        while let Some(Ok(chunk)) = stream.next().await {
            if let LogOutput::StdOut { message } | LogOutput::StdErr { message } = chunk {
                reader.again(&message, &mut on_line);
            }
        }
        reader.finish(on_line);
    }

    /// Exit code of a stopped container.
    pub async fn exit_code(&self, name: &str) -> anyhow::Result<i64> {
        let info = self.docker.inspect_container(name, None).await.context("inspecting a job container")?;
        let state = info.state.unwrap_or_default();
        anyhow::ensure!(!state.running.unwrap_or(false), "the job container is still running");
        Ok(state.exit_code.unwrap_or(-1))
    }

    /// Streams the tar of `path` inside `image` (Docker's archive API on a created, never started
    /// container) into `consume`, which runs on a blocking thread and reads it as it arrives: the
    /// archive is never held in memory whole. The container is removed afterwards, whatever
    /// `consume` returned.
    pub async fn copy_out<T: Send + 'static>(
        &self,
        image: &str,
        path: &str,
        consume: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        use bollard::container::DownloadFromContainerOptions;
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio_util::io::{StreamReader, SyncIoBridge};
        // Unique per extraction: two at once on this node must not remove each other's container.
        static EXTRACTIONS: AtomicU64 = AtomicU64::new(0);
        let serial = EXTRACTIONS.fetch_add(1, Ordering::Relaxed);
        let name = format!("paas-extract-{}-{}-{serial}", self.node, std::process::id());
        let labels = self.node_labels(&[(LABEL_JOB, "extract")]);
        let image = self.local_image(image).await?;
        let config = ContainerConfig { image: Some(image), labels: Some(labels), ..Default::default() };
        self.docker
            .create_container(Some(CreateContainerOptions { name: name.clone(), platform: None }), config)
            .await
            .map_err(|e| {
                anyhow::anyhow!("creating a container to copy static files: {}", docker_message(&e))
            })?;
        let stream = self
            .docker
            .download_from_container(&name, Some(DownloadFromContainerOptions { path: path.to_string() }))
            .map(|chunk| chunk.map_err(|e| std::io::Error::other(docker_message(&e))));
        let mut reader = SyncIoBridge::new(StreamReader::new(Box::pin(stream)));
        let consumed = tokio::task::spawn_blocking(move || consume(&mut reader)).await;
        let _ = self
            .docker
            .remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() }))
            .await;
        match consumed {
            Ok(result) => result.with_context(|| format!("copying {path} out of the image")),
            Err(e) => anyhow::bail!("copying {path} out of the image: the reading task failed: {e}"),
        }
    }
}
