//! The paas control plane: the only writer of desired state. Serves the REST API (`/api/v1`)
//! and the web console on the public listener, the agent protocol (`/agent/v1`, mutual TLS) on
//! the agent listener, and runs deploy orchestration.

pub mod access;
pub mod apps;
pub mod assign;
pub mod assign_view;
pub mod attach;
pub mod backups;
pub mod ca;
pub mod config;
pub use protocol::cron;
pub mod alerts;
pub mod databases;
pub mod dbroles;
pub mod deploy;
/// Log drains; their files sit with the log store's, as a module of their own.
#[path = "logs/drains.rs"]
pub mod drains;
pub mod edge;
pub mod error;
pub mod failover;
pub mod http;
pub mod identity;
pub mod images;
mod leader;
pub mod logs;
pub mod metrics;
pub mod nodes;
pub mod notify;
mod primary_watch;
pub mod releases;
pub mod restarts;
pub mod runs;
pub mod s3;
pub mod scheduled;
pub mod secrets;
pub mod source;
pub mod state;
pub mod state_backup;
pub mod store;
pub(crate) mod tokens;
pub mod upkeep;
pub mod wakes;

pub use state::AppState;

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for background tasks (deploys settle, backup steps end); what is
/// still running then is left in the store as unfinished, and the next start ends it.
const DRAIN: Duration = Duration::from_secs(10);

/// Everything the control plane needs to start; built by the CLI from flags and validated there.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the state database, uploaded sources and the bootstrap tokens.
    pub data_dir: PathBuf,
    /// Apps are served at `<app>.<base_domain>` and `<app>-<env>.<base_domain>`.
    pub base_domain: String,
    /// Port the ingress serves plain HTTP on, for the URLs shown to users (omitted when 80).
    pub ingress_http_port: u16,
    /// Port the ingress serves HTTPS on, for the URLs shown to users (omitted when 443).
    pub ingress_https_port: u16,
    /// Where database backups are kept, and the S3-compatible bucket they are copied to.
    pub backup_dir: PathBuf,
    pub backup_s3: Option<s3::S3Config>,
    /// A primary's `archive_timeout`: the most committed writes a lost disk can take with it.
    pub db_archive_timeout_secs: u32,
    /// Seals the platform's own state backups; none are taken without it.
    pub state_passphrase: Option<state_backup::Passphrase>,
    pub state_backup_every: Duration,
    /// A state backup to bring into the (empty) data directory before opening it.
    pub restore_from: Option<String>,
    /// Largest pack a `git push` may send.
    pub git_max_push_bytes: u64,
    /// Longest a `git push` may take, its build and deploy included.
    pub git_push_timeout: std::time::Duration,
    /// Where new environments' network subnets come from.
    pub network_pool: store::NetworkPool,
    /// How long a node certificate is valid (agents renew it when a third is left).
    pub node_cert_lifetime: Duration,
    /// How long and how much of the central logs the control plane keeps (`logs/`).
    pub log_retention: logs::Retention,
    /// Log drains: the CA they trust besides the platform's roots, how far behind they may fall.
    pub drains: drains::DrainSettings,
    /// The ACME server custom domains get their certificates from; the local CA's without.
    pub acme: Option<edge::acme::AcmeSettings>,
    /// `--api-tls`: the API listener serves HTTPS with a local-CA certificate for these names
    /// (host names and IP addresses); plain HTTP when `None`.
    pub api_tls: Option<Vec<String>>,
    /// Series the metrics store keeps at most (`metrics/`).
    pub metrics_max_series: usize,
    /// The SMTP server email notifications go through; none: email targets are refused.
    pub smtp: Option<notify::SmtpSettings>,
    /// A node silent this long is lost: its replicas are placed elsewhere (`nodes`).
    pub node_lost_after: Duration,
    /// The PostgreSQL database the state lives in (`paas server --database-url`); `state.db`
    /// in the data directory when `None`.
    pub database_url: Option<String>,
    /// The external registry images travel through between nodes; the control plane keeps
    /// tarballs of them when `None` (`images`).
    pub registry: Option<protocol::registry::Registry>,
}

impl Config {
    /// Settings for a control plane in tests: everything under `dir`, no S3, defaults elsewhere.
    pub fn for_tests(dir: &std::path::Path, base_domain: &str) -> Self {
        Self {
            data_dir: dir.to_path_buf(),
            base_domain: base_domain.into(),
            ingress_http_port: 80,
            ingress_https_port: 443,
            backup_dir: dir.join("backups"),
            backup_s3: None,
            db_archive_timeout_secs: 60,
            state_passphrase: None,
            state_backup_every: state_backup::DEFAULT_EVERY,
            restore_from: None,
            git_max_push_bytes: 1 << 20,
            git_push_timeout: Duration::from_secs(60),
            network_pool: Default::default(),
            node_cert_lifetime: ca::NODE_CERT_LIFETIME,
            log_retention: logs::Retention::default(),
            // Test servers (log receivers) listen on loopback.
            drains: drains::DrainSettings {
                allow_nets: vec!["127.0.0.0/8".parse().expect("a network")],
                ..Default::default()
            },
            acme: None,
            api_tls: None,
            metrics_max_series: metrics::DEFAULT_MAX_SERIES,
            smtp: None,
            node_lost_after: nodes::DEFAULT_LOST_AFTER,
            database_url: None,
            registry: None,
        }
    }
}

/// A control plane whose data directory is opened and whose tokens exist, not yet serving.
pub struct ControlPlane {
    state: AppState,
    /// Token with full API access, written to the CLI config by `paas up`.
    pub admin_token: String,
}

impl ControlPlane {
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        // Keys, tokens, the state database and backups live here: the owner's only.
        protocol::files::private_dir(&config.data_dir)
            .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
        if let Some(source) = &config.restore_from {
            anyhow::ensure!(
                config.database_url.is_none(),
                "--restore-from brings back a SQLite state; a PostgreSQL state is restored with PostgreSQL's own tools"
            );
            state_backup::restore_into(&config, source).await.context("restoring the platform's state")?;
        }
        let store = match &config.database_url {
            Some(url) => store::Store::open_postgres(url).await?,
            None => store::Store::open(&config.data_dir.join("state.db")).await?,
        }
        .with_network_pool(config.network_pool);
        // Servers sharing a database hold the same keys: the first one's, copied through it.
        let start_lock = store.start_lock().await?;
        if store.is_shared() {
            leader::pull_shared(&store, &config.data_dir).await.context("copying the shared keys")?;
        }
        tracing::info!(pool = %config.network_pool, "environment networks take their subnets from");
        // Its own file: log writes never wait on the state database's write lock.
        let logs = logs::LogStore::open(&config.data_dir.join("logs")).await?;
        // An earlier release kept logs in SQLite: moved over once, so an upgrade loses none.
        let moved = logs::import_sqlite(&logs, &config.data_dir.join("logs.db"))
            .await
            .context("moving the earlier log store (logs.db) into the new one")?;
        if moved > 0 {
            tracing::info!(lines = moved, "moved the earlier log store (logs.db) into logs/");
        }
        let admin_token = access::bootstrap(&store, &config.data_dir).await?;
        // The long-lived join token of earlier releases ends (migration 0015 dropped it): nodes
        // join with one-time tokens from `paas nodes token` now.
        if std::fs::remove_file(config.data_dir.join("agent-token")).is_ok() {
            tracing::warn!("the long-lived join token (agent-token) no longer works: agents on other machines join again with `paas nodes token` (see the README); this machine's own agent needs nothing");
        }
        let ca = ca::Ca::load_or_create(&config.data_dir, config.node_cert_lifetime)?;
        let ingress_ca = edge::local_ca::LocalCa::load_or_create(&config.data_dir)?;
        let acme = match &config.acme {
            Some(settings) => Some(Arc::new(edge::acme::Acme::new(settings.clone(), &config.data_dir)?)),
            None => None,
        };
        let secrets = secrets::SecretBox::load_or_create(&config.data_dir)?;
        dbroles::fill_missing_secrets(&store, &secrets)
            .await
            .context("generating the secrets of databases from an earlier release")?;
        let s3 = match &config.backup_s3 {
            Some(c) => Some(s3::S3::new(c.clone()).context("the S3 backup store settings")?),
            None => None,
        };
        protocol::files::private_dir(&config.backup_dir)
            .with_context(|| format!("creating the backup directory {}", config.backup_dir.display()))?;
        let storage = backups::BackupStorage::new(config.backup_dir.clone(), s3.clone());
        tracing::info!(store = %storage.describe(), "backups are kept in");
        let metrics = metrics::Metrics::open(&config.data_dir.join("metrics"), config.metrics_max_series)
            .context("opening the metrics store")?;
        if store.is_shared() {
            leader::push_shared(&store, &config.data_dir).await.context("sharing the keys")?;
        }
        drop(start_lock);
        let mut state = AppState::new(store, logs, Arc::new(config), secrets, storage, ca, ingress_ca);
        state.acme = acme;
        state.metrics = Arc::new(metrics);
        // In the background: an unreachable bucket must not keep the platform (and every app's
        // deploys) from starting; backups then fail loudly with the reason.
        if let Some(s3) = s3 {
            state.spawn(async move {
                if let Err(e) = s3.create_bucket_if_missing().await {
                    tracing::error!(store = %s3.describe(), error = %format!("{e:#}"), "the backup bucket cannot be opened; backups will fail until it can");
                }
            });
        }
        Ok(Self { state, admin_token })
    }

    /// A certificate for the agent of `node` running in this process (`paas up`), which needs
    /// no join token: `proof` is for the key that agent made; any certificate the node had ends.
    pub async fn local_node_certificate(
        &self,
        node: &str,
        proof: &protocol::tls::KeyProof,
    ) -> anyhow::Result<protocol::tls::NodeCertificate> {
        Ok(identity::local_certificate(&self.state, node, proof).await?)
    }

    /// The local CA's certificate, which users trust for the apps' HTTPS.
    pub fn ingress_ca_file(&self) -> std::path::PathBuf {
        self.state.ingress_ca.cert_path().to_path_buf()
    }

    /// Serves the public API on `listener` and the agent API on `agents` until `shutdown` is
    /// cancelled, then stops accepting, lets requests finish, gives background tasks [`DRAIN`]
    /// to end and closes the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        agents: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let agent_addr = agents.local_addr()?;
        let tls = Arc::new(self.state.ca.server_config()?);
        let api_tls = match &self.state.config.api_tls {
            Some(names) => Some(Arc::new(self.state.ingress_ca.api_server_config(names)?)),
            None => None,
        };
        let api_url = format!("{}://{addr}", if api_tls.is_some() { "https" } else { "http" });
        self.state.set_api_url(api_url.clone());
        let router = http::router(self.state.clone(), &api_url)?;
        tracing::info!(%addr, %agent_addr, ca_sha256 = %self.state.ca.fingerprint(), "control plane listening");
        // What lives in this server's own files is kept by every server.
        self.state.spawn(logs::retention(self.state.clone()));
        self.state.spawn(logs::platform::feed(self.state.clone()));
        self.state.spawn(metrics::expire(self.state.clone()));
        self.state.spawn(images::prune(self.state.clone()));
        // Recovery and the loops that must run once: now when this server leads, else when it
        // takes over (`leader`).
        leader::start(&self.state, shutdown.clone()).await?;
        // Deploys and backup steps hear of shutdown at once, while requests drain.
        let (stop, tasks) = (shutdown.clone(), self.state.shutting_down());
        self.state.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => tasks.cancel(),
                _ = tasks.cancelled() => {}
            }
        });
        let agent_router = http::agent_router(self.state.clone());
        let api = async {
            match api_tls {
                Some(config) => http::server::serve_tls(listener, router, config, shutdown.clone()).await,
                None => http::server::serve(listener, router, shutdown.clone()).await,
            }
        };
        tokio::join!(api, http::server::serve_tls(agents, agent_router, tls, shutdown.clone()));
        let left = self.state.drain(DRAIN).await;
        if left > 0 {
            tracing::warn!(
                tasks = left,
                "background tasks still running at shutdown; the next start ends what they left"
            );
        }
        self.state.store.close().await;
        self.state.logs.close().await;
        if self.state.deposed() {
            anyhow::bail!("this control plane lost the lead and stopped; started again, it stands by");
        }
        tracing::info!("control plane stopped");
        Ok(())
    }
}

/// Ends what a previous leader (or this server's last run) left unfinished: deploys, process
/// restarts, backup steps, joined runs. The new leader runs it before anything else.
pub(crate) async fn recover(state: &AppState) -> anyhow::Result<()> {
    deploy::recover(state).await.context("recovering deploys interrupted by the last shutdown")?;
    restarts::recover(state).await.context("recovering process restarts interrupted by the last shutdown")?;
    backups::recover(state).await.context("recovering backups interrupted by the last shutdown")?;
    failover::recover(state).await.context("recovering a switchover interrupted by the last shutdown")?;
    // A joined run lives only as long as its connection, which the restart cut; its node
    // stops its container when the run is refused.
    let ended =
        state.store.end_attached_jobs("the platform restarted during the session, which ended it").await?;
    if ended > 0 {
        tracing::info!(runs = ended, "ended runs whose sessions the restart cut");
    }
    Ok(())
}

/// Starts the loops that must run once, on the leader's `state`.
pub(crate) fn spawn_leader_loops(state: &AppState) {
    state.spawn(backups::scheduler(state.clone()));
    if state.config.state_passphrase.is_some() {
        state.spawn(state_backup::scheduler(state.clone()));
    }
    state.spawn(scheduled::run(state.clone()));
    state.spawn(alerts::run(state.clone()));
    state.spawn(nodes::watch(state.clone()));
    state.spawn(primary_watch::watch(state.clone()));
    state.spawn(drains::run(state.clone()));
    state.spawn(edge::run(state.clone()));
    state.spawn(edge::acme::run(state.clone()));
}
