//! `paas db create|info`: managed PostgreSQL for an environment.

use crate::args::{DbCommand, Global};
use crate::output::emit;
use protocol::api::CreateDatabase;
use std::process::ExitCode;

pub async fn exec(g: &Global, cmd: DbCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        DbCommand::Create { target, version, max_connections, replicas } => {
            let req = CreateDatabase { version: Some(version), max_connections, replicas: Some(replicas) };
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
                let health = if i.primary.healthy { "healthy" } else { "not ready" };
                println!(
                    "  primary:  {} on {} ({}, {health})",
                    i.primary.name, i.primary.node, i.primary.state
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
                    let health = if r.healthy { "healthy" } else { "not ready" };
                    println!("  replica:  {} on {} ({}, {health})", r.name, r.node, r.state);
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
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
