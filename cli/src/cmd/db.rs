//! `paas db create|info|settings|failover|rotate-credentials`: managed PostgreSQL for an
//! environment; backups, restores and imports live in `backups.rs`.

use crate::args::{AppEnv, BackupsCommand, DbCommand, Global, Output};
use crate::output::emit;
use protocol::api::{CreateDatabase, DatabaseInfo, DatabaseServer, StartRestore};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long `db create` waits for its servers (a first use builds the image from Debian's
/// packages, which takes a few minutes on a slow mirror).
const READY_WAIT: Duration = Duration::from_secs(900);

pub async fn exec(g: &Global, cmd: DbCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        DbCommand::Backup { target, no_wait, base } => {
            return super::backups::backup(g, target, no_wait, base).await
        }
        DbCommand::Backups {
            command: Some(BackupsCommand::Download { target, id, file, force }), ..
        } => return super::backup_download::exec(g, target, &id, file.as_deref(), force).await,
        DbCommand::Backups { app, env, command: None } => {
            let app = app.ok_or_else(|| {
                anyhow::anyhow!(
                    "which app's backups? Give --app, or run this inside a directory linked to an app"
                )
            })?;
            return super::backups::list(g, AppEnv { app, env }).await;
        }
        DbCommand::Failover { target, to: _ } => {
            let started = Instant::now();
            if g.output == Output::Text {
                eprintln!(
                    "Stopping the primary of {}/{} and promoting its replica...",
                    target.app, target.env
                );
            }
            let info = client.db_failover(&target.app, &target.env).await?;
            emit(g.output, &info, |i| {
                println!(
                    "The replica on {} is the primary of {}/{} ({:.1}s); a new replica is being cloned on {}",
                    i.primary.node,
                    i.app,
                    i.env,
                    started.elapsed().as_secs_f64(),
                    i.replica.as_ref().map_or("-", |r| r.node.as_str())
                )
            })?;
        }
        DbCommand::Verify { target, backup } => return super::backups::verify(g, target, backup).await,
        DbCommand::Restore { target, backup, to_time, confirm, to_new } => {
            let req = StartRestore { backup: backup.unwrap_or_default(), to_time, confirm, to_new };
            return super::backups::restore(g, target, req).await;
        }
        DbCommand::Import { target, source, confirm, to_new } => {
            return super::backups::import(g, target, &source, confirm, to_new).await;
        }
        DbCommand::RotateCredentials { target, detach } => {
            let started = Instant::now();
            let changed = client.db_rotate_credentials(&target.app, &target.env).await?;
            if let (Some(release), false) = (&changed.release, detach) {
                if g.output == Output::Text {
                    eprintln!(
                        "The app's role of {}/{} has a new password; release v{} rolls it out in DATABASE_URL",
                        target.app, target.env, release.version
                    );
                }
                return super::deploy::follow(g, &client, release, started).await;
            }
            emit(g.output, &changed, |c| {
                match &c.release {
                Some(r) => println!(
                    "The app's role of {}/{} has a new password; release v{} is rolling it out in DATABASE_URL",
                    target.app, target.env, r.version
                ),
                None => println!(
                    "The app's role of {}/{} has a new password; DATABASE_URL carries it from the next deploy",
                    target.app, target.env
                ),
            }
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        DbCommand::Psql { target, replica, args } => {
            return super::backups::psql(g, target, replica, args).await
        }
        DbCommand::Settings { target, settings } => {
            let info = client.db_settings(&target.app, &target.env, &settings.to_api()).await?;
            emit(g.output, &info, |i| {
                println!(
                    "Backups of {}/{}: schedule {} (UTC), keep {} backups, none older than {} days",
                    i.app, i.env, i.backup_schedule, i.keep, i.keep_days
                );
                if let Some(next) = &i.next_backup_at {
                    println!("Next scheduled backup: {next}");
                }
            })?;
        }
        DbCommand::Create { target, version, max_connections, replicas, settings, reuse_volume, no_wait } => {
            let req = CreateDatabase {
                version: Some(version),
                max_connections,
                replicas: Some(replicas),
                settings: settings.to_api(),
                reuse_volume,
            };
            let started = Instant::now();
            let info = client.db_create(&target.app, &target.env, &req).await?;
            let text = g.output == Output::Text;
            if text {
                println!(
                    "Created PostgreSQL {} for {}/{} on node {}",
                    info.version, info.app, info.env, info.primary.node
                );
                println!("DATABASE_URL is set in the environment's config: {}", info.url);
                if let Some(r) = &info.replica_url {
                    println!("DATABASE_REPLICA_URL (streaming replica, read-only): {r}");
                }
            }
            if no_wait {
                emit(g.output, &info, |_| {
                    println!("The first start builds the image and initialises the data; `paas db info` shows when it is up.");
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let info = wait_ready(&client, &target, text).await?;
            emit(g.output, &info, |_| println!("Ready in {:.1} s", started.elapsed().as_secs_f64()))?;
        }
        DbCommand::Info { target, reveal } => {
            let info = client.db_info(&target.app, &target.env, reveal).await?;
            emit(g.output, &info, |i| {
                println!("PostgreSQL {} for {}/{}", i.version, i.app, i.env);
                println!(
                    "  primary:  {} on {} ({}, {})",
                    i.primary.name,
                    i.primary.node,
                    i.primary.state,
                    health(&i.primary)
                );
                println!("  address:  {}", i.primary.address.as_deref().unwrap_or("-"));
                println!("  max_connections: {}", i.max_connections);
                if let Some(f) = &i.primary.figures {
                    println!("  connections: {} of {} in use", f.connections, f.max_connections);
                    println!("  size: {:.1} MiB", f.size_bytes as f64 / (1 << 20) as f64);
                }
                println!("  url (apps):  {}", i.url);
                if let Some(u) = &i.node_url {
                    println!("  url (node):  {u}");
                }
                if let Some(r) = &i.replica {
                    println!("  replica:  {} on {} ({}, {})", r.name, r.node, r.state, health(r));
                    println!("  replica url (apps): {}", i.replica_url.as_deref().unwrap_or("-"));
                    if let Some(f) = &r.figures {
                        let bytes = f.lag_bytes.map_or("-".to_string(), |b| b.to_string());
                        let secs = f.lag_seconds.map_or("-".to_string(), |s| format!("{s:.1}"));
                        println!("  replication lag: {bytes} bytes, last replayed transaction {secs}s ago");
                    }
                    if let Some(u) = &i.replica_node_url {
                        println!("  replica url (node): {u}");
                    }
                }
                let next = i.next_backup_at.as_deref().unwrap_or("-");
                println!(
                    "  backups: schedule {} (UTC), next {next}, keep {} / {} days",
                    i.backup_schedule, i.keep, i.keep_days
                );
                let describe = |b: &protocol::api::Backup| {
                    format!("{} ({}, {})", b.id, crate::output::ago(&b.started_at), b.status)
                };
                println!("  last backup: {}", i.last_backup.as_ref().map_or("none".into(), describe));
                let verified = i
                    .last_verified
                    .as_ref()
                    .map(|b| format!("{} (verified {})", b.id, b.verified_at.as_deref().unwrap_or("-")));
                println!("  last verified restore: {}", verified.as_deref().unwrap_or("none"));
                let a = &i.archive;
                match (&a.last_segment, &a.last_stored_at) {
                    (Some(seg), Some(at)) => println!(
                        "  WAL archive: {} files ({}), newest {seg} stored {}",
                        a.segments,
                        protocol::bytes_human(a.bytes),
                        crate::output::ago(at)
                    ),
                    _ => println!(
                        "  WAL archive: nothing archived yet (a segment is archived after the first writes)"
                    ),
                }
                let failures = i.primary.figures.as_ref().and_then(|f| f.archive_failures).unwrap_or(0);
                let backlog = i.primary.figures.as_ref().and_then(|f| f.archive_backlog).unwrap_or(0);
                if failures > 0 || backlog > 1 {
                    println!("  WAL archiver: {failures} failures, {backlog} files waiting to ship");
                }
                match &a.earliest {
                    Some(from) => println!("  point-in-time restore: from {from} (base backup {})", a.last_base_backup.as_deref().unwrap_or("-")),
                    None => println!("  point-in-time restore: not yet (no base backup; one is taken once the archive runs, or `paas db backup --base`)"),
                }
                if !i.timeline.is_empty() {
                    println!("  timeline:");
                    for e in &i.timeline {
                        println!("    {}  {}", crate::output::ago(&e.at), e.message);
                    }
                }
                for w in &i.warnings {
                    println!("  WARNING: {w}");
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until every server of the database accepts connections as the app's role (what
/// `db info` calls healthy), saying on stderr what it is doing whenever that changes.
async fn wait_ready(client: &protocol::Client, t: &AppEnv, progress: bool) -> anyhow::Result<DatabaseInfo> {
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let info = client.db_info(&t.app, &t.env, false).await?;
        let servers =
            std::iter::once(("primary", &info.primary)).chain(info.replica.as_ref().map(|r| ("replica", r)));
        let Some((role, server)) = servers.into_iter().find(|(_, s)| !s.healthy) else { return Ok(info) };
        let now = phase(role, server);
        if progress && now != said {
            eprintln!("{now}");
        }
        if started.elapsed() > READY_WAIT {
            anyhow::bail!(
                "the {role} of {}/{} is not ready after {} minutes ({}); `paas db info` shows how it goes",
                t.app,
                t.env,
                READY_WAIT.as_secs() / 60,
                now.trim_end_matches('…')
            );
        }
        said = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a server that is not ready yet is doing, in the words `db create` prints.
fn phase(role: &str, s: &DatabaseServer) -> String {
    match (s.state.as_str(), &s.problem) {
        (_, Some(why)) => format!("the {role} runs, but {why}"),
        ("pending", _) => format!("creating the {role}'s volume and container…"),
        ("building image", _) => {
            "building the PostgreSQL image from Debian's packages (first use only)…".into()
        }
        ("running", _) if role == "replica" => "cloning the replica from the primary…".into(),
        ("running", _) => format!("waiting for the {role} to accept connections…"),
        (state, _) => format!("starting PostgreSQL ({role} {state})…"),
    }
}

/// A server's health as `db info` prints it: healthy, not ready yet, or unhealthy with why.
fn health(s: &protocol::api::DatabaseServer) -> String {
    match (&s.problem, s.healthy) {
        (Some(why), _) => format!("UNHEALTHY: {why}"),
        (None, true) => "healthy".into(),
        (None, false) => "not ready".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::phase;
    use protocol::api::DatabaseServer;

    fn server(state: &str, problem: Option<&str>) -> DatabaseServer {
        DatabaseServer {
            name: "paas-shop--production--db-primary".into(),
            node: "n1".into(),
            state: state.into(),
            healthy: false,
            address: None,
            figures: None,
            problem: problem.map(String::from),
        }
    }

    #[test]
    fn progress_says_what_the_server_is_doing() {
        assert_eq!(
            phase("primary", &server("pending", None)),
            "creating the primary's volume and container…"
        );
        assert!(
            phase("primary", &server("building image", None)).starts_with("building the PostgreSQL image")
        );
        assert_eq!(
            phase("primary", &server("running", None)),
            "waiting for the primary to accept connections…"
        );
        assert_eq!(phase("replica", &server("running", None)), "cloning the replica from the primary…");
        assert_eq!(
            phase("primary", &server("restarting", None)),
            "starting PostgreSQL (primary restarting)…"
        );
        let why = "the app cannot log in as shop with the password in DATABASE_URL: no";
        assert_eq!(phase("primary", &server("running", Some(why))), format!("the primary runs, but {why}"));
    }
}
