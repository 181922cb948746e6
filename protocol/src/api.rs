//! Resources of the public REST API under `/api/v1`, used by the CLI and the web console alike.

use crate::manifest::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Body of every 4xx/5xx answer: one sentence a user can act on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateApp {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub created_at: String,
    pub envs: Vec<EnvSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvSummary {
    pub name: String,
    pub hostname: String,
    /// Where the ingress serves this environment.
    pub url: String,
    /// The release the ingress routes to, if any.
    pub current_release: Option<u32>,
    /// A release being rolled out, if any.
    pub target_release: Option<u32>,
    /// `idle` (nothing deployed), `running`, `deploying` or `degraded` (fewer healthy replicas
    /// than desired).
    pub status: String,
    pub replicas: u32,
    pub healthy_replicas: u32,
    /// Maintenance mode: the ingress answers every request with a 503 page.
    #[serde(default)]
    pub maintenance: bool,
    /// The release serving now: who deployed it, when, and how long its rollout took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_deploy: Option<LastDeploy>,
}

/// Who deployed an environment's current release, when, and how long the rollout took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastDeploy {
    pub version: u32,
    pub by: String,
    pub at: String,
    /// From the release's start to its last deploy event, in seconds.
    pub took_secs: Option<i64>,
}

/// `PUT /apps/{app}/envs/{env}/maintenance`: turns maintenance mode on or off.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetMaintenance {
    pub enabled: bool,
}

/// An environment's maintenance mode, as it is after a change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceMode {
    pub app: String,
    pub env: String,
    pub enabled: bool,
}

crate::string_enum! {
    pub enum ReleaseStatus {
        /// Image being built or resolved.
        Building = "building",
        /// Containers starting, waiting to become healthy.
        Deploying = "deploying",
        /// Serving traffic now.
        Active = "active",
        /// Served earlier, replaced by a later release.
        Superseded = "superseded",
        /// Never served: the build or the start failed.
        Failed = "failed",
    }
}

impl ReleaseStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Active | Self::Superseded | Self::Failed)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Release {
    pub app: String,
    pub env: String,
    pub version: u32,
    pub status: ReleaseStatus,
    /// What the user asked for: `build` (source upload) or the image reference given.
    pub source: String,
    /// Image id (digest) the release runs, once known.
    pub image_id: Option<String>,
    pub created_at: String,
    pub created_by: String,
    /// Why the release failed, when it did.
    pub error: Option<String>,
    /// What changed: "Deploy of a source upload", "Rollback to v3", ...
    pub description: String,
    /// Processes, health checks and deploy settings this release runs with.
    pub manifest: Manifest,
    /// Names of the config vars in the release's snapshot (values are never listed here).
    #[serde(default)]
    pub config_keys: Vec<String>,
}

/// Largest source upload (`paas deploy`, the console's archive upload), gzipped.
pub const MAX_SOURCE_BYTES: u64 = 512 * 1024 * 1024;

/// Asks for a release from an existing image instead of a source upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployImage {
    pub image: String,
    /// The text of `paas.toml`, when the user has one; defaults apply otherwise. The server
    /// parses it for the target environment (and again for promotions).
    pub paas_toml: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateEnv {
    pub name: String,
}

/// An environment's config vars; values are masked (`****`) unless revealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigVars {
    pub app: String,
    pub env: String,
    pub vars: std::collections::BTreeMap<String, String>,
    pub revealed: bool,
}

/// Sets and unsets config vars in one change (one new release).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigChange {
    pub set: std::collections::BTreeMap<String, String>,
    pub unset: Vec<String>,
    /// Mark the keys set as secrets (`paas config set --secret`): masked in listings and in
    /// output whatever their names.
    #[serde(default)]
    pub secret: bool,
}

/// What a config change did: the vars now (masked) and the release it started, if the
/// environment was running one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigChanged {
    pub vars: ConfigVars,
    pub release: Option<Release>,
}

/// Deploys the image another environment runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promote {
    pub from: String,
}

/// `POST /api/v1/apps/{app}/envs/{env}/swap`: the environment whose hostnames `env` takes,
/// giving it its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwapEnvs {
    pub with: String,
}

/// Deploys an earlier release again (as a new release with the same image and settings).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rollback {
    /// The version to return to; the one before the current when `None`.
    pub to: Option<u32>,
}

/// Sets the number of replicas of one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scale {
    pub process: String,
    pub replicas: u32,
}

/// Replicas per process of an environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Formation {
    pub app: String,
    pub env: String,
    pub processes: std::collections::BTreeMap<String, u32>,
}

/// One line of deploy progress: build output or a stage of the rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployEvent {
    pub seq: u64,
    /// RFC 3339 time the event was recorded.
    pub at: String,
    /// `build` for build output, `stage` for rollout progress, `error` for a failure's detail.
    pub kind: String,
    pub text: String,
}

/// A page of deploy events; `release.status` tells whether more will come.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployEvents {
    pub events: Vec<DeployEvent>,
    /// Pass as `after` to get the next page.
    pub next: u64,
    pub release: Release,
    /// Where the environment is served, for the final message.
    pub url: String,
}

/// A running (or crashed) container of an app, as the agents report it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    pub app: String,
    pub env: String,
    pub process: String,
    pub release: u32,
    pub replica: u32,
    pub node: String,
    /// Docker's state (`running`, `exited`, ...) or `pending` before the agent reported it.
    pub state: String,
    pub healthy: bool,
    /// `private_addr:port` where the container is published, once running.
    pub address: Option<String>,
    pub restarts: u32,
    pub updated_at: String,
    /// What each container of the process may use (from its release's manifest).
    pub limits: Option<crate::manifest::Limits>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub private_addr: String,
    pub ingress: bool,
    /// `ready`; `draining` (`paas nodes drain`: nothing new goes there, its replicas move);
    /// `suspect` (no report for a few seconds: ingresses stop routing to it); `lost` (no report
    /// for the loss timeout: its replicas were placed on other nodes).
    pub status: String,
    pub last_seen: String,
    /// Disk taken by the platform's objects, as the node last measured it.
    pub disk: Option<crate::agent::DiskUsage>,
    /// What the node offers to reservations (zero: not reported, not counted).
    #[serde(default)]
    pub capacity: crate::agent::Capacity,
    /// What its replicas reserve.
    #[serde(default)]
    pub allocated: crate::agent::Capacity,
    /// Replicas assigned to it.
    #[serde(default)]
    pub replicas: u32,
    /// Seconds since its last report reached this control plane.
    #[serde(default)]
    pub last_report_secs: Option<f64>,
}

/// What `paas nodes drain` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeDrain {
    pub node: String,
    /// The replacement containers started on other nodes.
    pub moved: Vec<String>,
    /// Databases (`app/env`) whose primary or replica is still on the node: they do not move
    /// with a drain.
    pub databases: Vec<String>,
}

/// What `GET /api/v1/whoami` answers: proves a token works.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub user: String,
    pub server_version: String,
    /// The caller's roles (the console shows only the controls they allow; the server checks
    /// every call anyway).
    #[serde(default)]
    pub grants: Vec<crate::access::Grant>,
}

/// Runs a one-off command in a fresh container of an environment's current release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunCommand {
    pub command: Vec<String>,
    /// Join the run's stdin and output through `GET .../runs/{id}/attach` (an upgraded
    /// connection) instead of reading its output back line by line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<Attach>,
}

/// How an attached run is joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    /// A terminal: the process gets a TTY (one output stream, sized by resize frames).
    pub tty: bool,
}

/// A one-off run and its output after `after`; `exit_code` is set once it finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutput {
    pub id: String,
    pub lines: Vec<String>,
    /// Pass as `after` to get the next page.
    pub next: u64,
    pub finished: bool,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

impl RunOutput {
    /// A run just started: no output yet.
    pub fn started(id: String) -> Self {
        Self { id, lines: Vec::new(), next: 0, finished: false, exit_code: None, error: None }
    }
}

/// What `paas restart --process P` did: the replicas of `process` in `release`, each replaced by
/// a new container (named here) once it was healthy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRestart {
    pub app: String,
    pub env: String,
    pub process: String,
    pub release: u32,
    pub replaced: Vec<String>,
}

/// A `[cron]` job of the serving release, with its next and last run (`paas cron list`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronStatus {
    pub name: String,
    pub schedule: String,
    pub command: Vec<String>,
    pub timeout_secs: u64,
    /// RFC 3339, UTC; `None` for a schedule that never fires (Feb 30).
    pub next_run: Option<String>,
    pub last_run: Option<CronRun>,
}

/// One run of a `[cron]` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronRun {
    /// The job's id: its output is in `paas logs --process cron-<name>`.
    pub id: String,
    pub release: u32,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

/// What `DELETE /apps/{app}` did. Without a purge only `deleted` is set: database volumes,
/// networks going with no container, images and backups stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AppDeleted {
    pub deleted: String,
    /// Removed by `--purge`: database volumes, networks, images (node: name), and backups (ids)
    /// with `--purge-backups`.
    pub volumes: Vec<String>,
    pub networks: Vec<String>,
    pub images: Vec<String>,
    pub backups: Vec<String>,
    /// What a purge left in place, each with why.
    pub left: Vec<String>,
}

/// Provisions PostgreSQL for an environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateDatabase {
    /// PostgreSQL major version (default 15).
    pub version: Option<u32>,
    /// `max_connections` (default 100).
    pub max_connections: Option<u32>,
    /// Streaming replicas: 0 or 1 (default 1).
    pub replicas: Option<u32>,
    /// Backup schedule, retention: see [`DatabaseSettings`].
    #[serde(default, flatten)]
    pub settings: DatabaseSettings,
    /// Start on the volume an earlier database of the same app and environment left behind
    /// (its data kept, the app's role given the new password) instead of refusing to.
    #[serde(default)]
    pub reuse_volume: bool,
}

/// Backup schedule and retention of a database; unset fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DatabaseSettings {
    /// A 5-field cron expression in UTC (default `0 3 * * *`, daily), or `off`.
    pub backup_schedule: Option<String>,
    /// Keep at most this many backups (default 7)...
    pub keep: Option<u32>,
    /// ...and none older than this many days (default 30). The newest verified backup is
    /// always kept.
    pub keep_days: Option<u32>,
}

/// A backup: where it came from, its manifest figures, where it is stored, and whether a
/// restore of it has been proven.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
    pub app: String,
    pub env: String,
    pub trigger: BackupTrigger,
    /// The replica, or the primary when the database has no healthy replica.
    pub source: crate::agent::DbRole,
    /// The node whose server it was taken from.
    pub node: String,
    pub status: BackupStatus,
    pub error: Option<String>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    /// Exact row count of every table at backup time.
    pub tables: BTreeMap<String, u64>,
    /// Where copies are: `local:<path>`, `s3://bucket/key`.
    pub locations: Vec<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub verification: Verification,
    pub verification_error: Option<String>,
    pub verified_at: Option<String>,
    /// A logical dump (`pg_dump`) or a physical base backup for point-in-time recovery.
    #[serde(default)]
    pub kind: BackupKind,
    /// Base backups: the first WAL segment recovery from it needs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wal_start: String,
}

crate::string_enum! {
    #[derive(Default)]
    pub enum BackupKind {
        #[default]
        Dump = "dump",
        Base = "base",
    }
}

crate::string_enum! {
    pub enum BackupTrigger {
        Manual = "manual",
        Scheduled = "scheduled",
        /// Taken before a restore.
        Safety = "safety",
        /// The database as it was at a moment, recovered from a base backup and the WAL
        /// archive for `db restore --to-time`.
        Recovered = "recovered",
        /// A dump from elsewhere, loaded with `db import`.
        Imported = "imported",
    }
}

crate::string_enum! {
    pub enum BackupStatus {
        Running = "running",
        Stored = "stored",
        Failed = "failed",
    }
}

crate::string_enum! {
    /// Whether a restore of the backup proved it.
    pub enum Verification {
        Pending = "pending",
        Running = "running",
        Ok = "ok",
        Failed = "failed",
    }
}

/// Restores a backup into the environment's database (`confirm`, after a safety backup) or
/// into a new database beside it (`to_new`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartRestore {
    /// The backup to restore; empty with `to_time`.
    #[serde(default)]
    pub backup: String,
    /// Point-in-time recovery: the moment (RFC 3339) to restore the database as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time: Option<String>,
    #[serde(default)]
    pub confirm: bool,
    #[serde(default)]
    pub to_new: bool,
}

/// Runs psql inside the primary's (or replica's) container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PsqlCommand {
    pub replica: bool,
    pub args: Vec<String>,
    /// Fed to psql on stdin (a script), may be empty.
    pub input: String,
}

/// A database task (backup, verify, restore, psql) as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbTaskView {
    pub id: String,
    pub kind: crate::agent::DbTaskKind,
    pub status: crate::agent::DbTaskStatus,
    pub error: Option<String>,
    pub backup: Option<String>,
    /// Restores: the backup taken first, and the database restored into.
    pub safety_backup: Option<String>,
    pub target_database: Option<String>,
    /// A restore to a new database: its URL from the app's network, password masked.
    pub target_url: Option<String>,
    pub output: String,
    pub exit_code: Option<i64>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// Something that happened which operators and alerting care about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub app: String,
    pub env: String,
    pub kind: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    pub message: String,
    /// The user who made the change; empty for what the platform did or saw.
    #[serde(default)]
    pub by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub app: String,
    pub env: String,
    pub version: u32,
    pub max_connections: u32,
    pub primary: DatabaseServer,
    pub replica: Option<DatabaseServer>,
    /// The replica's URL for the app (`DATABASE_REPLICA_URL`), masked unless revealed.
    pub replica_url: Option<String>,
    /// The replica from the node itself, masked unless revealed.
    pub replica_node_url: Option<String>,
    /// For the app's containers (host `db-primary` on the environment's network); the
    /// password is masked unless revealed.
    pub url: String,
    /// Reachable from the node itself (its private address), masked unless revealed.
    pub node_url: Option<String>,
    pub revealed: bool,
    /// Cron expression, or `off`.
    pub backup_schedule: String,
    pub next_backup_at: Option<String>,
    pub keep: u32,
    pub keep_days: u32,
    pub last_backup: Option<Backup>,
    /// The newest backup whose restore was proven.
    pub last_verified: Option<Backup>,
    /// Loud problems: a failed backup or verification, no verified backup.
    pub warnings: Vec<String>,
    /// Continuous WAL archiving: what point-in-time recovery can reach.
    #[serde(default)]
    pub archive: WalArchive,
    /// What happened to the servers' roles, oldest first: switchovers, failovers (and why one
    /// was refused), credential rotations; the newest few.
    #[serde(default)]
    pub timeline: Vec<Event>,
}

/// The WAL archive of a database: how far point-in-time recovery reaches.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WalArchive {
    /// Segments stored, and their bytes (compressed).
    pub segments: u64,
    pub bytes: u64,
    /// The newest segment stored, and when it arrived.
    pub last_segment: Option<String>,
    pub last_stored_at: Option<String>,
    /// The earliest moment a restore `--to-time` can reach: when the oldest stored base backup
    /// finished. `None` while no base backup is stored.
    pub earliest: Option<String>,
    /// The newest stored base backup.
    pub last_base_backup: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseServer {
    pub name: String,
    pub node: String,
    pub state: String,
    pub healthy: bool,
    /// `private_addr:port` on the node.
    pub address: Option<String>,
    /// Connections in use vs the limit, size, and (replica) lag, once sampled.
    pub figures: Option<crate::agent::DatabaseFigures>,
    /// Why it is not healthy although it runs: the app cannot log in with its DATABASE_URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}
