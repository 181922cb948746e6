//! The CLI's flags and subcommands of `paas db`: managed PostgreSQL, its backups and their
//! settings.

use super::AppEnv;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Provision PostgreSQL for the environment and set its DATABASE_URL.
    Create {
        #[command(flatten)]
        target: AppEnv,
        /// PostgreSQL major version.
        #[arg(long, default_value_t = 15)]
        version: u32,
        /// The server's max_connections.
        #[arg(long)]
        max_connections: Option<u32>,
        /// Streaming replicas (0 or 1).
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        #[command(flatten)]
        settings: BackupSettingsArgs,
        /// Start on the volume an earlier database of this app and environment left (deleting
        /// an app keeps it): its data stays, and the app's role gets the new password.
        #[arg(long)]
        reuse_volume: bool,
        /// Return once the database is created instead of waiting until it accepts connections.
        #[arg(long)]
        no_wait: bool,
    },
    /// Change the backup schedule and retention.
    Settings {
        #[command(flatten)]
        target: AppEnv,
        #[command(flatten)]
        settings: BackupSettingsArgs,
    },
    /// Take a backup now (from the replica when there is one) and prove it by a restore.
    Backup {
        #[command(flatten)]
        target: AppEnv,
        /// Return once the backup has started instead of waiting for it and its verification.
        #[arg(long)]
        no_wait: bool,
    },
    /// List backups with their size, row counts and verification.
    Backups(AppEnv),
    /// Restore a backup into a throwaway database and compare its row counts with the manifest.
    Verify {
        #[command(flatten)]
        target: AppEnv,
        backup: String,
    },
    /// Restore a backup into the environment's database (--confirm; a safety backup is taken
    /// first) or into a new database beside it (--to-new).
    Restore {
        #[command(flatten)]
        target: AppEnv,
        backup: String,
        #[arg(long, conflicts_with = "to_new")]
        confirm: bool,
        #[arg(long)]
        to_new: bool,
    },
    /// Run psql inside the database container (no local client needed). Reads a script from
    /// standard input when it is not a terminal; arguments after `--` go to psql.
    Psql {
        #[command(flatten)]
        target: AppEnv,
        /// Connect to the streaming replica (read-only) instead of the primary.
        #[arg(long)]
        replica: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Show the database: state, address, URLs (password masked unless --reveal).
    Info {
        #[command(flatten)]
        target: AppEnv,
        #[arg(long)]
        reveal: bool,
    },
}

/// Backup schedule and retention of a database.
#[derive(Args, Debug, Clone, Default)]
pub struct BackupSettingsArgs {
    /// When scheduled backups run: a cron expression in UTC (default "0 3 * * *") or "off".
    #[arg(long)]
    pub backup_schedule: Option<String>,
    /// Keep at most this many backups (default 7).
    #[arg(long)]
    pub keep: Option<u32>,
    /// Delete backups older than this many days (default 30); the newest verified one stays.
    #[arg(long)]
    pub keep_days: Option<u32>,
}

impl BackupSettingsArgs {
    pub fn to_api(&self) -> protocol::api::DatabaseSettings {
        protocol::api::DatabaseSettings {
            backup_schedule: self.backup_schedule.clone(),
            keep: self.keep,
            keep_days: self.keep_days,
        }
    }
}
