//! The agent protocol under `/agent/v1`: agents register, long-poll their assignment (a blocking
//! query on a state index, as Nomad does), fetch build sources and report what Docker runs.

use crate::manifest::HealthCheck;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterNode {
    pub name: String,
    /// Address app containers publish on; only the node itself and its peers reach it.
    pub private_addr: String,
    /// Whether this node runs the ingress and so needs the route table.
    pub ingress: bool,
    /// What the node offers to replicas' reservations (zero from agents before capacities:
    /// not counted).
    #[serde(default)]
    pub capacity: Capacity,
    /// The agent protocol's version the agent speaks ([`PROTOCOL_VERSION`]; 1 before it was
    /// sent).
    #[serde(default = "first_version")]
    pub protocol: u32,
}

impl RegisterNode {
    /// A node of the current protocol that offers no capacity figures (counted as unlimited).
    pub fn new(name: &str, private_addr: &str, ingress: bool) -> Self {
        Self {
            name: name.to_string(),
            private_addr: private_addr.to_string(),
            ingress,
            capacity: Capacity::default(),
            protocol: PROTOCOL_VERSION,
        }
    }
}

/// The agent protocol's version. The control plane works with agents one version apart, so
/// nodes can be upgraded one at a time.
pub const PROTOCOL_VERSION: u32 = 2;

fn first_version() -> u32 {
    1
}

/// CPU and memory, as a node offers them or replicas reserve them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capacity {
    /// Thousandths of a CPU.
    pub millicpus: u64,
    pub memory_bytes: u64,
}

/// The answer to a registration (a node's own, over mutual TLS: its address or ingress role may
/// have changed). Joining is [`crate::tls::JoinRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredNode {
    pub name: String,
}

/// Everything one node should be doing. Returned whole on every change so that the agent's
/// reconcile loop is a pure comparison of desired and observed state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Assignment {
    /// Containers that should exist and run on this node.
    pub containers: Vec<ContainerSpec>,
    /// Images this node should build or resolve.
    pub builds: Vec<BuildTask>,
    /// The ingress route table (empty for nodes without the ingress role).
    pub routes: Vec<Route>,
    /// One-off containers to run to completion: release phases and `paas run`.
    pub jobs: Vec<JobSpec>,
    /// Static files of releases being rolled out, for ingress nodes to extract before the
    /// switch (the deploy waits until they report them ready).
    pub static_prefetch: Vec<StaticRoute>,
    /// Managed databases this node runs.
    pub databases: Vec<DatabaseSpec>,
    /// Work on managed databases to run once each: backups, restore drills, restores, psql.
    pub db_tasks: Vec<DbTask>,
    /// Image ids a prune must keep whatever their age: each environment's current, target and
    /// rollback (the release that served before the current one) images.
    pub keep_images: Vec<String>,
    /// The latest prune asked for (`paas nodes prune`); the agent prunes when it grows and
    /// reports the outcome under this id.
    pub prune: u64,
    /// Certificates an ingress node serves over HTTPS, picked by the name a client asks for
    /// (SNI); empty for nodes without the ingress role.
    pub certificates: Vec<TlsCertificate>,
    /// ACME HTTP-01 challenges an ingress node answers on plain HTTP, for any host, while the
    /// control plane obtains a certificate.
    pub acme_challenges: Vec<AcmeChallenge>,
    /// Deleted apps whose objects on this node go too (`paas apps delete --purge`).
    pub purges: Vec<Purge>,
    /// The node's assignment generation, raised when the node is declared lost and its work
    /// placed elsewhere. A report must carry the current one for its containers to count, so
    /// a node that comes back after being lost cannot put its stale replicas back in service.
    pub generation: u64,
    /// Image ids this node has that the control plane lacks and another node may need: the
    /// agent sends each (`docker save`) once (empty on a platform of one node).
    pub send_images: Vec<String>,
    /// The external registry images travel through between nodes (`paas server --registry`);
    /// none: through the control plane. Sends push there, fetches pull from there.
    pub registry: Option<crate::registry::Registry>,
}

/// Removes what a deleted app left on a node: its database volumes, networks and images (only
/// objects with the platform's, the app's and the node's labels, and none the assignment uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// Grows per request; the outcome is reported under it.
    pub id: u64,
    pub app: String,
}

/// What one purge removed on a node, and what it could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PurgeOutcome {
    /// The [`Purge::id`] it answers.
    pub id: u64,
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
    pub images: Vec<String>,
    /// Objects left in place, each with why (still in use when the purge gave up waiting).
    pub left: Vec<String>,
}

/// `GET /.well-known/acme-challenge/{token}` answers `key_authorization`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    pub token: String,
    pub key_authorization: String,
}

/// A certificate and its key, for the host names it was issued for.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsCertificate {
    /// The names it is served for: exact host names, or `*.example.com` for one label.
    pub hosts: Vec<String>,
    /// PEM: the certificate first, then the intermediates that chain it to a root.
    pub chain_pem: String,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key_pem: String,
}

/// Never prints the key.
impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// One piece of work on a managed database, run once by the agent of the node its server is on
/// (verification runs in a throwaway container there). Its id makes it idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbTask {
    pub id: String,
    pub kind: DbTaskKind,
    /// The server it runs against; for a verification, the server whose image and names the
    /// throwaway copy uses.
    pub server: DatabaseSpec,
    /// The backup it produces (backup) or reads (verify, restore).
    #[serde(default)]
    pub backup: String,
    #[serde(flatten)]
    pub params: DbTaskParams,
}

/// What restores and psql need besides the server; the control plane stores it as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DbTaskParams {
    /// Restore: the database restored into, created first when `create_target`.
    pub target_database: String,
    pub create_target: bool,
    /// psql: its arguments and what it reads on stdin.
    pub psql_args: Vec<String>,
    pub input: String,
    /// Recover: replay the WAL archive up to this moment (RFC 3339); empty replays all of it
    /// (the drill that proves a base backup).
    pub target_time: String,
    /// Recover: the base backup it starts from.
    pub base_backup: String,
    /// Recover: dump the recovered database and upload it as the task's backup; without it the
    /// recovery is a drill that proves `base_backup` (the task's backup) with row counts.
    pub dump: bool,
}

crate::string_enum! {
    pub enum DbTaskKind {
        Backup = "backup",
        Verify = "verify",
        Restore = "restore",
        Psql = "psql",
        /// A physical base backup of the primary (`pg_basebackup`), the start of point-in-time
        /// recovery.
        BaseBackup = "base-backup",
        /// A throwaway server from a base backup plus the WAL archive, recovered to a moment:
        /// its rows counted and (with `output_backup`) its database dumped.
        Recover = "recover",
    }
}

crate::string_enum! {
    /// Where a database task stands: `waiting` is held back from the agent (a restore waiting
    /// for its safety backup), `pending` is handed to it (and may be running).
    pub enum DbTaskStatus {
        Waiting = "waiting",
        Pending = "pending",
        Done = "done",
        Failed = "failed",
    }
}

impl DbTaskStatus {
    pub fn is_open(self) -> bool {
        matches!(self, Self::Waiting | Self::Pending)
    }
}

crate::string_enum! {
    /// A database server's role: also its container's alias on the environment's network and
    /// its `paas.role` label.
    pub enum DbRole {
        Primary = "db-primary",
        Replica = "db-replica",
    }
}

/// What a database task found: for backups and verifications the exact row count of every
/// table (backups at dump time, verifications after the restore).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DbTaskResult {
    /// `None` when it succeeded.
    pub error: Option<String>,
    pub tables: BTreeMap<String, u64>,
    /// psql's output and exit code.
    pub output: String,
    pub exit_code: Option<i64>,
    /// Base backups: the WAL segment recovery from it starts at.
    pub wal_start: String,
}

/// A managed PostgreSQL server: the platform drives the binaries itself (initdb on first start,
/// then postgres) on a named volume, so its data outlives the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    pub app: String,
    pub env: String,
    /// Also the container's alias on the app's network and its `paas.role` label.
    pub role: DbRole,
    pub name: String,
    pub image: String,
    pub volume: String,
    /// The environment's private Docker network, shared with its app containers.
    pub network: String,
    /// The network's subnet (CIDR) from the platform's pool, the same on every node; empty for
    /// an environment from before subnets, whose network Docker gave an address range.
    #[serde(default)]
    pub subnet: String,
    pub version: u32,
    pub database: String,
    /// The app's role (the `DATABASE_URL` user): owns `database`, nothing more.
    pub user: String,
    pub password: String,
    /// The platform's own secrets: the `postgres` superuser's password (it is only ever used
    /// over the local socket; pg_hba refuses it over the network) and the `replicator` role's,
    /// the only role allowed replication connections. Empty from a control plane that has not
    /// generated them yet: the agent then leaves the server's roles alone.
    #[serde(default)]
    pub superuser_password: String,
    #[serde(default)]
    pub replication_password: String,
    pub max_connections: u32,
    /// For a replica: where its primary answers (`db-primary` on the shared network, or the
    /// primary node's private address when the replica runs elsewhere).
    #[serde(default)]
    pub primary_host: String,
    #[serde(default)]
    pub primary_port: u16,
    /// Port to publish on the node's private address; 0 lets Docker pick (the first start).
    #[serde(default)]
    pub host_port: u16,
    /// A primary forces its current WAL segment into the archive after this many seconds with
    /// writes (`archive_timeout`): the most committed work a lost disk can take with it. 0 (a
    /// control plane before archiving) leaves archiving off.
    #[serde(default)]
    pub archive_timeout_secs: u32,
    /// A primary with a replica stops (and stays stopped) once its agent has heard nothing from
    /// the control plane for this many seconds while no replica streams from it: shorter than
    /// the time after which the control plane declares the node lost and promotes the replica,
    /// so two primaries never take writes. 0: no lease (no replica, or an older control plane).
    #[serde(default)]
    pub lease_secs: u32,
}

/// A one-off container: runs `command` in a release's image with its config, once, streaming
/// its output back; the container is removed when it exits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Unique; also the container's `paas.job` label, so a restarted agent adopts instead of
    /// running it twice.
    pub id: String,
    pub app: String,
    pub env: String,
    pub release: u32,
    pub image: String,
    pub command: Vec<String>,
    /// The environment's private network, so jobs reach its database like the app does.
    #[serde(default)]
    pub network: String,
    /// The network's subnet (CIDR) from the platform's pool, the same on every node; empty for
    /// an environment from before subnets, whose network Docker gave an address range.
    #[serde(default)]
    pub subnet: String,
    pub env_vars: BTreeMap<String, String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Mask config values in the output: yes for release phases (their output is deploy
    /// output), no for `paas run`, whose output the user asked to see.
    #[serde(default)]
    pub mask_output: bool,
    /// The release's `web` limits (or the defaults): a one-off is held like the app.
    #[serde(default)]
    pub limits: crate::manifest::Limits,
    /// The process its output is logged under (`release`, `run`, `cron-<name>`); empty from a
    /// control plane before it, which meant `release` when masked and `run` otherwise.
    #[serde(default)]
    pub process: String,
    /// Stop the container after this many seconds and report the job failed; 0: no limit.
    #[serde(default)]
    pub timeout_secs: u64,
    /// A run the user joins (`paas run` with stdin): the agent connects it through the control
    /// plane instead of shipping its output, and stops it when the user goes.
    #[serde(default)]
    pub attach: Option<crate::api::Attach>,
    /// Run `command` inside this running container (a database server, for `paas db psql` at
    /// a terminal) instead of in a new one; `image` and `network` are then unused.
    #[serde(default)]
    pub exec_in: Option<String>,
}

impl JobSpec {
    /// The process its output is logged under.
    pub fn process(&self) -> &str {
        match (self.process.as_str(), self.mask_output) {
            ("", true) => "release",
            ("", false) => "run",
            (p, _) => p,
        }
    }
}

/// Output lines of a job, in batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobLog {
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    /// `None` when the container could not run at all (`error` says why).
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WatchResponse {
    /// State index this assignment reflects; pass it back to block until something changes.
    pub index: u64,
    pub assignment: Assignment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub app: String,
    pub env: String,
    pub process: String,
    pub release: u32,
    pub replica: u32,
    /// Image id to run (resolved by the build step, so every node runs the same digest).
    pub image: String,
    /// Command override; `None` runs the image's own.
    pub command: Option<Vec<String>>,
    /// Port the process listens on inside the container (passed as `PORT`).
    pub port: u16,
    /// The environment's private Docker network (where its database answers).
    #[serde(default)]
    pub network: String,
    /// The network's subnet (CIDR) from the platform's pool, the same on every node; empty for
    /// an environment from before subnets, whose network Docker gave an address range.
    #[serde(default)]
    pub subnet: String,
    /// Platform-set variables (`PORT`).
    pub env_vars: BTreeMap<String, String>,
    /// The user's config vars: set in the container's environment, and masked wherever the
    /// agent passes on what the container printed.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    pub healthcheck: HealthCheck,
    /// Once unassigned: how long in-flight requests may take before SIGTERM.
    pub drain_timeout_ms: u64,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace_ms: u64,
    #[serde(default)]
    pub limits: crate::manifest::Limits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildTask {
    pub app: String,
    pub env: String,
    pub release: u32,
    /// Tag to give the built image.
    pub tag: String,
    pub kind: BuildKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum BuildKind {
    /// Build the Dockerfile of the uploaded source bundle (fetch it from the source URL).
    Dockerfile,
    /// Use an existing image (pull it if the node lacks it).
    Image { reference: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub host: String,
    pub app: String,
    pub env: String,
    pub release: u32,
    /// `addr:port` of every healthy replica.
    pub backends: Vec<String>,
    /// The web replica number of each backend, in the same order, so the ingress's access log
    /// names the replica that answered (empty in route tables older than this field).
    #[serde(default)]
    pub replicas: Vec<u32>,
    /// Static files the ingress serves itself for this route.
    pub static_files: Option<StaticRoute>,
    /// The environment's `[ingress]` limits (the defaults in route tables older than them).
    #[serde(default)]
    pub limits: crate::manifest::IngressLimits,
    /// The environment is in maintenance mode: the ingress answers 503 itself, the app sees
    /// nothing.
    #[serde(default)]
    pub maintenance: bool,
}

/// Where an ingress node gets a route's static files: `dir` of `image`, served under `prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    pub image: String,
    pub dir: String,
    pub prefix: String,
    pub max_age_secs: u64,
    /// The app's pages for the ingress's own answers (`[errors]`), files under `dir`.
    #[serde(default)]
    pub errors: std::collections::BTreeMap<String, String>,
}

impl StaticRoute {
    /// Names the extracted copy: one per image and directory.
    pub fn key(&self) -> String {
        let id = self.image.strip_prefix("sha256:").unwrap_or(&self.image);
        let dir: String = self.dir.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        format!("{}{dir}", &id[..id.len().min(16)])
    }
}

/// Build output, sent in batches while the build runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildLog {
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildResult {
    pub image_id: Option<String>,
    pub error: Option<String>,
}

/// Largest request body the control plane accepts on `/agent/v1` (backup data, which streams,
/// aside). Agents keep reports and output batches below it.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What the agent observes; sent when something changes and as the heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    pub containers: Vec<ContainerStatus>,
    /// When the agent looked at Docker for this report (unix ms, agent clock), so a deploy can
    /// insist on an observation made after its stability window ended.
    pub observed_at_ms: u64,
    /// The state index of the assignment the pass behind this report worked from (at least:
    /// it may have had a newer one), so the control plane can tell a report about a new
    /// database from one about an earlier database of the same container name.
    #[serde(default)]
    pub assignment_index: u64,
    /// Keys ([`StaticRoute::key`]) of the static directories this node's ingress can serve.
    pub static_ready: Vec<String>,
    pub databases: Vec<ContainerStatus>,
    /// What the platform's objects take on this node's disk, measured every few minutes.
    pub disk: Option<DiskUsage>,
    /// The outcome of the latest prune the control plane asked for.
    pub pruned: Option<PruneOutcome>,
    /// Outcomes of the latest purges the control plane asked for.
    pub purged: Vec<PurgeOutcome>,
    /// Names of the database volumes on this node (the platform's, with this node's label),
    /// assigned or left by a deleted database; `None` until the agent could list them.
    pub volumes: Option<Vec<String>>,
    /// The [`Assignment::generation`] the agent works from (0 from agents before generations).
    #[serde(default)]
    pub generation: u64,
}

/// Disk taken by the platform's objects on one node (bytes; `None` where the agent cannot tell).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Images carrying the platform's labels (layers shared between images count once per image).
    pub images: u64,
    /// Database volumes.
    pub volumes: u64,
    /// Container logs (json-file), when the engine's directory is readable by the agent.
    pub logs: Option<u64>,
    /// Backup dumps kept on this node (the agent keeps none; the control plane keeps its own).
    pub backups: Option<u64>,
}

/// What one prune removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneOutcome {
    /// The [`Assignment::prune`] it answers.
    pub request: u64,
    /// Image tags and ids removed (old releases, dangling images).
    pub images: Vec<String>,
    /// Stopped containers removed.
    pub containers: Vec<String>,
    pub reclaimed_bytes: u64,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    /// Docker's state: `created`, `running`, `exited`, ...
    pub state: String,
    pub healthy: bool,
    /// Port published on the node's private address.
    pub host_port: Option<u16>,
    pub restarts: u32,
    /// Last lines the container printed, sent while it is not healthy so a failed deploy can say why.
    pub log_tail: Vec<String>,
    /// Database servers only: figures the agent samples with psql inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<DatabaseFigures>,
    /// The exit code of the container's last stop, once it stopped by itself (a crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// What `paas db info` shows about a server, sampled every few seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseFigures {
    /// Client connections in use, against `max_connections`.
    pub connections: u64,
    pub max_connections: u64,
    pub size_bytes: u64,
    /// Replicas: WAL received but not yet replayed.
    pub lag_bytes: Option<u64>,
    /// Replicas: age of the last replayed transaction (grows while the primary is idle).
    pub lag_seconds: Option<f64>,
    /// Why the app's role could not log in over the network with its password, when it could
    /// not: the server runs, but the app cannot use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_error: Option<String>,
    /// Primaries: WAL segments the archiver could not hand to the agent's spool
    /// (`pg_stat_archiver.failed_count`), and the segments waiting in that spool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_failures: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_backlog: Option<u64>,
    /// Primaries: WAL written but not yet flushed by the furthest replica behind (the most a
    /// failover to it would lose, as last seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_behind_bytes: Option<u64>,
    /// Replicas: whether WAL streams in from the primary right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ingress node caches its route table; one written before the limits and maintenance
    /// fields existed must still load, with the default limits and maintenance off.
    #[test]
    fn older_route_tables_load_with_default_limits() {
        let old = r#"{"host":"a.localhost","app":"a","env":"production","release":1,
            "backends":["127.0.0.1:5000"],"static_files":null}"#;
        let route: Route = serde_json::from_str(old).unwrap();
        assert_eq!(route.limits, crate::manifest::IngressLimits::default());
        assert!(!route.maintenance);
    }
}
