//! `paas login`: signs in with a user name and password (the server issues a token for this
//! machine) or checks a given token, then saves the server and token to the CLI config.

use crate::args::{Global, LoginArgs};
use crate::config::{self, CliConfig};
use anyhow::Context;
use std::io::BufRead;
use std::process::ExitCode;

pub async fn exec(g: &Global, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let path = super::config_path(g)?;
    let existing = config::load(&path)?;
    let server = g.server.clone().or(existing.server).context("pass --server URL")?;
    let ca_file = g.ca_file.clone().or(existing.ca_file);
    let token = match (&args.user, &g.token) {
        (Some(user), _) => {
            let password = super::users::read_password(args.password_stdin, false)?;
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let login = protocol::access::Login {
                user: user.clone(),
                password,
                code: args.code.clone(),
                token_name: Some(format!("login@{}", host.trim()).trim_end_matches('@').to_string()),
                ..Default::default()
            };
            super::client_for(&server, "", ca_file.as_ref())?.login(&login).await?.token
        }
        (None, Some(t)) => t.clone(),
        (None, None) => {
            eprintln!("Paste the API token and press Enter (or sign in with --user NAME):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the token from standard input")?;
            line.trim().to_string()
        }
    };
    anyhow::ensure!(!token.is_empty(), "no token given");
    let who = super::client_for(&server, &token, ca_file.as_ref())?.whoami().await?;
    config::save(&path, &CliConfig { server: Some(server.clone()), token: Some(token), ca_file })?;
    println!("Logged in to {server} as {} (config: {})", who.user, path.display());
    Ok(ExitCode::SUCCESS)
}
