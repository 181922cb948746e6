//! `paas db create|info|settings`: managed PostgreSQL for an environment; backups live in
//! `backups.rs`.

use crate::args::{DbCommand, Global};
use crate::output::emit;
use protocol::api::CreateDatabase;
use std::process::ExitCode;

pub async fn exec(g: &Global, cmd: DbCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        DbCommand::Backup { target, no_wait } => return super::backups::backup(g, target, no_wait).await,
        DbCommand::Backups(target) => return super::backups::list(g, target).await,
        DbCommand::Verify { target, backup } => return super::backups::verify(g, target, backup).await,
        DbCommand::Restore { target, backup, confirm, to_new } => {
            return super::backups::restore(g, target, backup, confirm, to_new).await
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
        DbCommand::Create { target, version, max_connections, replicas, settings, reuse_volume } => {
            let req = CreateDatabase {
                version: Some(version),
                max_connections,
                replicas: Some(replicas),
                settings: settings.to_api(),
                reuse_volume,
            };
            let info = client.db_create(&target.app, &target.env, &req).await?;
            emit(g.output, &info, |i| {
                println!(
                    "Created PostgreSQL {} for {}/{} on node {}",
                    i.version, i.app, i.env, i.primary.node
                );
                println!("DATABASE_URL is set in the environment's config: {}", i.url);
                if let Some(r) = &i.replica_url {
                    println!("DATABASE_REPLICA_URL (streaming replica, read-only): {r}");
                }
                println!("The first start builds the image and initialises the data; `paas db info` shows when it is up.");
            })?;
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
                for w in &i.warnings {
                    println!("  WARNING: {w}");
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A server's health as `db info` prints it: healthy, not ready yet, or unhealthy with why.
fn health(s: &protocol::api::DatabaseServer) -> String {
    match (&s.problem, s.healthy) {
        (Some(why), _) => format!("UNHEALTHY: {why}"),
        (None, true) => "healthy".into(),
        (None, false) => "not ready".into(),
    }
}
