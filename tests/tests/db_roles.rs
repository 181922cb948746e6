//! PostgreSQL roles end to end: the app's `DATABASE_URL` role owns its database and can build
//! its schema, but cannot create untrusted extensions, run programs, read server files, create
//! databases or roles or make itself a superuser; over the network the superuser is refused and
//! only the replicator may open replication connections, which the replica does; platform SQL
//! never runs an app's function as the superuser; and a database set up the way the previous
//! release did (one password for the app, the superuser and the replicator, the superuser
//! reachable over the network, here also an app role made superuser) is moved over in place
//! when the platform restarts, with its data and `DATABASE_URL` unchanged.

use paas_tests::{docker, Platform};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `sql` with the host's psql against `url`; (ok, stdout, stderr).
fn psql(url: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql").args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tAc", sql]).output();
    let out = out.expect("running psql (postgresql-client)");
    text(out)
}

fn text(out: Output) -> (bool, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success(), stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[track_caller]
fn refused(url: &str, sql: &str, needle: &str) {
    let (ok, out, err) = psql(url, sql);
    assert!(!ok && err.contains(needle), "{sql:?} was not refused with {needle:?}: {out} {err}");
}

/// The parts of `postgres://user:password@host:port/db`.
struct Url {
    user: String,
    password: String,
    addr: String,
    db: String,
}

impl Url {
    fn parse(url: &str) -> Url {
        let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
        let (auth, rest) = rest.split_once('@').unwrap();
        let (user, password) = auth.split_once(':').unwrap();
        let (addr, db) = rest.split_once('/').unwrap();
        Url { user: user.into(), password: password.into(), addr: addr.into(), db: db.into() }
    }
    fn with(&self, user: &str, db: &str, query: &str) -> String {
        format!("postgres://{user}:{}@{}/{db}{query}", self.password, self.addr)
    }
}

/// The app's database container with `role`, found by its labels.
fn container(app: &str, role: &str) -> String {
    let filters = [format!("label=paas.app={app}"), format!("label=paas.role={role}")];
    let id = docker(&["ps", "-q", "--filter", &filters[0], "--filter", &filters[1]]);
    let id = id.trim();
    assert!(!id.is_empty() && !id.contains('\n'), "one {role} container for {app}: {id:?}");
    id.to_string()
}

/// Runs SQL as the superuser over the container's local socket (the platform's own way in).
fn superuser_sql(container: &str, sql: &str) -> String {
    let mut child = Command::new("docker")
        .args(["exec", "-i", container, "sh", "-c"])
        .arg("exec /usr/lib/postgresql/*/bin/psql -X -v ON_ERROR_STOP=1 -tA -U postgres -d postgres")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let (ok, out, err) = text(child.wait_with_output().unwrap());
    assert!(ok, "{sql}: {err}");
    out
}

/// Writes `content` as the container's pg_hba.conf and reloads it.
fn set_hba(container: &str, content: &str) {
    let script = format!("printf '{content}' > \"$PGDATA/pg_hba.conf\"");
    let out = Command::new("docker").args(["exec", container, "sh", "-c", &script]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    superuser_sql(container, "SELECT pg_reload_conf();");
}

/// Everything a container wrote to its log.
fn container_log(container: &str) -> String {
    let out = Command::new("docker").args(["logs", container]).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The replica follows as the replicator with the password in its own file: none in
/// `primary_conninfo`, none in the replica's, the primary's or the platform's log.
fn replication_secret_stays_put(p: &Platform, primary: &str, replica: &str) {
    let conninfo = superuser_sql(replica, "SHOW primary_conninfo;");
    assert!(conninfo.contains("user=replicator") && !conninfo.contains("password"), "{conninfo}");
    let read = ["exec", replica, "sh", "-c", "cat \"$PGDATA/replicator.pgpass\""];
    let line = docker(&read);
    let secret = line.trim().strip_prefix("*:*:*:replicator:").expect("the replicator's password file");
    assert_eq!(secret.len(), 48, "{line}");
    for (who, log) in
        [("platform", p.log()), ("primary", container_log(primary)), ("replica", container_log(replica))]
    {
        assert!(!log.contains(secret), "the {who}'s log holds the replication password");
    }
}

#[track_caller]
fn wait_until(what: &str, p: &Platform, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The replica follows the primary as the replicator, with its current password: an ended
/// stream comes back and carries a new row.
fn replica_streams(p: &Platform, app: &str, url: &str, primary: &str) {
    superuser_sql(primary, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication;");
    let sql = "SELECT usename || '|' || state FROM pg_stat_replication;";
    wait_until("streaming as the replicator", p, || superuser_sql(primary, sql) == "replicator|streaming");
    let (ok, n, err) = psql(url, "INSERT INTO t DEFAULT VALUES RETURNING id");
    assert!(ok, "{err}");
    let seen = format!("SELECT count(*) FROM t WHERE id = {n}");
    wait_until("the replica showing the new row", p, || p.psql(app, &["--replica"], &seen) == "1");
}

/// A platform with a new app whose database (primary and replica) is healthy; the app's name
/// and the revealed URL of its primary on the node's private address.
fn platform_with_database(prefix: &str) -> (Platform, String, String) {
    let mut p = Platform::start();
    let app = p.app_name(prefix);
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app]).expect_ok();
    p.wait_db_healthy(&app);
    let info = p.paas(&["db", "info", "--app", &app, "--reveal", "-o", "json"]).expect_ok().json();
    let url = info["node_url"].as_str().expect("the primary's node URL").to_string();
    (p, app, url)
}

#[test]
fn the_app_role_owns_its_database_and_nothing_more() {
    let (mut p, app, url) = platform_with_database("roles");
    let u = Url::parse(&url);
    let reserved = p.app_name("pg");
    p.paas(&["apps", "create", &reserved]).expect_ok();
    p.paas(&["db", "create", "--app", &reserved]).expect_err("cannot have a managed database");

    // Migrations work: tables, rows, trusted extensions.
    let (ok, _, err) = psql(&url, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t DEFAULT VALUES");
    assert!(ok, "{err}");
    assert!(psql(&url, "CREATE EXTENSION pg_trgm").0, "a trusted extension");
    assert_eq!(psql(&url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").1, "f");

    // Nothing beyond its database. file_fdw is installed, so only the right is missing.
    assert_eq!(psql(&url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'file_fdw'").1, "1");
    refused(&url, "CREATE EXTENSION file_fdw", "permission denied to create extension");
    refused(&url, "COPY (SELECT 1) TO PROGRAM 'id'", "pg_execute_server_program");
    refused(&url, "SELECT pg_read_file('/etc/passwd')", "permission denied");
    refused(&url, "COPY t FROM '/etc/passwd'", "pg_read_server_files");
    refused(&url, &format!("ALTER ROLE \"{}\" SUPERUSER", u.user), "must be superuser");
    refused(&url, "CREATE ROLE intruder", "permission denied to create role");
    refused(&url, "CREATE DATABASE other", "permission denied to create database");
    refused(&url, "GRANT pg_execute_server_program TO CURRENT_USER", "must have admin option");

    // Over the network: the superuser is refused (even with the app's password), the replicator
    // only replicates, and the app cannot open a replication connection.
    refused(&u.with("postgres", "postgres", ""), "SELECT 1", "no pg_hba.conf entry");
    refused(&u.with("replicator", &u.db, ""), "SELECT 1", "no pg_hba.conf entry");
    let replication = u.with(&u.user, &u.db, "?replication=true");
    refused(&replication, "IDENTIFY_SYSTEM", "no pg_hba.conf entry for replication connection");
    let (primary, replica) = (container(&app, "db-primary"), container(&app, "db-replica"));
    replica_streams(&p, &app, &url, &primary);
    replication_secret_stays_put(&p, &primary, &replica);
    assert_eq!(p.psql(&app, &[], "SELECT current_user"), u.user, "db psql runs as the app's role");
    // ...and cannot become the superuser over the server's local socket, by argument or by
    // reconnecting from inside psql.
    let su = p.paas(&["db", "psql", "--app", &app, "--", "-U", "postgres", "-tAc", "SELECT 1"]);
    assert!(!su.ok && su.stdout.contains("authentication failed"), "{su:?}");
    let reconnect = p.paas(&["db", "psql", "--app", &app, "--", "-tAc", "\\connect - postgres"]);
    assert!(reconnect.stdout.contains("authentication failed"), "{reconnect:?}");

    // An app's function that shadows count(*) for every session in its database runs in the
    // app's own sessions, never in the platform's (backups count rows as the superuser).
    let trap = format!(
        "CREATE FUNCTION public.tattle(bigint) RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN \
         IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN \
         RAISE EXCEPTION 'an app function ran as the superuser'; END IF; RETURN $1 + 10; END $$; \
         CREATE AGGREGATE public.count(*) (sfunc = public.tattle, stype = bigint, initcond = '0'); \
         ALTER DATABASE \"{}\" SET search_path = public, pg_catalog",
        u.db
    );
    let (ok, _, err) = psql(&url, &trap);
    assert!(ok, "{err}");
    let rows: u64 = psql(&url, "SELECT pg_catalog.count(*) FROM t").1.parse().unwrap();
    assert_eq!(psql(&url, "SELECT count(*) FROM t").1, (rows * 10).to_string(), "the trap is armed");
    let b = p.paas(&["db", "backup", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(b["verification"], "ok", "{b}");
    assert_eq!(b["tables"]["public.t"], rows, "{b}");
    assert_eq!(psql(&url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").1, "f");
    let id = b["id"].as_str().unwrap();
    p.paas(&["db", "restore", id, "--app", &app, "--confirm"]).expect_ok();
    let owners =
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = 'public'::regnamespace";
    assert_eq!(psql(&url, owners).1, u.user, "restored objects belong to the app");
    assert_eq!(psql(&url, "SELECT pg_catalog.count(*) FROM t").1, rows.to_string());
}

#[test]
fn a_database_from_the_previous_release_is_moved_over_in_place() {
    let (mut p, app, url) = platform_with_database("legacy");
    let u = Url::parse(&url);
    let (ok, _, err) =
        psql(&url, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t SELECT FROM generate_series(1, 3)");
    assert!(ok, "{err}");
    let config = |p: &Platform| p.paas(&["config", "list", "--app", &app, "--reveal"]).expect_ok().stdout;
    let config_before = config(&p);
    assert!(config_before.contains(&url.replace(&u.addr, "db-primary:5432")), "{config_before}");

    // The previous release: one password for all three roles and a pg_hba that lets any role in
    // over the network; here the app's role is even a superuser.
    let (primary, replica) = (container(&app, "db-primary"), container(&app, "db-replica"));
    let pw = &u.password;
    superuser_sql(
        &primary,
        &format!(
            "ALTER ROLE \"{}\" SUPERUSER; ALTER ROLE postgres PASSWORD '{pw}'; ALTER ROLE replicator PASSWORD '{pw}';",
            u.user
        ),
    );
    let old_hba = r"local all all trust\nhost all all all scram-sha-256\nhost replication replicator all scram-sha-256\n";
    set_hba(&primary, old_hba);
    set_hba(&replica, old_hba);
    superuser_sql(
        &replica,
        &format!(
            "ALTER SYSTEM SET primary_conninfo = 'host=db-primary port=5432 user=replicator password={pw}';"
        ),
    );
    superuser_sql(&replica, "SELECT pg_reload_conf();");
    let as_superuser = u.with("postgres", "postgres", "");
    assert!(psql(&as_superuser, "SELECT 1").0, "the old hole is open before the upgrade");
    assert_eq!(psql(&url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").1, "t");
    replica_streams(&p, &app, &url, &primary);

    // The store from before: no superuser or replication secret.
    let rows_before = psql(&url, "SELECT count(*) FROM t").1;
    p.stop();
    let state = p.dir.path().join("data").join("state.db");
    let sqlite = |sql: &str| {
        let out = Command::new("sqlite3").arg(&state).arg(sql).output().expect("sqlite3");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    sqlite("UPDATE databases SET superuser_password = x'', replication_password = x''");
    p.restart();

    let is_superuser = || psql(&url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").1;
    // The superuser's new password and its pg_hba.conf line come in two steps: wait for the
    // second, or the old password's refusal would end the wait before the network is closed.
    wait_until("the app's role losing superuser and the superuser the network", &p, || {
        let (ok, _, err) = psql(&as_superuser, "SELECT 1");
        is_superuser() == "f" && !ok && err.contains("no pg_hba.conf entry")
    });
    let sealed =
        "SELECT length(superuser_password) > 12 AND length(replication_password) > 12 FROM databases";
    assert_eq!(sqlite(sealed), "1", "new secrets, sealed");
    assert_eq!(config(&p), config_before, "DATABASE_URL is unchanged");
    assert_eq!(psql(&url, "SELECT count(*) FROM t").1, rows_before, "the data is unchanged");
    refused(&as_superuser, "SELECT 1", "no pg_hba.conf entry");
    let old_replication = u.with("replicator", &u.db, "?replication=true");
    refused(&old_replication, "IDENTIFY_SYSTEM", "password authentication failed");
    refused(&url, "COPY (SELECT 1) TO PROGRAM 'id'", "pg_execute_server_program");
    replica_streams(&p, &app, &url, &primary);
    replication_secret_stays_put(&p, &primary, &replica);
    for (who, log) in [("platform", p.log()), ("primary", container_log(&primary))] {
        assert!(!log.contains(pw.as_str()), "the {who}'s log holds the app's password");
    }
}
