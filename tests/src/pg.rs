//! A throwaway PostgreSQL server for tests of the control plane's shared store
//! (`paas server --database-url`): Debian's `postgresql` binaries, `initdb` into a temporary
//! directory, listening on a free loopback port, stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running PostgreSQL server with a superuser `paas` that needs no password (loopback only).
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl PgServer {
    /// Starts a server; a port taken between the probe and the bind is retried with another.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("paas-pg-").tempdir().expect("temp dir");
        // PostgreSQL refuses to run as root: as root (CI), the cluster belongs to `postgres`.
        let root = is_root();
        if root {
            run(Command::new("chown").args(["postgres:postgres"]).arg(dir.path()), "chown");
        }
        let data = dir.path().join("data");
        run(
            as_owner(root, &bin.join("initdb")).arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "paas",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
            "initdb",
        );
        let mut last = String::new();
        for _ in 0..3 {
            let port = crate::free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=200",
                dir.path().display()
            );
            let out = as_owner(root, &bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "30", "-o", &options, "start"])
                .output()
                .expect("running pg_ctl");
            if out.status.success() {
                return PgServer { dir, bin, port };
            }
            last = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        }
        panic!("PostgreSQL did not start:\n{last}");
    }

    /// The URL of database `db` (made with [`PgServer::create_database`], or `postgres`).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://paas@127.0.0.1:{}/{db}", self.port)
    }

    /// Makes an empty database.
    pub fn create_database(&self, db: &str) -> String {
        run(
            Command::new("psql")
                .args(["-v", "ON_ERROR_STOP=1", "-q", &self.url("postgres"), "-c"])
                .arg(format!("CREATE DATABASE \"{db}\"")),
            "psql",
        );
        self.url(db)
    }

    /// Runs one SQL statement in database `db`, answering its rows (unaligned, `|`-separated).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run(
            Command::new("psql").args(["-v", "ON_ERROR_STOP=1", "-qAt", &self.url(db), "-c", sql]),
            "psql",
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let root = is_root();
        let _ = as_owner(root, &self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's programs (Debian keeps them in /usr/lib/postgresql/N/bin).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is not installed (Debian package `postgresql`)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server under /usr/lib/postgresql").1
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

#[track_caller]
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}
