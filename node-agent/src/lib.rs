//! The paas node agent: registers with the control plane, long-polls its assignment, makes
//! Docker match it, builds images, reports what runs, and (with the ingress role) serves the
//! public HTTP traffic.

mod attach;
mod build;
mod credential;
mod databases;
mod dbroles;
mod dbtasks;
pub mod docker;
mod handover;
mod health;
pub mod ingress;
mod jobs;
mod lines;
mod logs;
mod metrics;
mod precompress;
mod reconcile;
mod statics;
mod sync;
mod upkeep;
mod walship;

pub use credential::GivenIdentity;
pub use logs::{LogHandle, Settings as LogSettings, DEFAULT_SPOOL_BYTES};

use anyhow::Context;
use protocol::agent::{Assignment, NodeReport, RegisterNode};
use std::net::IpAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    /// The control plane's agent address, e.g. `https://10.0.0.5:7071`.
    pub server: String,
    /// One-time join token (`paas nodes token`): joins this node the first time; not needed
    /// once the node has its certificate.
    pub join_token: Option<String>,
    /// A key and certificate issued in-process (`paas up`); they replace the stored ones.
    pub identity: Option<GivenIdentity>,
    pub node_name: String,
    /// Address app containers publish on; never the public one.
    pub private_addr: IpAddr,
    /// Docker network mode for image builds (`host` where the bridge has no egress).
    pub build_network: Option<String>,
    /// Keeps the node's key and certificate, and the last route table so the ingress serves at once after
    /// a restart, even before the control plane answers.
    pub state_dir: PathBuf,
    /// Proxies in front of the ingress whose `X-Forwarded-*` headers are believed (CIDR blocks);
    /// from anyone else they are replaced.
    pub trusted_proxies: Vec<ingress::IpNet>,
    /// Newest release images a prune keeps per environment (besides the current, target and
    /// rollback ones).
    pub keep_images: usize,
    /// Time between prunes of old images, stopped containers and dangling images; `None`: only
    /// when `paas nodes prune` asks.
    pub prune_every: Option<std::time::Duration>,
    /// Directories whose file systems metrics measure besides Docker's and the state
    /// directory's (`paas up`: the backup directory).
    pub disk_paths: Vec<PathBuf>,
    /// What this node offers to replicas' reservations.
    pub capacity: protocol::agent::Capacity,
    /// Counts only images under this node's own tag as its own (several agents sharing one
    /// Docker engine, as tests run them): see `docker::transfer`.
    pub node_scoped_images: bool,
}

/// The machine's CPUs and memory, which a node offers unless told otherwise.
pub fn machine_capacity() -> protocol::agent::Capacity {
    let millicpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000;
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    protocol::agent::Capacity { millicpus, memory_bytes }
}

/// A task of the agent that runs until shutdown and cannot fail.
async fn until_shutdown(work: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    work.await;
    Ok(())
}

/// The public listeners of a node that serves traffic.
pub struct Listeners {
    pub http: TcpListener,
    /// HTTPS, with the certificates the control plane assigns.
    pub https: Option<TcpListener>,
}

/// Runs the agent until `shutdown`; `ingress` are the public listeners when this node serves
/// traffic. App containers are left running on shutdown: they do not depend on the agent.
pub async fn run(
    config: Config,
    ingress: Option<Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with_logs(config, LogSettings::default(), ingress, shutdown).await
}

/// [`run`] with central logs' settings (the spool's cap).
pub async fn run_with_logs(
    config: Config,
    log_settings: LogSettings,
    ingress: Option<Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    protocol::names::check_node(&config.node_name)?;
    // It holds the node's key: the owner's only.
    protocol::files::private_dir(&config.state_dir)
        .with_context(|| format!("creating the agent state directory {}", config.state_dir.display()))?;
    let docker = docker::DockerClient::connect(&config.node_name, &config.private_addr.to_string()).await?;
    let client = protocol::Client::new(&config.server, "");
    let docker = docker.with_transfers(client.clone(), config.node_scoped_images);
    let identity = std::sync::Arc::new(credential::Identity::new(
        client.clone(),
        config.join_token.clone(),
        config.state_dir.join("node-identity.json"),
        &config.node_name,
        config.identity.clone(),
    )?);
    let (renewer, stop) = (identity.clone(), shutdown.clone());
    let registration = RegisterNode {
        name: config.node_name.clone(),
        private_addr: config.private_addr.to_string(),
        ingress: ingress.is_some(),
        capacity: config.capacity,
        protocol: protocol::agent::PROTOCOL_VERSION,
    };

    let routes = ingress::IngressHandle::new();
    let cache = config.state_dir.join("routes.json");
    let statics = statics::Statics::new(docker.clone(), routes.clone(), config.state_dir.join("static"));
    if let Some(cached) = sync::load_routes(&cache) {
        tracing::info!(
            routes = cached.len(),
            "serving the cached route table until the control plane answers"
        );
        statics.ensure(&cached, &[]);
        routes.set_routes(&cached);
    }
    let certs_cache = config.state_dir.join("certificates.json");
    if let Some(cached) = sync::load_certificates(&certs_cache) {
        routes.set_certificates(&cached);
    }

    let (assignment_tx, assignment_rx) = watch::channel::<Option<Assignment>>(None);
    let contact = crate::databases::Contact::default();
    let (report_tx, report_rx) = watch::channel(NodeReport::default());
    let assignment_index = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        renewer.renew_loop(stop).await;
        Ok(())
    });
    // App output, access lines and build output, spooled in the state directory and shipped to
    // the control plane.
    let (collector, logs) = logs::Collector::new(
        &log_settings,
        &config.state_dir.join("logs"),
        &config.node_name,
        docker.clone(),
        client.clone(),
    )
    .context("opening the log spool")?;
    tasks.spawn(until_shutdown(collector.run(shutdown.clone())));
    if let Some(listeners) = ingress {
        let https_port = listeners.https.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port());
        let settings = ingress::Settings {
            trusted_proxies: config.trusted_proxies.clone(),
            logs: logs.clone(),
            https_port,
            ..Default::default()
        };
        let (handle, stop, s) = (routes.clone(), shutdown.clone(), settings.clone());
        let http = listeners.http;
        tasks.spawn(async move { ingress::serve(http, handle, s, stop).await.context("ingress") });
        if let Some(https) = listeners.https {
            let (handle, stop) = (routes.clone(), shutdown.clone());
            tasks.spawn(async move {
                ingress::serve_tls(https, handle, settings, stop).await.context("HTTPS ingress")
            });
        }
    }
    let sampler = metrics::Sampler {
        docker: docker.clone(),
        client: client.clone(),
        node: config.node_name.clone(),
        ingress: registration.ingress.then(|| routes.clone()),
        reports: report_rx.clone(),
        paths: docker
            .root_dir()
            .await
            .into_iter()
            .chain([config.state_dir.clone()])
            .chain(config.disk_paths.iter().cloned())
            .collect(),
    };
    tasks.spawn(until_shutdown(sampler.run(shutdown.clone())));
    let local_ingress = registration.ingress.then(|| routes.clone());
    let paused = dbtasks::Paused::default();
    let reconciler = reconcile::Reconciler::new(
        docker.clone(),
        local_ingress,
        config.private_addr.to_string(),
        (assignment_rx.clone(), assignment_index.clone()),
        report_tx,
        config.build_network.clone(),
        paused.clone(),
    )
    .with_logs(logs.clone())
    .with_generation_file(config.state_dir.join("generation"))
    .with_contact(contact.clone());
    tasks.spawn(until_shutdown(reconciler.run(shutdown.clone())));
    tasks.spawn(until_shutdown(attach::sweep(docker.clone(), assignment_rx.clone(), shutdown.clone())));
    let runner = jobs::JobRunner { docker: docker.clone(), client: client.clone(), logs: logs.clone() };
    tasks.spawn(until_shutdown(runner.run(assignment_rx.clone(), shutdown.clone())));
    let shipper = walship::run(docker.clone(), client.clone(), assignment_rx.clone(), shutdown.clone());
    tasks.spawn(until_shutdown(shipper));
    let db_runner = dbtasks::DbTaskRunner { docker: docker.clone(), client: client.clone(), paused };
    tasks.spawn(until_shutdown(db_runner.run(assignment_rx.clone(), shutdown.clone())));
    let upkeep = upkeep::Upkeep::default();
    let settings = upkeep::Settings { keep_images: config.keep_images, prune_every: config.prune_every };
    let pruner = upkeep.clone().run(docker.clone(), settings, assignment_rx.clone(), shutdown.clone());
    tasks.spawn(until_shutdown(pruner));
    let registry = docker::transfer::follow_registry(docker.clone(), assignment_rx.clone(), shutdown.clone());
    tasks.spawn(until_shutdown(registry));
    let sender = build::send_images(docker.clone(), client.clone(), assignment_rx.clone(), shutdown.clone());
    tasks.spawn(until_shutdown(sender));
    let builder = build::Builder::new(docker, client.clone(), config.build_network.clone(), logs);
    tasks.spawn(until_shutdown(builder.run(assignment_rx.clone(), shutdown.clone())));
    let syncer = std::sync::Arc::new(sync::Syncer {
        client,
        identity,
        registration,
        routes,
        cache,
        certs_cache,
        assignment: assignment_tx,
        assignment_index,
        contact,
        statics,
        upkeep,
    });
    tasks.spawn(until_shutdown(syncer.run(report_rx, shutdown.clone())));

    tracing::info!(node = %config.node_name, addr = %config.private_addr, "node agent running");
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!(error = %format!("{e:#}"), "agent task failed");
            shutdown.cancel();
            result = Err(e);
        }
    }
    tracing::info!("node agent stopped");
    result
}
