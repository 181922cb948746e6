//! `paas drains add|list|remove`: an app's log drains.

use crate::args::{DrainsCommand, Global};
use crate::output::{emit, printable, table};
use protocol::drains::{parse_drain_url, AddDrain, Drain};
use std::process::ExitCode;

pub async fn exec(g: &Global, cmd: DrainsCommand) -> anyhow::Result<ExitCode> {
    if let DrainsCommand::Add { url, .. } = &cmd {
        // Checked here too, so a typo fails before anything else.
        parse_drain_url(url).map_err(anyhow::Error::msg)?;
    }
    let client = super::client(g)?;
    match cmd {
        DrainsCommand::Add { app, env, url } => {
            let drain = client.add_drain(&app, &AddDrain { url, env }).await?;
            emit(g.output, &drain, |d| {
                println!("Added drain {}: {}'s lines from now on go to {}", d.id, scope(d), d.url);
            })?;
        }
        DrainsCommand::List { app } => {
            let drains = client.drains(&app).await?;
            emit(g.output, &drains, |drains| {
                if drains.is_empty() {
                    println!("{app} has no drains. Add one with `paas drains add --app {app} URL`.");
                    return;
                }
                table(
                    &["ID", "ENV", "URL", "STATE", "DELIVERED", "DROPPED", "BACKLOG", "LAST ERROR"],
                    drains,
                    |d| {
                        vec![
                            d.id.clone(),
                            d.env.clone().unwrap_or_else(|| "*".into()),
                            printable(&d.url),
                            d.state.to_string(),
                            d.delivered.to_string(),
                            d.dropped.to_string(),
                            d.backlog.to_string(),
                            d.last_error.as_deref().map(printable).unwrap_or_else(|| "-".into()),
                        ]
                    },
                );
            })?;
        }
        DrainsCommand::Remove { app, id_or_url } => {
            let drain = if id_or_url.contains("://") {
                client.remove_drain_by_url(&app, &id_or_url).await?
            } else {
                client.remove_drain(&app, &id_or_url).await?
            };
            emit(g.output, &drain, |d| println!("Removed drain {} ({}) of {}", d.id, d.url, scope(d)))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `shop` or `shop/staging`.
fn scope(d: &Drain) -> String {
    match &d.env {
        Some(env) => format!("{}/{env}", d.app),
        None => d.app.clone(),
    }
}
