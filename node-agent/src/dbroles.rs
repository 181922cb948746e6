//! The roles and pg_hba.conf of a running managed PostgreSQL, brought to what the platform
//! expects: the app's role owns its database and nothing more, the `postgres` superuser and the
//! `replicator` have their own passwords, pg_hba lets the superuser in over the local socket
//! only and the replicator for replication only, and a replica follows its primary as the
//! replicator, its password in a file (`primary_conninfo` holds none, so it is never logged). New servers start this way (the start scripts); servers created by an earlier
//! release (one password for all, the superuser reachable over the network) are moved over
//! here, in place, while they run: data and `DATABASE_URL` stay as they are. Every step is
//! idempotent, so the agent simply runs them again after an interruption.

use crate::dbtasks::psql::sql;
use crate::docker::DockerClient;
use anyhow::Context;
use protocol::agent::DatabaseSpec;
use protocol::agent::DbRole;

/// Where every managed server keeps its data (a directory on its volume).
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";

/// The replica's password file for following its primary (`*:*:*:replicator:<password>`, mode
/// 0600), named in `primary_conninfo`. The replica start script writes it when it clones; after
/// that only [`converge`] does, so a new password needs no restart: libpq reads the file on each
/// connection attempt.
pub fn passfile() -> String {
    format!("{PGDATA}/replicator.pgpass")
}

/// The platform's pg_hba.conf for a server whose app role is `user`. Written by the start
/// scripts on every start and by [`converge`] into servers from an earlier release.
pub fn pg_hba(user: &str) -> String {
    // A quoted name is never one of pg_hba's keywords (`all`, `replication`, ...).
    let user = format!("\"{}\"", user.replace('"', "\"\""));
    format!(
        "# Written by paas on every start; edits are replaced.\n\
         # The local socket: the superuser only from the OS user postgres (the platform's own\n\
         # tools); the app's role for `paas db psql`, which runs as nobody and so cannot\n\
         # reconnect as the superuser.\n\
         local all postgres peer\n\
         local replication postgres peer\n\
         local all {user} trust\n\
         # Replication connections: the replicator only.\n\
         host replication replicator all scram-sha-256\n\
         # Everything else over the network: the app's role only (not the superuser).\n\
         host all {user} all scram-sha-256\n"
    )
}

/// The replica's `primary_conninfo`: its primary, as the replicator, with the password from
/// [`passfile`]. No value is quoted (see [`ready`]), so the start script can write it verbatim.
pub fn primary_conninfo(spec: &DatabaseSpec) -> String {
    format!("host={} port={} user=replicator passfile={}", spec.primary_host, spec.primary_port, passfile())
}

/// Session settings for SQL that carries a password: nothing of it reaches the server log, even
/// when a statement fails, and psql's own error lines quote no statement.
const QUIET: &str = "\\set VERBOSITY terse\n\
SET log_statement = 'none';\n\
SET log_min_error_statement = 'panic';\n\
SET log_min_duration_statement = -1;\n";

/// The primary's roles. The app's role loses any superuser right or membership an earlier
/// release (or anyone) gave it; when it had one, its open sessions are ended so none keeps
/// those rights. Sessions of the superuser opened over the network (which only an earlier
/// release's pg_hba allowed) are ended too.
const PRIMARY_ROLES: &str = "\
SELECT (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls \
 OR EXISTS (SELECT FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid)) AS app_was_privileged \
 FROM pg_catalog.pg_roles r WHERE r.rolname = :'app' \\gset
BEGIN;
SELECT 'CREATE ROLE replicator' WHERE NOT EXISTS \
 (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'replicator') \\gexec
ALTER ROLE replicator WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS \
 PASSWORD :'replication_password';
ALTER ROLE postgres WITH PASSWORD :'superuser_password';
ALTER ROLE :\"app\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT \
 PASSWORD :'app_password';
SELECT pg_catalog.format('REVOKE %I FROM %I', g.rolname, m.rolname) \
 FROM pg_catalog.pg_auth_members a \
 JOIN pg_catalog.pg_roles g ON g.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member \
 WHERE m.rolname IN (:'app', 'replicator') \\gexec
COMMIT;
SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
 WHERE (usename = :'app' AND :'app_was_privileged'::bool) \
 OR (usename = 'postgres' AND client_addr IS NOT NULL);
";

/// A replica's `primary_conninfo`, changed (and the WAL receiver restarted) only when it
/// differs from what the platform wants.
const REPLICA_CONNINFO: &str = "\
SELECT pg_catalog.format('ALTER SYSTEM SET primary_conninfo = %L', :'conninfo') \
 WHERE pg_catalog.current_setting('primary_conninfo') IS DISTINCT FROM :'conninfo' \\gexec
";

/// Makes pg_hba.conf (written just before) effective, unless it does not parse.
const RELOAD: &str = "\
DO $$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_hba_file_rules WHERE error IS NOT NULL) THEN \
 RAISE EXCEPTION 'the pg_hba.conf paas wrote does not parse'; END IF; END $$;
SELECT pg_catalog.pg_reload_conf();
";

/// Whether a server can be created or converged: the control plane gave the platform's secrets
/// (one from an earlier release gives none), the app's role is not one of PostgreSQL's own, and
/// a replica's primary address needs no quoting.
pub fn ready(spec: &DatabaseSpec) -> Result<(), &'static str> {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !plain(&spec.superuser_password) || !plain(&spec.replication_password) || !plain(&spec.password) {
        return Err("the control plane gave no usable superuser and replication secrets");
    }
    if matches!(spec.user.as_str(), "postgres" | "replicator") || spec.user.starts_with("pg_") {
        return Err("the app's role is one of PostgreSQL's own");
    }
    let host = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':');
    if spec.role == DbRole::Replica && (spec.primary_host.is_empty() || !spec.primary_host.bytes().all(host))
    {
        return Err("the primary's address is not a plain host name or IP address");
    }
    Ok(())
}

/// Brings a running server's roles, pg_hba.conf and (on a replica) primary_conninfo to what
/// the spec says. Safe to run any number of times and to interrupt at any point.
pub async fn converge(docker: &DockerClient, spec: &DatabaseSpec) -> anyhow::Result<()> {
    ready(spec).map_err(anyhow::Error::msg)?;
    let run = |vars: Vec<(&'static str, String)>, script: String| async move {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sql(docker, &spec.name, spec.version, "postgres", "postgres", &vars, &script).await
    };
    let hba = format!("{PGDATA}/pg_hba.conf");
    if spec.role == DbRole::Replica {
        let password = format!("*:*:*:replicator:{}\n", spec.replication_password);
        write_file(docker, &spec.name, &passfile(), &password).await?;
        write_file(docker, &spec.name, &hba, &pg_hba(&spec.user)).await?;
        let vars = vec![("conninfo", primary_conninfo(spec))];
        run(vars, format!("{QUIET}{REPLICA_CONNINFO}{RELOAD}")).await.context("updating primary_conninfo")?;
        return Ok(());
    }
    let vars = vec![
        ("app", spec.user.clone()),
        ("app_password", spec.password.clone()),
        ("superuser_password", spec.superuser_password.clone()),
        ("replication_password", spec.replication_password.clone()),
    ];
    run(vars, format!("{QUIET}{PRIMARY_ROLES}")).await.context("setting the roles")?;
    write_file(docker, &spec.name, &hba, &pg_hba(&spec.user)).await?;
    run(Vec::new(), RELOAD.to_string()).await.context("reloading pg_hba.conf")?;
    Ok(())
}

/// Replaces `path` in the container atomically with `content` (mode 0600: a whole new file
/// synced and renamed over the old one), so an interruption leaves the old file or the new one,
/// never half of either. The content goes on stdin, never on a command line.
async fn write_file(docker: &DockerClient, container: &str, path: &str, content: &str) -> anyhow::Result<()> {
    let script =
        r#"umask 077 && t="$1.paas" && cat > "$t" && { sync "$t" 2>/dev/null || sync; } && mv -f "$t" "$1""#;
    let cmd = ["sh", "-c", script, "sh", path].map(String::from).to_vec();
    let mut exec = docker.exec_start(container, cmd, true).await?;
    exec.write(content.as_bytes()).await?;
    let (code, _, err) = exec.finish().await?;
    anyhow::ensure!(code == 0, "writing {path} failed: {}", err.trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DatabaseSpec {
        DatabaseSpec {
            app: "notes".into(),
            env: "production".into(),
            role: DbRole::Replica,
            name: "paas-notes-production-db-replica".into(),
            image: "paas/postgres:15".into(),
            volume: "v".into(),
            network: "n".into(),
            subnet: String::new(),
            version: 15,
            database: "notes".into(),
            user: "notes".into(),
            password: "a1".into(),
            superuser_password: "b2".into(),
            replication_password: "c3".into(),
            max_connections: 100,
            primary_host: "db-primary".into(),
            primary_port: 5432,
            host_port: 0,
            archive_timeout_secs: 60,
            lease_secs: 0,
        }
    }

    #[test]
    fn hba_lets_the_app_in_and_the_superuser_only_locally() {
        let hba = pg_hba("all");
        let rules: Vec<&str> = hba.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            rules,
            [
                "local all postgres peer",
                "local replication postgres peer",
                "local all \"all\" trust",
                "host replication replicator all scram-sha-256",
                "host all \"all\" all scram-sha-256"
            ]
        );
    }

    #[test]
    fn replicas_follow_as_the_replicator() {
        assert_eq!(
            primary_conninfo(&spec()),
            "host=db-primary port=5432 user=replicator passfile=/var/lib/postgresql/data/pgdata/replicator.pgpass"
        );
    }

    #[test]
    fn converging_needs_the_platform_secrets() {
        let ready_with = |change: fn(&mut DatabaseSpec)| {
            let mut s = spec();
            change(&mut s);
            ready(&s).is_ok()
        };
        assert!(ready_with(|_| {}));
        assert!(!ready_with(|s| s.superuser_password.clear()), "from an older control plane");
        assert!(!ready_with(|s| s.replication_password = "x' OR '1".into()));
        assert!(!ready_with(|s| s.user = "postgres".into()));
        assert!(!ready_with(|s| s.primary_host = "h' password='x".into()));
        assert!(ready_with(|s| s.primary_host = "fd00::1".into()));
    }
}
