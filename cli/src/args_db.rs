//! The CLI's flags and subcommands of `paas db`: managed PostgreSQL, its backups and their
//! settings.

use super::AppEnv;
use clap::{Args, Subcommand};
use std::ffi::OsString;

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
    /// Switchover: the streaming replica becomes the primary and a new replica is cloned where
    /// the primary was; the primary stops first, so no committed write is lost. Apps reconnect
    /// through the same DATABASE_URL.
    Failover {
        #[command(flatten)]
        target: AppEnv,
        /// The server that takes the primary's role: the streaming replica (a database has one).
        #[arg(long, value_parser = ["replica"], default_value = "replica")]
        to: String,
    },
    /// Take a backup now (from the replica when there is one) and prove it by a restore.
    Backup {
        #[command(flatten)]
        target: AppEnv,
        /// Return once the backup has started instead of waiting for it and its verification.
        #[arg(long)]
        no_wait: bool,
        /// A physical base backup of the primary, from which `restore --to-time` recovers (one
        /// is taken daily while the WAL archive runs); proven by a recovery with the archive.
        #[arg(long)]
        base: bool,
    },
    /// List backups with their size, row counts and verification; `download ID` fetches one.
    Backups {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: Option<String>,
        /// The environment.
        #[arg(long, short = 'e', default_value = "production", env = "PAAS_ENV")]
        env: String,
        #[command(subcommand)]
        command: Option<BackupsCommand>,
    },
    /// Restore a backup into a throwaway database and compare its row counts with the manifest.
    Verify {
        #[command(flatten)]
        target: AppEnv,
        backup: String,
    },
    /// Restore a backup, or the database as it was at a moment (--to-time), into the
    /// environment's database (--confirm; a safety backup is taken first) or into a new
    /// database beside it (--to-new).
    Restore {
        #[command(flatten)]
        target: AppEnv,
        #[arg(required_unless_present = "to_time", conflicts_with = "to_time")]
        backup: Option<String>,
        /// Point-in-time recovery: the moment to restore, as 2026-11-27T10:42:00Z (UTC) or
        /// with an offset; from the newest base backup before it and the WAL archive.
        #[arg(long)]
        to_time: Option<String>,
        #[arg(long, conflicts_with = "to_new")]
        confirm: bool,
        #[arg(long)]
        to_new: bool,
    },
    /// Load a dump made elsewhere (pg_dump -Fc, a file or an http(s) URL the CLI downloads): it
    /// is stored as a backup, proven by a restore into a throwaway database, then restored into
    /// the environment's database (--confirm; a safety backup is taken first) or into a new
    /// database beside it (--to-new).
    Import {
        #[command(flatten)]
        target: AppEnv,
        /// The dump: a file, `-` for standard input, or an http(s) URL.
        source: String,
        #[arg(long, conflicts_with = "to_new")]
        confirm: bool,
        #[arg(long)]
        to_new: bool,
    },
    /// Give the app's role a new password and roll it out in DATABASE_URL as a release.
    /// Connections already open stay open; new ones need the new password.
    RotateCredentials {
        #[command(flatten)]
        target: AppEnv,
        /// Return once the release has started instead of following it.
        #[arg(long)]
        detach: bool,
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

/// `paas db backups ...`
#[derive(Subcommand, Debug)]
pub enum BackupsCommand {
    /// Download a backup's dump (pg_dump's custom format, for pg_restore), checked against the
    /// SHA-256 recorded when it was taken.
    Download {
        #[command(flatten)]
        target: AppEnv,
        /// The backup's id, as `paas db backups` lists it.
        id: String,
        /// Where to write it (-o FILE; `-` for standard output). Default: APP-ENV-ID.dump here.
        #[arg(long = "file", value_name = "FILE")]
        file: Option<String>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// `-o FILE` of `paas db backups download` names the file, not the output format (`-o` is the
/// global `--output` everywhere else, which a download has no use for): turned into `--file`
/// before clap parses the command line.
pub fn download_file_flag(args: Vec<OsString>) -> Vec<OsString> {
    let words: Vec<Option<&str>> = args.iter().map(|a| a.to_str()).collect();
    let at = |w: &str| words.iter().position(|x| *x == Some(w));
    let download = match (at("db"), at("backups"), at("download")) {
        (Some(d), Some(b), Some(n)) if d < b && b < n => n,
        _ => return args,
    };
    let mut out = Vec::with_capacity(args.len());
    for (i, arg) in args.into_iter().enumerate() {
        let text = arg.to_str().filter(|_| i > download);
        match text {
            Some("-o" | "--output") => out.push(OsString::from("--file")),
            Some(t) if t.starts_with("--output=") => out.push(format!("--file={}", &t[9..]).into()),
            Some(t) if t.starts_with("-o") && t.len() > 2 => out.push(format!("--file={}", &t[2..]).into()),
            _ => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::download_file_flag;
    use std::ffi::OsString;

    fn words(args: &[&str]) -> Vec<String> {
        let os: Vec<OsString> = args.iter().map(OsString::from).collect();
        download_file_flag(os).into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn minus_o_names_the_file_of_a_download_only() {
        assert_eq!(
            words(&["paas", "db", "backups", "download", "B1", "-o", "-", "--app", "x"]),
            ["paas", "db", "backups", "download", "B1", "--file", "-", "--app", "x"]
        );
        assert_eq!(words(&["paas", "db", "backups", "download", "B1", "-oa.dump"])[5], "--file=a.dump");
        assert_eq!(words(&["paas", "db", "backups", "download", "B1", "--output=a"])[5], "--file=a");
        // Elsewhere -o stays the output format.
        assert_eq!(words(&["paas", "db", "backups", "-o", "json"]), ["paas", "db", "backups", "-o", "json"]);
        assert_eq!(words(&["paas", "-o", "json", "db", "backups", "download", "B1"])[2], "json");
    }
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
