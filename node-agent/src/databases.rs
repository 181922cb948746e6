//! Managed PostgreSQL on this node: builds the default image when missing, keeps each assigned
//! server's network, volume and container in place (restarting it when it stops), and reports
//! them. The data lives on a named volume, so removing or recreating the container loses
//! nothing. Database containers carry `paas.role`, which keeps the app reconcile away from them.
//! Once per agent run (and whenever the spec's secrets change) each healthy server's roles and
//! pg_hba.conf are brought to the platform's (`dbroles`), which moves servers created by an
//! earlier release over in place.

use crate::dbroles;
use crate::dbtasks::psql::tool;
use crate::docker::DockerClient;
use protocol::agent::DbRole;
use protocol::agent::{ContainerStatus, DatabaseFigures, DatabaseSpec};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub const DOCKERFILE: &str = include_str!("../assets/postgres.Dockerfile");
pub const START_SCRIPT: &str = include_str!("../assets/postgres-start.sh");
pub const REPLICA_SCRIPT: &str = include_str!("../assets/postgres-replica-start.sh");

/// When the agent last heard the control plane (any answer) and last got an assignment from it,
/// in unix milliseconds (0: not yet).
#[derive(Debug, Default)]
pub struct ContactTimes {
    pub heard: std::sync::atomic::AtomicI64,
    pub assigned: std::sync::atomic::AtomicI64,
}

pub type Contact = Arc<ContactTimes>;

/// Now, as a [`Contact`] value.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub struct Databases {
    /// When the control plane was last heard (the lease of primaries with a replica).
    pub contact: Contact,
    /// Primaries the lease stopped, and when: each stays stopped until an assignment newer than
    /// that arrives (the one before may predate a failover).
    lease_stopped: HashMap<String, i64>,
    docker: DockerClient,
    build_network: Option<String>,
    /// Images being built right now (a first build takes a minute; the loop must not wait).
    building: Arc<Mutex<HashSet<String>>>,
    build_errors: Arc<Mutex<HashMap<String, String>>>,
    retry_at: HashMap<String, Instant>,
    restarts: HashMap<String, u32>,
    /// Last sampled figures per server, refreshed every [`SAMPLE_EVERY`].
    figures: HashMap<String, (Instant, DatabaseFigures)>,
    /// Replicas a backup paused on purpose; any other paused replica is resumed.
    paused: crate::dbtasks::Paused,
    /// Servers whose roles were converged this run, with the fingerprint of the spec they were
    /// converged to; and when a failed attempt may be retried.
    roles: HashMap<String, u64>,
    roles_retry_at: HashMap<String, Instant>,
    /// The database volumes last listed on this node (`None` until a listing worked).
    volumes: Option<Vec<String>>,
}

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

impl Databases {
    pub fn new(docker: DockerClient, build_network: Option<String>, paused: crate::dbtasks::Paused) -> Self {
        Self {
            contact: Contact::default(),
            lease_stopped: HashMap::new(),
            docker,
            build_network,
            building: Arc::default(),
            build_errors: Arc::default(),
            retry_at: HashMap::new(),
            restarts: HashMap::new(),
            figures: HashMap::new(),
            paused,
            roles: HashMap::new(),
            roles_retry_at: HashMap::new(),
            volumes: None,
        }
    }

    /// One pass: converge every assigned database, remove the containers of unassigned ones
    /// (their volumes stay: data is never deleted implicitly), return the statuses.
    pub async fn pass(&mut self, specs: &[DatabaseSpec]) -> Vec<ContainerStatus> {
        let mut out = Vec::new();
        for spec in specs {
            out.push(self.converge(spec).await);
        }
        self.roles.retain(|name, _| specs.iter().any(|s| &s.name == name));
        for role in ["db-primary", "db-replica"] {
            let Ok(names) = self.docker.database_names(role).await else { continue };
            for name in names.into_iter().filter(|n| !specs.iter().any(|s| &s.name == n)) {
                tracing::info!(container = %name, "stopping an unassigned database (its volume is kept)");
                if let Err(e) = self.docker.stop_and_remove(&name, 30).await {
                    tracing::warn!(container = %name, error = %format!("{e:#}"), "removing the database failed");
                }
            }
        }
        out
    }

    /// The database volumes on this node, for the control plane to refuse a new database on
    /// an old one's volume; the last list known while Docker does not answer.
    pub async fn volumes(&mut self) -> Option<Vec<String>> {
        match self.docker.database_volumes().await {
            Ok(names) => self.volumes = Some(names),
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "listing database volumes failed"),
        }
        self.volumes.clone()
    }

    async fn converge(&mut self, spec: &DatabaseSpec) -> ContainerStatus {
        let mut status = ContainerStatus {
            name: spec.name.clone(),
            state: "pending".into(),
            healthy: false,
            host_port: None,
            restarts: self.restarts.get(&spec.name).copied().unwrap_or(0),
            log_tail: Vec::new(),
            db: None,
            exit_code: None,
        };
        match self.docker.image_id(&spec.image).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                self.build_image(spec);
                status.state = "building image".into();
                if let Some(e) = self.build_errors.lock().unwrap_or_else(|p| p.into_inner()).get(&spec.image)
                {
                    status.log_tail = vec![e.clone()];
                }
                return status;
            }
            Err(e) => {
                status.log_tail = vec![format!("{e:#}")];
                return status;
            }
        }
        let observed = match self.docker.database(&spec.name).await {
            Ok(o) => o,
            Err(e) => {
                status.log_tail = vec![format!("{e:#}")];
                return status;
            }
        };
        use protocol::labels::{APP, ENV, ROLE};
        let expected = [(APP, spec.app.clone()), (ENV, spec.env.clone()), (ROLE, spec.role.to_string())];
        if let Some(o) = observed.as_ref().filter(|o| !o.labelled_as(&expected)) {
            status.state = "name conflict".into();
            status.log_tail = vec![o.foreign()];
            return status;
        }
        if let Some(o) = observed.as_ref().filter(|o| !o.volumes.contains(&spec.volume)) {
            // The server of this role now runs on another volume (a switchover): this one goes,
            // and the next pass creates it on its volume.
            tracing::info!(app = %spec.app, env = %spec.env, container = %o.name, volume = %spec.volume, "the database moved to another volume; replacing its container");
            if let Err(e) = self.docker.stop_and_remove(&o.name, 30).await {
                status.log_tail = vec![format!("{e:#}")];
            }
            return status;
        }
        if let Some(state) = self.lease_ran_out(spec, observed.as_ref()).await {
            status.state = state;
            return status;
        }
        let now = Instant::now();
        let due = self.retry_at.get(&spec.name).is_none_or(|at| now >= *at);
        match observed {
            Some(o) if o.state == "running" => {
                status.state = o.state;
                status.host_port = o.host_port;
                status.healthy = match o.ip {
                    Some(ip) => {
                        let probe = TcpStream::connect(format!("{ip}:5432"));
                        matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Ok(_)))
                    }
                    None => false,
                };
            }
            Some(o) => {
                status.state = o.state.clone();
                if due {
                    let n = self.restarts.entry(spec.name.clone()).or_default();
                    *n += 1;
                    tracing::warn!(app = %spec.app, env = %spec.env, container = %spec.name, state = %o.state, "database is not running; starting it");
                    if let Err(e) = self.docker.start(&spec.name).await {
                        status.log_tail = vec![format!("{e:#}")];
                    }
                    self.retry_at.insert(spec.name.clone(), now + Duration::from_secs(2));
                }
            }
            None if due => {
                tracing::info!(app = %spec.app, env = %spec.env, container = %spec.name, "creating database container");
                let script = if spec.role == DbRole::Replica { REPLICA_SCRIPT } else { START_SCRIPT };
                if let Err(e) = self.docker.create_database(spec, script).await {
                    tracing::warn!(container = %spec.name, error = %format!("{e:#}"), "creating the database failed");
                    status.log_tail = vec![format!("{e:#}")];
                }
                self.retry_at.insert(spec.name.clone(), now + Duration::from_secs(2));
            }
            None => {}
        }
        if !status.healthy && status.log_tail.is_empty() {
            status.log_tail = self.docker.log_tail(&spec.name, 10).await;
        }
        if status.healthy {
            self.converge_roles(spec).await;
            status.db = self.figures(spec).await;
        }
        status
    }

    /// A primary with a replica whose lease ran out (nothing heard from the control plane for
    /// `lease_secs` while no replica streams from it) is stopped, and not started again until the
    /// control plane is heard: it may have been failed over. Returns the state to report then.
    async fn lease_ran_out(
        &mut self,
        spec: &DatabaseSpec,
        observed: Option<&crate::docker::Observed>,
    ) -> Option<String> {
        use std::sync::atomic::Ordering::Acquire;
        let silent_ms = now_ms() - self.contact.heard.load(Acquire);
        if spec.role != DbRole::Primary
            || spec.lease_secs == 0
            || silent_ms < i64::from(spec.lease_secs) * 1000
        {
            let stopped = self.lease_stopped.get(&spec.name).copied()?;
            if self.contact.assigned.load(Acquire) > stopped {
                self.lease_stopped.remove(&spec.name);
                return None;
            }
            return Some("fenced: waiting for a fresh assignment".into());
        }
        self.lease_stopped.entry(spec.name.clone()).or_insert_with(now_ms);
        if let Some(o) = observed.filter(|o| o.state == "running") {
            let sql = "SELECT count(*) FROM pg_stat_replication WHERE state IN ('streaming', 'catchup')";
            let cmd = tool(spec.version, "psql", "postgres", &spec.database, &["-X", "-tAc", sql]);
            let streaming =
                matches!(self.docker.exec_output(&o.name, &cmd).await, Ok((0, out)) if out.trim() != "0");
            if streaming {
                return None; // the replica follows it: it is the primary, whatever the control plane does
            }
            tracing::warn!(app = %spec.app, env = %spec.env, container = %o.name, silent_secs = silent_ms / 1000,
                "no word from the control plane and no replica streaming: stopping the primary, which may have been failed over");
            if let Err(e) = self.docker.stop_and_remove(&o.name, 30).await {
                tracing::warn!(container = %o.name, error = %format!("{e:#}"), "stopping the primary failed");
            }
        }
        Some("fenced: lease ran out".into())
    }

    /// Runs [`dbroles::converge`] on a healthy server unless it already ran for this spec.
    async fn converge_roles(&mut self, spec: &DatabaseSpec) {
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let s = spec;
            (&s.role, &s.user, &s.password, &s.superuser_password, &s.replication_password).hash(&mut h);
            (&s.primary_host, s.primary_port).hash(&mut h);
            h.finish()
        };
        if self.roles.get(&spec.name) == Some(&fingerprint)
            || self.roles_retry_at.get(&spec.name).is_some_and(|at| Instant::now() < *at)
        {
            return;
        }
        // What was sampled with the old secrets (the login check's password) no longer holds.
        self.figures.remove(&spec.name);
        let (app, env, container) = (&spec.app, &spec.env, &spec.name);
        if let Err(why) = dbroles::ready(spec) {
            tracing::warn!(%app, %env, %container, "leaving the database's roles as they are: {why}");
            self.roles_retry_at.insert(spec.name.clone(), Instant::now() + Duration::from_secs(60));
            return;
        }
        match tokio::time::timeout(Duration::from_secs(60), dbroles::converge(&self.docker, spec)).await {
            Ok(Ok(())) => {
                tracing::info!(%app, %env, %container, "database roles and pg_hba.conf are the platform's");
                self.roles.insert(spec.name.clone(), fingerprint);
                self.roles_retry_at.remove(&spec.name);
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "it did not finish within a minute".to_string(),
                };
                tracing::warn!(%app, %env, %container, %error, "setting the database's roles failed; retrying in 10 s");
                self.roles_retry_at.insert(spec.name.clone(), Instant::now() + Duration::from_secs(10));
            }
        }
    }

    /// Connections, size and (on a replica) lag, sampled with psql inside the container over
    /// the local socket, at most every few seconds.
    async fn figures(&mut self, spec: &DatabaseSpec) -> Option<DatabaseFigures> {
        if let Some((at, f)) = self.figures.get(&spec.name) {
            if at.elapsed() < SAMPLE_EVERY {
                return Some(f.clone());
            }
        }
        let mut sql = String::from(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
             current_setting('max_connections'), pg_database_size(current_database())",
        );
        if spec.role == DbRole::Primary {
            // Archiver failures, and the files waiting in the spool for the agent to ship.
            sql.push_str(
                ", (SELECT failed_count FROM pg_stat_archiver), \
                 (SELECT count(*) FROM pg_ls_dir('pg_paas_archive', true, false)), \
                 (SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn)) FROM pg_stat_replication)",
            );
        }
        if spec.role == DbRole::Replica {
            sql.push_str(
                ", pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), \
                 extract(epoch from now() - pg_last_xact_replay_timestamp()), pg_is_wal_replay_paused(), \
                 (SELECT status FROM pg_stat_wal_receiver)",
            );
        }
        let psql = |args: &[&str]| tool(spec.version, "psql", "postgres", &spec.database, args);
        let cmd = psql(&["-X", "-tAF", "|", "-c", &sql]);
        let (code, out) = self.docker.exec_output(&spec.name, &cmd).await.ok()?;
        if code != 0 {
            return self.figures.get(&spec.name).map(|(_, f)| f.clone());
        }
        let cols: Vec<&str> = out.trim().split('|').collect();
        let num = |i: usize| cols.get(i).and_then(|v| v.trim().parse::<f64>().ok());
        let f = DatabaseFigures {
            connections: num(0)? as u64,
            max_connections: num(1)? as u64,
            size_bytes: num(2)? as u64,
            lag_bytes: num(3).filter(|_| spec.role == DbRole::Replica).map(|v| v.max(0.0) as u64),
            lag_seconds: num(4).filter(|_| spec.role == DbRole::Replica),
            login_error: self.login_error(spec).await,
            archive_failures: num(3).filter(|_| spec.role == DbRole::Primary).map(|v| v as u64),
            archive_backlog: num(4).filter(|_| spec.role == DbRole::Primary).map(|v| v as u64),
            replica_behind_bytes: num(5).filter(|_| spec.role == DbRole::Primary).map(|v| v.max(0.0) as u64),
            streaming: (spec.role == DbRole::Replica)
                .then(|| cols.get(6).map(|v| v.trim()) == Some("streaming")),
        };
        if spec.role == DbRole::Replica
            && cols.get(5).map(|v| v.trim()) == Some("t")
            && !self.paused.lock().unwrap_or_else(|p| p.into_inner()).contains(&spec.name)
        {
            // Left paused by a backup that never finished (the agent restarted mid-dump).
            tracing::warn!(app = %spec.app, env = %spec.env, container = %spec.name, "resuming WAL replay left paused");
            let _ = self.docker.exec(&spec.name, &psql(&["-X", "-c", "SELECT pg_wal_replay_resume()"])).await;
        }
        self.figures.insert(spec.name.clone(), (Instant::now(), f.clone()));
        Some(f)
    }

    /// Logs in as the app's role over TCP with the password its DATABASE_URL carries, the way
    /// the app does (scram over the network, not the local socket the platform's own tools
    /// use): `None` when it can (or the check could not run), else the server's reason. The
    /// password goes on stdin into libpq's variable, never on a command line.
    async fn login_error(&self, spec: &DatabaseSpec) -> Option<String> {
        let script = r#"IFS= read -r PGPASSWORD && export PGPASSWORD && exec "$@""#;
        let psql = crate::dbtasks::psql::binary(spec.version, "psql");
        let args =
            ["-X", "-w", "-tA", "-h", "127.0.0.1", "-p", "5432", "-U", &spec.user, "-d", &spec.database];
        let mut cmd: Vec<String> =
            ["sh", "-c", script, "sh", &psql].iter().chain(&args).map(|a| a.to_string()).collect();
        cmd.extend(["-c".to_string(), "SELECT 1".to_string()]);
        let attempt = async {
            let mut exec = self.docker.exec_start(&spec.name, cmd, true).await?;
            exec.write(format!("{}\n", spec.password).as_bytes()).await?;
            exec.finish().await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok((0, _, _))) => None,
            Ok(Ok((_, _, stderr))) => Some(login_failure(&spec.user, &stderr)),
            Ok(Err(e)) => {
                tracing::debug!(container = %spec.name, error = %format!("{e:#}"), "the login check did not run");
                None
            }
            Err(_) => Some(format!("logging in as {} did not finish within 10 s", spec.user)),
        }
    }

    fn build_image(&self, spec: &DatabaseSpec) {
        if !self.building.lock().unwrap_or_else(|p| p.into_inner()).insert(spec.image.clone()) {
            return;
        }
        let (docker, image, version) = (self.docker.clone(), spec.image.clone(), spec.version);
        let (building, errors, network) =
            (self.building.clone(), self.build_errors.clone(), self.build_network.clone());
        tokio::spawn(async move {
            tracing::info!(image = %image, "building the PostgreSQL image from Debian's packages");
            match docker.build_postgres(&image, version, DOCKERFILE, network.as_deref()).await {
                Ok(()) => {
                    tracing::info!(image = %image, "PostgreSQL image built");
                    errors.lock().unwrap_or_else(|p| p.into_inner()).remove(&image);
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    tracing::warn!(image = %image, error = %msg, "building the PostgreSQL image failed");
                    errors.lock().unwrap_or_else(|p| p.into_inner()).insert(image.clone(), msg);
                }
            }
            building.lock().unwrap_or_else(|p| p.into_inner()).remove(&image);
        });
    }
}

/// A failed login in user words, from psql's error output: the server's own reason (`password
/// authentication failed for user "notes"`) without libpq's connection preamble.
fn login_failure(user: &str, stderr: &str) -> String {
    let line = stderr.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("");
    let reason = line.rsplit_once("FATAL:").map_or(line, |(_, r)| r).trim();
    let reason = if reason.is_empty() { "psql failed without saying why" } else { reason };
    format!("the app cannot log in as {user} with the password in DATABASE_URL: {reason}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_login_says_the_servers_reason() {
        let stderr = "psql: error: connection to server at \"127.0.0.1\", port 5432 failed: \
                      FATAL:  password authentication failed for user \"notes\"\n";
        assert_eq!(
            super::login_failure("notes", stderr),
            "the app cannot log in as notes with the password in DATABASE_URL: \
             password authentication failed for user \"notes\""
        );
        assert!(super::login_failure("notes", "").ends_with("psql failed without saying why"));
    }
}
