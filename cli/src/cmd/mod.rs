//! Dispatch to one module per command; each has a thin `exec`.

mod alerts;
mod apps;
mod apps_info;
mod backup_download;
mod backup_import;
mod backups;
mod cron;
mod db;
mod deploy;
mod domains;
mod drains;
mod envs;
mod git;
mod info;
mod install;
mod login;
mod logs;
mod metrics;
mod node_identity;
mod releases;
mod run;
mod scale;
mod up;
mod users;

use crate::args::{Cli, Command, Global, NodesCommand};
use crate::config;
use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn exec(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Up(args) => up::up(&g, *args).await,
        Command::Server(args) => up::server(*args).await,
        Command::Agent(args) => up::agent(args).await,
        Command::Install(args) => install::exec(&g, args),
        Command::Login(args) => login::exec(&g, args).await,
        Command::Users(cmd) => users::users(&g, cmd).await,
        Command::Tokens(cmd) => users::tokens(&g, cmd).await,
        Command::Platform(cmd) => platform(&g, cmd).await,
        Command::Audit(args) => users::audit(&g, args).await,
        Command::Apps(cmd) => apps::exec(&g, cmd).await,
        Command::Deploy(args) => deploy::exec(&g, args).await,
        Command::Releases(args) => releases::exec(&g, args).await,
        Command::Rollback(args) => deploy::rollback(&g, args).await,
        Command::Restart(args) => deploy::restart(&g, args).await,
        Command::Scale(args) => scale::exec(&g, args).await,
        Command::Envs(cmd) => envs::envs(&g, cmd).await,
        Command::Config(cmd) => envs::config(&g, cmd).await,
        Command::Promote(args) => envs::promote(&g, args).await,
        Command::Maintenance(args) => envs::maintenance(&g, args).await,
        Command::Run(args) => run::exec(&g, args).await,
        Command::Link { app } => apps::link(&g, &app).await,
        Command::GitRemote { app } => git::remote(&g, &app).await,
        Command::Db(cmd) => db::exec(&g, cmd).await,
        Command::GitHook => git::hook().await,
        Command::Ps(target) => info::ps(&g, target).await,
        Command::Logs(args) => logs::exec(&g, args).await,
        Command::Nodes(NodesCommand::Token { ttl }) => node_identity::token(&g, ttl).await,
        Command::Nodes(NodesCommand::Remove { node }) => node_identity::remove(&g, &node).await,
        Command::Nodes(NodesCommand::Drain { node }) => info::drain(&g, &node, true).await,
        Command::Nodes(NodesCommand::Undrain { node }) => info::drain(&g, &node, false).await,
        Command::Nodes(cmd) => info::nodes(&g, cmd).await,
        Command::Events(args) => info::events(&g, args).await,
        Command::Drains(cmd) => drains::exec(&g, cmd).await,
        Command::Metrics(args) => metrics::exec(&g, args).await,
        Command::Alerts(cmd) => alerts::alerts(&g, cmd).await,
        Command::Notify(cmd) => alerts::notify(&g, cmd).await,
        Command::Cron(cmd) => cron::exec(&g, cmd).await,
        Command::Domains(cmd) => domains::exec(&g, cmd).await,
    }
}

pub fn config_path(g: &Global) -> anyhow::Result<PathBuf> {
    match &g.config {
        Some(p) => Ok(p.clone()),
        None => config::default_path(),
    }
}

/// The API client from flags, environment or the config file, in that order.
pub fn client(g: &Global) -> anyhow::Result<protocol::Client> {
    let file = config::load(&config_path(g)?)?;
    let server = g
        .server
        .clone()
        .or(file.server)
        .context("no paas server configured: run `paas up`, or `paas login --server URL`")?;
    let token = g.token.clone().or(file.token).context("no API token configured: run `paas login`")?;
    client_for(&server, &token, g.ca_file.as_ref().or(file.ca_file.as_ref()))
}

/// A client of `server`, trusting the CA in `ca_file` besides the public roots.
pub fn client_for(server: &str, token: &str, ca_file: Option<&PathBuf>) -> anyhow::Result<protocol::Client> {
    let Some(path) = ca_file else { return Ok(protocol::Client::new(server, token)) };
    let pem = std::fs::read(path).with_context(|| format!("cannot read the CA file {}", path.display()))?;
    protocol::Client::trusting(server, token, &pem)
        .map_err(|e| anyhow::anyhow!("the CA file {} holds no PEM certificate: {e}", path.display()))
}

/// `paas platform backup|backups`.
async fn platform(g: &Global, cmd: crate::args::PlatformCommand) -> anyhow::Result<ExitCode> {
    let client = client(g)?;
    match cmd {
        crate::args::PlatformCommand::Backup => {
            let b: serde_json::Value = client.state_backup().await?;
            crate::output::emit(g.output, &b, |b| {
                println!(
                    "State backup {} stored ({} bytes), sealed with the platform's passphrase:",
                    b["name"].as_str().unwrap_or("-"),
                    b["size_bytes"]
                );
                for l in b["locations"].as_array().into_iter().flatten() {
                    println!("  copy: {}", l.as_str().unwrap_or_default());
                }
            })?;
        }
        crate::args::PlatformCommand::Backups => {
            let list: serde_json::Value = client.state_backups().await?;
            crate::output::emit(g.output, &list, |list| {
                let rows = list.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("No state backups yet; `paas platform backup` takes one (PAAS_STATE_PASSPHRASE must be set on the server)");
                }
                for b in rows {
                    println!("{}  {} bytes", b["name"].as_str().unwrap_or("-"), b["size_bytes"]);
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
