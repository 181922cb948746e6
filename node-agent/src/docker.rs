//! Thin wrapper over bollard: the only place the agent speaks the Docker API. Every object it
//! creates carries the paas labels, and every listing is filtered by this node's label.

use anyhow::Context;
use bollard::container::{
    Config as ContainerConfig, CreateContainerOptions, ListContainersOptions, LogOutput, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::image::{BuildImageOptions, CreateImageOptions};
use bollard::models::{HostConfig, HostConfigLogConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum};
use bollard::Docker;
use futures_util::StreamExt;
use protocol::agent::ContainerSpec;
use protocol::labels;
use std::collections::HashMap;

/// json-file caps: a chatty app can never fill the disk (DESIGN.md section 5).
pub const LOG_MAX_SIZE: &str = "10m";
pub const LOG_MAX_FILE: &str = "3";

/// Memory limit of a PostgreSQL container (its shared memory included).
pub const DB_MEMORY: u64 = 2 << 30;

/// Agent-private labels: the process port, and how to retire the container.
pub const LABEL_PORT: &str = "paas.port";
pub const LABEL_DRAIN_MS: &str = "paas.drain_ms";
pub const LABEL_STOP_GRACE_MS: &str = "paas.stop_grace_ms";
/// Marks one-off job containers; the reconcile loop leaves them to the job runner.
pub const LABEL_JOB: &str = "paas.job";

/// What the agent needs to know about one of its containers.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub state: String,
    pub labels: HashMap<String, String>,
    /// Host port published for the process port, on the node's private address.
    pub host_port: Option<u16>,
    /// Port the process listens on inside the container.
    pub port: Option<u16>,
    /// The container's address on its Docker network: health checks go there, past Docker's
    /// port proxy, which accepts connections even when the app does not listen.
    pub ip: Option<String>,
}

impl Observed {
    /// Whether the container carries every one of the `expected` label values. The agent adopts
    /// a container of an assigned name only when it does: a container left by another app or
    /// release under that name is never taken over.
    pub fn labelled_as(&self, expected: &[(&str, String)]) -> bool {
        expected.iter().all(|(k, v)| self.labels.get(*k) == Some(v))
    }

    /// The sentence that says why an existing container of an assigned name is not adopted.
    pub fn foreign(&self) -> String {
        let label = |k: &str| self.labels.get(k).cloned().unwrap_or_else(|| "?".into());
        format!(
            "a container named {} already exists for {}/{} ({}); paas will not take it over: remove it to go on",
            self.name,
            label(labels::APP),
            label(labels::ENV),
            self.labels
                .get(labels::ROLE)
                .cloned()
                .unwrap_or_else(|| format!("{} v{}", label(labels::PROCESS), label(labels::RELEASE)))
        )
    }
}

#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
    node: String,
    private_addr: String,
}

impl DockerClient {
    /// Connects with local defaults and negotiates the API version, so engines as old as API
    /// 1.41 work.
    pub async fn connect(node: &str, private_addr: &str) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .context("connecting to the Docker engine")?
            .negotiate_version()
            .await
            .context("talking to the Docker engine; is it running and is its socket readable?")?;
        Ok(Self { docker, node: node.to_string(), private_addr: private_addr.to_string() })
    }

    pub fn raw(&self) -> &Docker {
        &self.docker
    }

    /// Containers, running or not, carrying every one of `labels` (`key=value`).
    async fn labelled(&self, labels: Vec<String>) -> anyhow::Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([("label".to_string(), labels)]);
        let opts = ListContainersOptions::<String> { all: true, filters, ..Default::default() };
        self.docker.list_containers(Some(opts)).await.context("listing containers")
    }

    /// Containers of this node (and only those), running or not.
    pub async fn list(&self) -> anyhow::Result<Vec<Observed>> {
        let list = self
            .labelled(vec![format!("{}=true", labels::MANAGED), format!("{}={}", labels::NODE, self.node)])
            .await?;
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
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::APP.to_string(), spec.app.clone()),
            (labels::ENV.to_string(), spec.env.clone()),
            (labels::PROCESS.to_string(), spec.process.clone()),
            (labels::RELEASE.to_string(), spec.release.to_string()),
            (labels::REPLICA.to_string(), spec.replica.to_string()),
            (labels::NODE.to_string(), self.node.clone()),
            (LABEL_PORT.to_string(), spec.port.to_string()),
            // Read back when the container is retired, after it left the assignment.
            (LABEL_DRAIN_MS.to_string(), spec.drain_timeout_ms.to_string()),
            (LABEL_STOP_GRACE_MS.to_string(), spec.stop_grace_ms.to_string()),
        ]);
        // The user's config first, so the platform's own variables (PORT) win.
        let env: Vec<String> =
            spec.config.iter().chain(&spec.env_vars).map(|(k, v)| format!("{k}={v}")).collect();
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
            image: Some(spec.image.clone()),
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
        let opts = CreateContainerOptions { name: spec.name.clone(), platform: None };
        self.docker
            .create_container(Some(opts), config)
            .await
            .with_context(|| format!("creating {}", spec.name))?;
        self.start(&spec.name).await
    }

    pub async fn start(&self, name: &str) -> anyhow::Result<()> {
        self.docker
            .start_container(name, None::<StartContainerOptions<String>>)
            .await
            .with_context(|| format!("starting {name}"))
    }

    /// SIGTERM, up to `grace_secs` to exit, then removal.
    pub async fn stop_and_remove(&self, name: &str, grace_secs: i64) -> anyhow::Result<()> {
        let _ = self.docker.stop_container(name, Some(StopContainerOptions { t: grace_secs })).await;
        self.docker
            .remove_container(
                name,
                Some(RemoveContainerOptions { force: true, v: true, ..Default::default() }),
            )
            .await
            .with_context(|| format!("removing {name}"))
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

    /// Builds the gzipped tar `context`; every output line goes to `on_line`. Returns the image id.
    pub async fn build(
        &self,
        context: bytes::Bytes,
        tag: &str,
        image_labels: HashMap<String, String>,
        network: Option<&str>,
        on_line: impl FnMut(String),
    ) -> anyhow::Result<String> {
        self.build_with_args(context, tag, image_labels, HashMap::new(), network, on_line).await
    }

    pub async fn build_with_args(
        &self,
        context: bytes::Bytes,
        tag: &str,
        image_labels: HashMap<String, String>,
        buildargs: HashMap<String, String>,
        network: Option<&str>,
        mut on_line: impl FnMut(String),
    ) -> anyhow::Result<String> {
        let opts = BuildImageOptions::<String> {
            buildargs,
            dockerfile: "Dockerfile".into(),
            t: tag.to_string(),
            rm: true,
            forcerm: true,
            labels: image_labels,
            networkmode: network.unwrap_or("default").to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.build_image(opts, None, Some(context));
        let mut last_error = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.or(info.status) {
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            on_line(line.to_string());
                        }
                    }
                    if let Some(e) = info.error {
                        on_line(e.clone());
                        last_error = Some(e);
                    }
                }
                Err(e) => {
                    let msg = docker_message(&e);
                    on_line(msg.clone());
                    last_error = Some(msg);
                    break;
                }
            }
        }
        if let Some(e) = last_error {
            anyhow::bail!("the image build failed: {}", e.trim());
        }
        self.image_id(tag)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the build finished but produced no image {tag}"))
    }

    /// The id of a local image, `None` when the engine does not have it.
    pub async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(img.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e).context("inspecting an image"),
        }
    }

    /// Resolves an image reference to an id, pulling it when the engine lacks it.
    pub async fn resolve_image(
        &self,
        reference: &str,
        mut on_line: impl FnMut(String),
    ) -> anyhow::Result<String> {
        if let Some(id) = self.image_id(reference).await? {
            return Ok(id);
        }
        on_line(format!("Pulling {reference}"));
        let opts = CreateImageOptions::<String> { from_image: reference.to_string(), ..Default::default() };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                anyhow::bail!(
                    "image {reference} is not on this node and pulling it failed: {}",
                    docker_message(&e)
                );
            }
        }
        self.image_id(reference).await?.ok_or_else(|| anyhow::anyhow!("image {reference} could not be found"))
    }
}

/// The only capabilities app containers keep (Docker's default set minus NET_RAW, MKNOD,
/// AUDIT_WRITE, SETFCAP, SETPCAP and SYS_CHROOT): enough for an image that starts as root to
/// bind a low port, chown its files and drop to its own user; not enough to forge packets,
/// make device nodes or hand capabilities on.
pub const CAP_ALLOW: &[&str] =
    &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE"];

/// [`base_host_config`] with the process's memory (no swap on top), CPU and PID limits.
fn limited_host_config(limits: &protocol::manifest::Limits) -> HostConfig {
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    HostConfig {
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(limits.millicpus) * 1_000_000),
        pids_limit: Some(i64::from(limits.pids)),
        ..base_host_config()
    }
}

/// What every paas container gets: capped json-file logs, no privilege escalation, every
/// capability dropped but [`CAP_ALLOW`], and a tiny init as PID 1 that forwards SIGTERM and
/// reaps zombies for apps that do not.
fn base_host_config() -> HostConfig {
    HostConfig {
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                ("max-file".to_string(), LOG_MAX_FILE.to_string()),
            ])),
        }),
        security_opt: Some(vec!["no-new-privileges".into()]),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(CAP_ALLOW.iter().map(|c| c.to_string()).collect()),
        init: Some(true),
        ..Default::default()
    }
}

/// What the agent needs of a listed container. The process port comes from the `paas.port`
/// label, else `default_port` (databases listen on 5432).
fn observe(c: bollard::models::ContainerSummary, default_port: Option<u16>) -> Option<Observed> {
    let name = c.names?.first()?.trim_start_matches('/').to_string();
    let labels = c.labels.unwrap_or_default();
    let port = labels.get(LABEL_PORT).and_then(|p| p.parse().ok()).or(default_port);
    let host_port = c
        .ports
        .unwrap_or_default()
        .iter()
        .find(|p| Some(p.private_port) == port && p.public_port.is_some())
        .and_then(|p| p.public_port);
    let ip = c
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|nets| nets.into_values().find_map(|e| e.ip_address.filter(|ip| !ip.is_empty())));
    Some(Observed { name, state: c.state.unwrap_or_default(), labels, host_port, port, ip })
}

/// The engine's own message for an API error, without bollard's wrapping.
pub fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

impl DockerClient {
    /// Runs `cmd` inside a running container and returns its exit code (output is discarded).
    pub async fn exec(&self, name: &str, cmd: &[String]) -> anyhow::Result<i64> {
        Ok(self.exec_output(name, cmd).await?.0)
    }

    /// Runs `cmd` inside a running container; its exit code and standard output.
    pub async fn exec_output(&self, name: &str, cmd: &[String]) -> anyhow::Result<(i64, String)> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let opts = CreateExecOptions::<String> {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self.docker.create_exec(name, opts).await.context("creating an exec in the container")?;
        let mut stdout = String::new();
        if let StartExecResults::Attached { mut output, .. } = self.docker.start_exec(&exec.id, None).await? {
            while let Some(Ok(chunk)) = output.next().await {
                if let LogOutput::StdOut { message } = chunk {
                    stdout.push_str(&String::from_utf8_lossy(&message));
                }
            }
        }
        let done = self.docker.inspect_exec(&exec.id).await?;
        Ok((done.exit_code.unwrap_or(-1), stdout))
    }
}

impl DockerClient {
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
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::APP.to_string(), job.app.clone()),
            (labels::ENV.to_string(), job.env.clone()),
            (labels::RELEASE.to_string(), job.release.to_string()),
            (labels::NODE.to_string(), self.node.clone()),
            (LABEL_JOB.to_string(), job.id.clone()),
        ]);
        let env: Vec<String> =
            job.config.iter().chain(&job.env_vars).map(|(k, v)| format!("{k}={v}")).collect();
        let host_config = HostConfig {
            network_mode: (!job.network.is_empty()).then(|| job.network.clone()),
            ..limited_host_config(&job.limits)
        };
        if !job.network.is_empty() {
            self.ensure_network(&job.network, &job.app, &job.env, &job.subnet).await?;
        }
        let config = ContainerConfig {
            image: Some(job.image.clone()),
            cmd: Some(job.command.clone()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: name.to_string(), platform: None };
        self.docker
            .create_container(Some(opts), config)
            .await
            .map_err(|e| anyhow::anyhow!(docker_message(&e)))?;
        self.docker
            .start_container(name, None::<StartContainerOptions<String>>)
            .await
            .map_err(|e| anyhow::anyhow!(docker_message(&e)))
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
}

impl DockerClient {
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
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::NODE.to_string(), self.node.clone()),
            (LABEL_JOB.to_string(), "extract".to_string()),
        ]);
        let config =
            ContainerConfig { image: Some(image.to_string()), labels: Some(labels), ..Default::default() };
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

impl DockerClient {
    /// Creates the environment's private network when this node lacks it, on `subnet` from the
    /// platform's pool (Docker picks a range when `subnet` is empty: an environment from before
    /// subnets keeps what it has). A network of that name is used only when it carries the
    /// platform's labels for this environment, else refused; one with another subnet (left by
    /// a deleted environment of the same name) is made again once nothing is attached to it.
    pub async fn ensure_network(&self, name: &str, app: &str, env: &str, subnet: &str) -> anyhow::Result<()> {
        use bollard::models::{Ipam, IpamConfig};
        use bollard::network::CreateNetworkOptions;
        if let Ok(found) = self.docker.inspect_network::<String>(name, None).await {
            if subnet.is_empty() {
                return Ok(());
            }
            let tags = found.labels.unwrap_or_default();
            let tag = |k: &str| tags.get(k).map(String::as_str);
            anyhow::ensure!(
                tag(labels::MANAGED) == Some("true") && tag(labels::APP) == Some(app) && tag(labels::ENV) == Some(env),
                "a Docker network named {name} exists that paas did not make for {app}/{env}; remove or rename it so the platform can make its own"
            );
            let has = found
                .ipam
                .and_then(|i| i.config)
                .unwrap_or_default()
                .iter()
                .any(|c| c.subnet.as_deref() == Some(subnet));
            if has || found.containers.is_some_and(|c| !c.is_empty()) {
                return Ok(());
            }
            tracing::info!(
                network = name,
                subnet,
                "making the environment's network again on its assigned subnet"
            );
            self.docker
                .remove_network(name)
                .await
                .map_err(|e| anyhow::anyhow!("replacing network {name}: {}", docker_message(&e)))?;
        }
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::APP.to_string(), app.to_string()),
            (labels::ENV.to_string(), env.to_string()),
            (labels::NODE.to_string(), self.node.clone()),
        ]);
        let ipam = (!subnet.is_empty()).then(|| Ipam {
            config: Some(vec![IpamConfig { subnet: Some(subnet.to_string()), ..Default::default() }]),
            ..Default::default()
        });
        let opts = CreateNetworkOptions {
            name: name.to_string(),
            driver: "bridge".to_string(),
            labels,
            ipam: ipam.unwrap_or_default(),
            ..Default::default()
        };
        match self.docker.create_network(opts).await {
            Ok(_) => Ok(()),
            // Another task created it meanwhile.
            Err(_) if self.docker.inspect_network::<String>(name, None).await.is_ok() => Ok(()),
            Err(e) => {
                let msg = docker_message(&e);
                let hint = if msg.contains("overlap") {
                    " (another network on this Docker engine holds addresses of the platform's network pool; see --network-pool)"
                } else {
                    ""
                };
                Err(anyhow::anyhow!("creating network {name} on {subnet}: {msg}{hint}"))
            }
        }
    }

    /// Removes this node's environment networks for which `wanted` says no: their environment
    /// was deleted or has nothing left on this node. Only networks with the platform's labels
    /// for this node are looked at. Docker refuses to remove a network something is attached
    /// to (a container still retiring); those are counted and left for the next call.
    pub async fn remove_unwanted_networks(&self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<usize> {
        use bollard::network::ListNetworksOptions;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}=true", labels::MANAGED), format!("{}={}", labels::NODE, self.node)],
        )]);
        let found = self.docker.list_networks(Some(ListNetworksOptions { filters })).await?;
        let mut left = 0;
        for name in found.into_iter().filter_map(|n| n.name).filter(|n| !wanted(n)) {
            match self.docker.remove_network(&name).await {
                Ok(()) => {
                    tracing::info!(network = %name, "removed the network of an environment this node no longer runs")
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => {
                    tracing::debug!(network = %name, error = %docker_message(&e), "network not removed yet");
                    left += 1;
                }
            }
        }
        Ok(left)
    }

    /// The database container `name` as observed (any state), if it exists.
    pub async fn database(&self, name: &str) -> anyhow::Result<Option<Observed>> {
        let list = self
            .labelled(vec![format!("{}={}", labels::NODE, self.node), format!("{}", labels::ROLE)])
            .await?;
        Ok(list.into_iter().filter_map(|c| observe(c, Some(5432))).find(|o| o.name == name))
    }

    /// Creates and starts a PostgreSQL server: data on its named volume, reachable as its role
    /// (`db-primary`) on the environment's network and on this node's private address.
    pub async fn create_database(
        &self,
        spec: &protocol::agent::DatabaseSpec,
        script: &str,
    ) -> anyhow::Result<()> {
        use bollard::volume::CreateVolumeOptions;
        self.ensure_network(&spec.network, &spec.app, &spec.env, &spec.subnet).await?;
        let labels = self.db_labels(spec, &spec.role);
        let vol =
            CreateVolumeOptions { name: spec.volume.clone(), labels: labels.clone(), ..Default::default() };
        self.docker
            .create_volume(vol)
            .await
            .map_err(|e| anyhow::anyhow!("creating volume: {}", docker_message(&e)))?;
        self.create_postgres(spec, &spec.name, script, labels, false).await
    }

    /// A throwaway copy of a database's server for restore drills: same image, names and
    /// roles, no volume (the container layer), no network at all.
    pub async fn create_verify_database(
        &self,
        spec: &protocol::agent::DatabaseSpec,
        name: &str,
        script: &str,
    ) -> anyhow::Result<()> {
        let _ = self.stop_and_remove(name, 1).await;
        let labels = self.db_labels(spec, "db-verify");
        self.create_postgres(spec, name, script, labels, true).await
    }

    fn db_labels(&self, spec: &protocol::agent::DatabaseSpec, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::APP.to_string(), spec.app.clone()),
            (labels::ENV.to_string(), spec.env.clone()),
            (labels::NODE.to_string(), self.node.clone()),
            (labels::ROLE.to_string(), role.to_string()),
        ])
    }

    async fn create_postgres(
        &self,
        spec: &protocol::agent::DatabaseSpec,
        name: &str,
        script: &str,
        labels: HashMap<String, String>,
        throwaway: bool,
    ) -> anyhow::Result<()> {
        use bollard::models::{EndpointSettings, Mount, MountTypeEnum};
        crate::dbroles::ready(spec).map_err(|why| anyhow::anyhow!("cannot create the database: {why}"))?;
        // The start scripts read the passwords and unset them before postgres starts.
        let mut env = vec![
            format!("PG_MAJOR={}", spec.version),
            format!("PGDATA={}", crate::dbroles::PGDATA),
            format!("POSTGRES_USER={}", spec.user),
            format!("POSTGRES_PASSWORD={}", spec.password),
            format!("POSTGRES_DB={}", spec.database),
            format!("SUPERUSER_PASSWORD={}", spec.superuser_password),
            format!("REPLICATION_PASSWORD={}", spec.replication_password),
            format!("PG_HBA={}", crate::dbroles::pg_hba(&spec.user)),
            format!("MAX_CONNECTIONS={}", spec.max_connections),
        ];
        if spec.role == "db-replica" && !throwaway {
            env.push(format!("PRIMARY_HOST={}", spec.primary_host));
            env.push(format!("PRIMARY_PORT={}", spec.primary_port));
            env.push(format!("PRIMARY_CONNINFO={}", crate::dbroles::primary_conninfo(spec)));
        }
        // A server gets more room than an app process: one backend process per connection.
        let limits = protocol::manifest::Limits {
            memory_bytes: DB_MEMORY,
            millicpus: 2000,
            pids: (spec.max_connections * 2 + 64).max(512),
        };
        let mut host_config = HostConfig {
            // PostgreSQL's own shared memory needs more than Docker's 64 MB default.
            shm_size: Some(256 * 1024 * 1024),
            ..limited_host_config(&limits)
        };
        let mut networking = None;
        if throwaway {
            host_config.network_mode = Some("none".into());
        } else {
            host_config.mounts = Some(vec![Mount {
                target: Some("/var/lib/postgresql/data".into()),
                source: Some(spec.volume.clone()),
                typ: Some(MountTypeEnum::VOLUME),
                ..Default::default()
            }]);
            host_config.port_bindings = Some(HashMap::from([(
                "5432/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some(self.private_addr.clone()),
                    host_port: Some(if spec.host_port == 0 {
                        String::new()
                    } else {
                        spec.host_port.to_string()
                    }),
                }]),
            )]));
            host_config.network_mode = Some(spec.network.clone());
            let endpoint = EndpointSettings { aliases: Some(vec![spec.role.clone()]), ..Default::default() };
            networking = Some(bollard::container::NetworkingConfig {
                endpoints_config: HashMap::from([(spec.network.clone(), endpoint)]),
            });
        }
        let config = ContainerConfig {
            image: Some(spec.image.clone()),
            cmd: Some(vec!["sh".to_string(), "-c".to_string(), script.to_string()]),
            env: Some(env),
            labels: Some(labels),
            user: Some("postgres".into()),
            // Fast shutdown: SIGINT ends sessions and checkpoints; SIGTERM would wait for clients.
            stop_signal: Some("SIGINT".into()),
            exposed_ports: (!throwaway).then(|| HashMap::from([("5432/tcp".to_string(), HashMap::new())])),
            host_config: Some(host_config),
            networking_config: networking,
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: name.to_string(), platform: None };
        self.docker
            .create_container(Some(opts), config)
            .await
            .map_err(|e| anyhow::anyhow!(docker_message(&e)))?;
        self.start(name).await
    }

    /// Builds the default PostgreSQL image from the embedded Dockerfile.
    pub async fn build_postgres(
        &self,
        tag: &str,
        version: u32,
        dockerfile: &str,
        network: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
        let context = bytes::Bytes::from(tar.into_inner()?);
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            ("paas.image".to_string(), "postgres".to_string()),
        ]);
        let args = HashMap::from([("PG_MAJOR".to_string(), version.to_string())]);
        self.build_with_args(context, tag, labels, args, network, |line| tracing::debug!("{line}"))
            .await
            .map(drop)
    }
}

impl DockerClient {
    /// Names of this node's database containers with `role` (`db-primary`, `db-replica`,
    /// `db-verify`).
    pub async fn database_names(&self, role: &str) -> anyhow::Result<Vec<String>> {
        let list = self
            .labelled(vec![format!("{}={}", labels::NODE, self.node), format!("{}={role}", labels::ROLE)])
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| Some(c.names?.first()?.trim_start_matches('/').to_string()))
            .collect())
    }
}
