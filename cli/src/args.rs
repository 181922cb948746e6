//! The command line, declared with clap derive. Global flags fall back to `PAAS_SERVER`,
//! `PAAS_TOKEN` and the config file.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[path = "args_cron.rs"]
mod cron;
#[path = "args_db.rs"]
mod db;
#[path = "args_edge.rs"]
mod edge;
#[path = "args_install.rs"]
mod install;
#[path = "args_nodes.rs"]
mod nodes;
#[path = "args_ops.rs"]
mod ops;
pub use cron::CronCommand;
pub use db::{download_file_flag, BackupsCommand, DbCommand};
pub use edge::{AcmeArgs, ApiTlsArgs, DomainsCommand};
pub use install::{InstallArgs, Role as InstallRole};
pub use nodes::{AgentArgs, NodeOpts, NodesCommand};
pub use ops::{AlertsCommand, MetricsArgs, NotifyCommand, RulesCommand};

#[derive(Parser, Debug)]
#[command(
    name = "paas",
    version,
    about = "A self-hosted platform-as-a-service: deploy apps to your own servers."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Control plane URL (default: from the config file).
    #[arg(long, global = true, env = "PAAS_SERVER")]
    pub server: Option<String>,
    /// API token (default: from the config file).
    #[arg(long, global = true, env = "PAAS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CLI config file (default: $XDG_CONFIG_HOME/paas/config.toml).
    #[arg(long, global = true, env = "PAAS_CONFIG")]
    pub config: Option<PathBuf>,
    /// PEM file of the CA the server's HTTPS certificate chains to (the platform's local CA,
    /// for a server started with --api-tls); default: from the config file.
    #[arg(long, global = true, env = "PAAS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run control plane, node agent and ingress in one process (single machine).
    Up(Box<UpArgs>),
    /// Run the control plane only (agents join it with `paas agent`).
    Server(Box<ServerArgs>),
    /// Run a node agent that joins a control plane.
    Agent(AgentArgs),
    /// Install a systemd service for `paas up` (default), `paas server` or `paas agent`, run
    /// as the `paas` user, restarted when it stops and started at boot.
    Install(InstallArgs),
    /// Sign in and save the server and an API token to the CLI config: with `--user` (asks for
    /// the password; the server issues a token for this machine), or with a token (`--token`,
    /// or pasted on standard input).
    Login(LoginArgs),
    /// Manage users and their roles (admins of every app).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Create, list and revoke your API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The platform's own state backups (admins): `backup` takes one now, `backups` lists them.
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// Who changed what, on which app, from where, and how it ended.
    Audit(AuditArgs),
    /// Create, list and delete apps.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Deploy a directory (built from its Dockerfile) or an existing image.
    Deploy(DeployArgs),
    /// Show the release history of an environment (`paas releases info N`: one release whole).
    Releases(ReleasesArgs),
    /// Deploy an earlier release again (the one before the current without --to).
    Rollback(RollbackArgs),
    /// Restart an environment: its serving release again as a new release, rolled out like a
    /// deploy (new replicas take over once healthy), so the app stays up.
    Restart(RestartArgs),
    /// Set the number of replicas of processes, e.g. `web=3`.
    Scale(ScaleArgs),
    /// Create, list and delete environments of an app.
    #[command(subcommand)]
    Envs(EnvsCommand),
    /// Set, unset and list config vars (encrypted at rest, injected as environment variables).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Deploy the image one environment runs into another, with the target's own config.
    Promote(PromoteArgs),
    /// Turn maintenance mode on or off: while on, every request to the environment gets a 503
    /// maintenance page from the ingress and the app sees none of them.
    Maintenance(MaintenanceArgs),
    /// Run a one-off command in a fresh container of the current release, with its config:
    /// your stdin goes to it, and at a terminal it gets a TTY (`paas run -- bash`).
    Run(RunArgs),
    /// Managed PostgreSQL for an environment.
    #[command(subcommand)]
    Db(DbCommand),
    /// Link this directory to an app (`app = "..."` in its paas.toml), so commands run inside it
    /// need no --app.
    Link {
        #[arg(long, short = 'a')]
        app: String,
    },
    /// Print the URL to `git remote add` for `git push` deploys.
    GitRemote {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
    },
    /// The pre-receive hook of the app repositories (run by git on the server, not by users).
    #[command(hide = true)]
    GitHook,
    /// Show the containers of an environment.
    Ps(AppEnv),
    /// Show an environment's logs across replicas and nodes: app output, builds, the router's
    /// access log and platform events, in time order; -f follows.
    Logs(LogsArgs),
    /// List the nodes of the cluster.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// The activity feed: deploys, rollbacks, restarts, scales, config changes (keys only),
    /// crashes, health changes and backups, with who and when; oldest first, newest last.
    Events(EventsArgs),
    /// Scheduled jobs: the `[cron]` entries of paas.toml, run in one-off containers.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Send an app's logs on to your own syslog server or HTTPS endpoint.
    #[command(subcommand)]
    Drains(DrainsCommand),
    /// Serve an app under your own domain names, over HTTP and HTTPS.
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// An environment's request rate, 5xx share, latency, CPU and memory per replica and
    /// database figures (or the nodes' with --nodes): newest values and sparklines.
    Metrics(MetricsArgs),
    /// Alerts that fire and resolve, their rules and silences.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Where alert and deploy notifications go: email addresses and webhooks.
    #[command(subcommand)]
    Notify(NotifyCommand),
}

impl Command {
    /// Long-running server commands log at info by default; user commands stay quiet.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Self::Up(_) | Self::Server(_) | Self::Agent(_))
    }
}

#[derive(Args, Debug, Clone)]
pub struct LoginArgs {
    /// Sign in as this user with a password.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Read the password from standard input instead of asking at the terminal.
    #[arg(long)]
    pub password_stdin: bool,
    /// The one-time code of a user with a second factor.
    #[arg(long)]
    pub code: Option<String>,
}

fn parse_role(s: &str) -> Result<protocol::access::Role, String> {
    s.parse().map_err(|_| format!("{s:?} is not a role: use viewer, deployer or admin"))
}

/// An app, or every app.
#[derive(Args, Debug, Clone)]
pub struct AppOrAll {
    /// The app.
    #[arg(long, short = 'a', conflicts_with = "all", required_unless_present = "all")]
    pub app: Option<String>,
    /// Every app, those made later included.
    #[arg(long)]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Add a user (asks for a password; --no-password for a user who signs in with tokens).
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// List users and their roles.
    List,
    /// Remove a user with their tokens and sessions.
    Remove {
        name: String,
        /// The user's name again, to confirm.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Give a user a role (viewer, deployer or admin) on an app or on every app.
    Grant {
        name: String,
        #[arg(value_parser = parse_role)]
        role: protocol::access::Role,
        #[command(flatten)]
        on: AppOrAll,
    },
    /// Take a user's role on an app (or on every app) away.
    Revoke {
        name: String,
        #[command(flatten)]
        on: AppOrAll,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Turn on a second factor (one-time codes) for your own console and password sign-in.
    TotpEnable,
    /// Turn a user's second factor off (when they lost their device).
    TotpDisable { name: String },
}

#[derive(Subcommand, Debug)]
pub enum PlatformCommand {
    /// Back up the platform's state and keys now, sealed with PAAS_STATE_PASSPHRASE (set on the
    /// server), to the backup store; `paas up --restore-from` brings it back on a new host.
    Backup,
    /// List the stored state backups, newest first.
    Backups,
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Make a named API token; it is shown once.
    Create {
        name: String,
        /// How long it lasts, e.g. 30d or 12h (default: until revoked).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List your tokens (an admin: --user U, or --all).
    List {
        #[arg(long, conflicts_with = "all")]
        user: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by its id or name; it stops working at once.
    Revoke {
        // Not called `token`: that id belongs to the global --token flag.
        #[arg(value_name = "ID_OR_NAME")]
        id_or_name: String,
    },
    /// Replace the bootstrap admin token (kept in the data directory) with a new one.
    RotateAdmin,
}

#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// Only changes to this app.
    #[arg(long, short = 'a')]
    pub app: Option<String>,
    /// How far back, e.g. 1h or 1d.
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// State directory (default: $XDG_DATA_HOME/paas).
    #[arg(long, env = "PAAS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep the platform's state in this PostgreSQL database (postgres://user:password@host/db)
    /// instead of SQLite in the data directory. Give it in the environment, where `ps` cannot
    /// see the password.
    #[arg(long, env = "PAAS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Apps are served at <app>.<base-domain> and <app>-<env>.<base-domain>.
    #[arg(long, default_value = "localhost")]
    pub base_domain: String,
    #[command(flatten)]
    pub backups: BackupStoreArgs,
    /// Largest `git push` accepted, in MiB; a larger one is refused with a message.
    #[arg(long, env = "PAAS_GIT_MAX_PUSH_MIB", default_value_t = 1024)]
    pub git_max_push_mib: u64,
    /// Longest a `git push` may take, its build and deploy included, in seconds.
    #[arg(long, env = "PAAS_GIT_PUSH_TIMEOUT", default_value_t = 3600)]
    pub git_push_timeout_secs: u64,
    /// Address range each environment's network takes a subnet from; the default is clear of
    /// Docker's own pools and of the usual LAN, VPN, cloud and cluster ranges.
    #[arg(long, env = "PAAS_NETWORK_POOL", default_value = control_plane::store::NetworkPool::DEFAULT_RANGE)]
    pub network_pool: String,
    /// Prefix length of each environment's subnet (/26: 61 addresses for its containers, and
    /// 1024 environments in the default pool).
    #[arg(long, env = "PAAS_NETWORK_PREFIX", default_value_t = control_plane::store::NetworkPool::DEFAULT_PREFIX)]
    pub network_prefix: u8,
    /// How long central logs are kept (e.g. 7d, 36h); older lines are removed and counted.
    #[arg(long, env = "PAAS_LOG_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub log_retention: std::time::Duration,
    /// Most disk the central log store may take, in MiB (and never more than a tenth of the
    /// filesystem holding the data directory); the oldest lines go first, counted.
    #[arg(long, env = "PAAS_LOG_MAX_MIB", default_value_t = 1024)]
    pub log_max_mib: u64,
    /// Most metrics series kept (about 69 KB of disk each: a day at 10 s, a month at 5 min);
    /// new series past it are not kept, and the log says so.
    #[arg(long, env = "PAAS_METRICS_MAX_SERIES", default_value_t = control_plane::metrics::DEFAULT_MAX_SERIES)]
    pub metrics_max_series: usize,
    /// How long a node may go without reporting before it is declared lost and its replicas
    /// are placed on other nodes (ingresses stop routing to it after a quarter of that).
    #[arg(long, env = "PAAS_NODE_LOST_AFTER", default_value = "20s", value_parser = humantime::parse_duration)]
    pub node_lost_after: std::time::Duration,
    #[command(flatten)]
    pub smtp: ops::SmtpArgs,
    /// How long node certificates are valid, in seconds (agents renew theirs when a third is
    /// left); short lifetimes are for testing rotation.
    #[arg(long, env = "PAAS_NODE_CERT_SECS", default_value_t = control_plane::ca::NODE_CERT_LIFETIME.as_secs(), hide = true)]
    pub node_cert_secs: u64,
    #[command(flatten)]
    pub drains: DrainSettingsArgs,
    #[command(flatten)]
    pub acme: AcmeArgs,
    #[command(flatten)]
    pub api_tls: ApiTlsArgs,
    #[command(flatten)]
    pub registry: nodes::RegistryArgs,
}

/// Where database backups are kept: a local directory, plus an S3-compatible bucket when
/// `--backup-s3-bucket` is given. Give the keys in the environment, where `ps` cannot see them.
#[derive(Args, Debug, Clone)]
pub struct BackupStoreArgs {
    /// Local backup directory (default: <data-dir>/backups).
    #[arg(long, env = "PAAS_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// S3 endpoint URL, e.g. https://s3.eu-west-1.amazonaws.com or http://10.0.0.5:9000.
    #[arg(long, env = "PAAS_BACKUP_S3_ENDPOINT", requires = "backup_s3_bucket")]
    pub backup_s3_endpoint: Option<String>,
    #[arg(long, env = "PAAS_BACKUP_S3_BUCKET", requires = "backup_s3_endpoint")]
    pub backup_s3_bucket: Option<String>,
    #[arg(long, env = "PAAS_BACKUP_S3_REGION", default_value = "us-east-1")]
    pub backup_s3_region: String,
    /// Key prefix inside the bucket.
    #[arg(long, env = "PAAS_BACKUP_S3_PREFIX", default_value = "")]
    pub backup_s3_prefix: String,
    #[arg(long, env = "PAAS_BACKUP_S3_ACCESS_KEY", hide_env_values = true, default_value = "")]
    pub backup_s3_access_key: String,
    #[arg(long, env = "PAAS_BACKUP_S3_SECRET_KEY", hide_env_values = true, default_value = "")]
    pub backup_s3_secret_key: String,
    /// PEM file of CA certificates to trust for an https endpoint with a private CA.
    #[arg(long, env = "PAAS_BACKUP_S3_CA_FILE")]
    pub backup_s3_ca_file: Option<PathBuf>,
    /// The most committed writes a primary that loses its disk can take with it: its WAL is
    /// archived at least this often while it writes (PostgreSQL's `archive_timeout`).
    #[arg(long, env = "PAAS_DB_ARCHIVE_TIMEOUT", default_value = "60s", value_parser = parse_archive_timeout)]
    pub db_archive_timeout: std::time::Duration,
    /// How often the platform's own state (sealed with PAAS_STATE_PASSPHRASE, from the
    /// environment only) is backed up to the backup store.
    #[arg(long, env = "PAAS_STATE_BACKUP_EVERY", default_value = "6h", value_parser = humantime::parse_duration)]
    pub state_backup_every: std::time::Duration,
    /// Bring back the platform from a state backup (a file, or s3:<key> in the backup bucket)
    /// into an empty data directory before starting; needs PAAS_STATE_PASSPHRASE.
    #[arg(long)]
    pub restore_from: Option<String>,
}

/// An archive timeout PostgreSQL takes: whole seconds from 1 s to an hour.
fn parse_archive_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.as_secs() < 1 || d.as_secs() > 3600 {
        return Err("the archive timeout must be between 1s and 1h".into());
    }
    Ok(d)
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub node: NodeOpts,
    /// Where the API and the console listen.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub api_addr: SocketAddr,
    /// Where the ingress serves apps over HTTP (the public address).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Where the ingress serves apps over HTTPS (certificates from the platform's local CA,
    /// or uploaded with `paas domains add`).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https_addr: SocketAddr,
    /// Where the agent API listens (mutual TLS): nodes on other machines join here.
    #[arg(long, env = "PAAS_AGENT_ADDR", default_value = "127.0.0.1:7071")]
    pub agent_addr: SocketAddr,
    /// Do not write the CLI config file.
    #[arg(long)]
    pub no_write_config: bool,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub api_addr: SocketAddr,
    /// Where the agent API listens (mutual TLS), apart from the public API: an address on the
    /// private network the nodes share.
    #[arg(long, env = "PAAS_AGENT_ADDR", default_value = "127.0.0.1:7071")]
    pub agent_addr: SocketAddr,
    /// Port the ingress nodes serve HTTP on, for the URLs shown to users.
    #[arg(long, default_value_t = 8080)]
    pub ingress_http_port: u16,
    /// Port the ingress nodes serve HTTPS on, for the URLs shown to users.
    #[arg(long, default_value_t = 8443)]
    pub ingress_https_port: u16,
}

#[derive(Subcommand, Debug)]
pub enum AppsCommand {
    /// Create an app (with its production environment).
    Create { name: String },
    /// List apps with their environments.
    List,
    /// One app at a glance: each environment's URL, serving release, replicas, last deploy and
    /// database, and the app's domains.
    Info {
        #[arg(env = "PAAS_APP", help = crate::args::APP_HELP)]
        name: String,
    },
    /// Delete an app, its environments, releases and containers.
    Delete {
        name: String,
        /// Repeat the app name to confirm.
        #[arg(long)]
        confirm: Option<String>,
        /// Remove its database volumes (the data), networks and images on every node too.
        #[arg(long)]
        purge: bool,
        /// With --purge: delete its backups from every backup store too.
        #[arg(long, requires = "purge")]
        purge_backups: bool,
    },
    /// Show or set how long the app's central logs are kept: tighter than the platform's
    /// limits (`--log-retention`, `--log-max-mib`), which apply to every app.
    LogRetention {
        name: String,
        /// Keep lines this long (3d, 12h; at least a minute).
        #[arg(long)]
        age: Option<String>,
        /// Let the app's lines take at most about this many MiB; the oldest go first, counted.
        #[arg(long)]
        max_mib: Option<u64>,
        /// Back to the platform's limits.
        #[arg(long, conflicts_with_all = ["age", "max_mib"])]
        reset: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct AppEnv {
    #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
    pub app: String,
    /// The environment.
    #[arg(long, short = 'e', default_value = "production", env = "PAAS_ENV")]
    pub env: String,
}

/// The help of every `--app`: where it comes from when not given.
pub const APP_HELP: &str =
    "The app; inside a directory linked to one (`app = \"...\"` in its paas.toml, written by `paas link` and `paas apps create`, or a git remote named `paas`) that one";

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReleasesArgs {
    #[command(subcommand)]
    pub command: Option<ReleasesCommand>,
    // Not an `AppEnv`: with `info` the app is that subcommand's, so it cannot be required here.
    #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
    pub app: Option<String>,
    /// The environment.
    #[arg(long, short = 'e', default_value = "production", env = "PAAS_ENV")]
    pub env: String,
}

#[derive(Subcommand, Debug)]
pub enum ReleasesCommand {
    /// One release whole: what it runs (image, processes, manifest, config keys), who made it
    /// and when, why it failed, and its build and deploy output.
    Info {
        /// The release: `3` or `v3`.
        version: String,
        #[command(flatten)]
        target: AppEnv,
    },
}

#[derive(Args, Debug)]
pub struct MaintenanceArgs {
    pub mode: OnOff,
    #[command(flatten)]
    pub target: AppEnv,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

fn parse_source(s: &str) -> Result<protocol::logs::LogSource, String> {
    s.parse().map_err(|_| format!("{s:?} is not a log source: use app, build, router or platform"))
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: AppEnv,
    /// Only this process: web, worker, release, run, ...
    #[arg(long, short = 'p')]
    pub process: Option<String>,
    /// Only lines from app, build, router or platform.
    #[arg(long, short = 's', value_parser = parse_source)]
    pub source: Option<protocol::logs::LogSource>,
    /// From this long ago (10m, 2h, 1d) or this time (2026-11-27T10:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this long ago or this time.
    #[arg(long, conflicts_with = "follow")]
    pub until: Option<String>,
    /// Only lines holding this text anywhere (ASCII letters in either case).
    #[arg(long)]
    pub grep: Option<String>,
    /// How many of the newest lines to show first (at most 5000).
    #[arg(short = 'n', long = "lines", default_value_t = 200)]
    pub lines: u32,
    /// Keep showing new lines as they come, across deploys, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Directory with a Dockerfile (default: the current directory).
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub target: AppEnv,
    /// Deploy this existing image instead of building the directory.
    #[arg(long)]
    pub image: Option<String>,
    /// Return once the deploy has started instead of following it.
    #[arg(long)]
    pub detach: bool,
    /// When another deploy of the environment is in progress, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
    /// Health check of the web process, overriding paas.toml: `http:/PATH`, `tcp`, or
    /// `command:CMD ARGS` (run in the container, no shell).
    #[arg(long, value_name = "SPEC")]
    pub health_check: Option<String>,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: AppEnv,
    /// The release to return to, e.g. 3 or v3.
    #[arg(long)]
    pub to: Option<String>,
    /// When another deploy of the environment is in progress, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this app's events (every app you can see without it).
    #[arg(long, short = 'a')]
    pub app: Option<String>,
    /// Only this environment's (with --app).
    #[arg(long, short = 'e', requires = "app")]
    pub env: Option<String>,
    /// How many of the newest events (at most 1000).
    #[arg(short = 'n', long = "num", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub n: u32,
    /// Only events after this id, for scripts that poll (oldest first).
    #[arg(long)]
    pub since: Option<i64>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub target: AppEnv,
    /// When another deploy of the environment is in progress, wait for it instead of failing.
    #[arg(long)]
    pub wait: bool,
    /// Only this process: its replicas are replaced one at a time in the serving release, each
    /// old one retired once its new one is healthy; no new release, other processes untouched.
    #[arg(long, short = 'p', conflicts_with = "wait")]
    pub process: Option<String>,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    #[command(flatten)]
    pub target: AppEnv,
    /// PROCESS=REPLICAS pairs, e.g. web=3 worker=1.
    #[arg(required = true)]
    pub formation: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum EnvsCommand {
    /// Create an environment (served at <app>-<env>.<base-domain>).
    Create {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
        name: String,
    },
    /// List an app's environments.
    List {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
    },
    /// Delete an environment, its releases and containers.
    Delete {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
        name: String,
        /// Repeat the environment name to confirm.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Swap two environments' hostnames and custom domains at once (blue/green between, say,
    /// production and staging); swap again to swap back.
    Swap {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
        env1: String,
        env2: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Set KEY=VALUE pairs; a running environment gets a new release with them.
    Set {
        #[command(flatten)]
        target: AppEnv,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Mark these keys secret: masked in `config list` and in deploy and job output
        /// whatever their names (keys named like *KEY*, *TOKEN*, *PASSWORD*... always are).
        #[arg(long)]
        secret: bool,
        /// Return once the new release has started instead of following it.
        #[arg(long)]
        detach: bool,
    },
    /// Remove config vars; a running environment gets a new release without them.
    Unset {
        #[command(flatten)]
        target: AppEnv,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[arg(long)]
        detach: bool,
    },
    /// Print one config var's value (a secret's is revealed, which needs the deployer role and
    /// is audited).
    Get {
        #[command(flatten)]
        target: AppEnv,
        key: String,
    },
    /// List config vars, secrets masked unless --reveal.
    List {
        #[command(flatten)]
        target: AppEnv,
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
    pub app: String,
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub to: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub target: AppEnv,
    /// No TTY even at a terminal: stdout and stderr stay apart, and Ctrl-C stops the command
    /// here instead of going to it.
    #[arg(long = "no-tty", short = 'T')]
    pub no_tty: bool,
    /// The command and its arguments, after `--` (run as argv, no shell).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// How log drains connect, and how far behind one may fall.
#[derive(Args, Debug, Clone)]
pub struct DrainSettingsArgs {
    /// PEM file of CA certificates that syslog+tls:// and https:// drains trust besides the
    /// system's (for a log server with a certificate from a private CA).
    #[arg(long, env = "PAAS_DRAIN_CA_FILE")]
    pub drain_ca_file: Option<PathBuf>,
    /// A drain more lines behind than this skips to its newest this many, counting the rest as
    /// dropped (small values are for testing).
    #[arg(long, env = "PAAS_DRAIN_MAX_BACKLOG", default_value_t = 100_000, hide = true)]
    pub drain_max_backlog: u64,
    /// A private network (CIDR, or one address) drains may send to, such as your own log
    /// server's; repeatable. Without it drains go only to public addresses, so an app's drain
    /// cannot reach services on the platform's host or network.
    #[arg(long, env = "PAAS_DRAIN_ALLOW_NET", value_delimiter = ',', value_parser = parse_net)]
    pub drain_allow_net: Vec<ipnet::IpNet>,
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR block like 10.0.0.0/8"))
}

#[derive(Subcommand, Debug)]
pub enum DrainsCommand {
    /// Drain an app's lines (every environment's, or one's with --env) to a URL:
    /// syslog+tls://HOST:PORT, syslog+tcp://HOST:PORT (RFC 5424) or https://... (JSON lines).
    Add {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
        /// Only this environment's lines.
        #[arg(long, short = 'e')]
        env: Option<String>,
        url: String,
    },
    /// List an app's drains: URL (credentials masked), state, lines delivered, dropped and
    /// waiting, and the last error.
    List {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
    },
    /// Remove a drain by its id (see `list`) or its URL.
    Remove {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
        #[arg(value_name = "ID_OR_URL")]
        id_or_url: String,
    },
}
