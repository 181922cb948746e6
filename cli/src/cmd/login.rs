//! `paas login`: checks a server URL and token, then saves them to the CLI config.

use crate::args::Global;
use crate::config::{self, CliConfig};
use anyhow::Context;
use std::io::BufRead;
use std::process::ExitCode;

pub async fn exec(g: &Global) -> anyhow::Result<ExitCode> {
    let path = super::config_path(g)?;
    let existing = config::load(&path)?;
    let server = g.server.clone().or(existing.server).context("pass --server URL")?;
    let token = match &g.token {
        Some(t) => t.clone(),
        None => {
            eprintln!("Paste the API token and press Enter:");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the token from standard input")?;
            line.trim().to_string()
        }
    };
    anyhow::ensure!(!token.is_empty(), "no token given");
    let who = protocol::Client::new(&server, &token).whoami().await?;
    config::save(&path, &CliConfig { server: Some(server.clone()), token: Some(token) })?;
    println!("Logged in to {server} as {} (config: {})", who.user, path.display());
    Ok(ExitCode::SUCCESS)
}
