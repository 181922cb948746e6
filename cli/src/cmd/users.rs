//! `paas users`, `paas tokens` and `paas audit`.

use crate::args::{AppOrAll, AuditArgs, Global, TokensCommand, UsersCommand};
use crate::output::{emit, printable, table};
use protocol::access::{CreatedToken, Grant, TokenInfo, User, ALL_APPS};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

/// A password: asked at the terminal (twice when `confirm`), or one line of standard input.
pub fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        anyhow::ensure!(
            from_stdin,
            "standard input is not a terminal: pass --password-stdin and send the password on it"
        );
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let password = rpassword::prompt_password("Password: ")?;
    if confirm {
        let again = rpassword::prompt_password("Password again: ")?;
        anyhow::ensure!(password == again, "the two passwords differ; nothing was changed");
    }
    Ok(password)
}

fn app_of(on: &AppOrAll) -> &str {
    on.app.as_deref().unwrap_or(ALL_APPS)
}

fn grants_text(grants: &[Grant]) -> String {
    if grants.is_empty() {
        return "-".into();
    }
    let each = grants.iter().map(|g| {
        let on = if g.app == ALL_APPS { "every app".to_string() } else { g.app.clone() };
        format!("{} on {on}", g.role)
    });
    each.collect::<Vec<_>>().join(", ")
}

fn show_users(users: &[User]) {
    table(&["USER", "ROLES", "SIGN-IN", "CREATED"], users, |u| {
        let sign_in = match (u.password, u.totp) {
            (true, true) => "password + code",
            (true, false) => "password",
            _ => "tokens only",
        };
        vec![u.name.clone(), grants_text(&u.grants), sign_in.to_string(), crate::output::ago(&u.created_at)]
    });
}

pub async fn users(g: &Global, cmd: UsersCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        UsersCommand::Add { name, password_stdin, no_password } => {
            let password = if no_password { None } else { Some(read_password(password_stdin, true)?) };
            let user = client.add_user(&name, password).await?;
            emit(g.output, &user, |u| {
                println!(
                    "Added user {}. Give them a role: paas users grant {} deployer --app APP",
                    u.name, u.name
                )
            })?;
        }
        UsersCommand::List => {
            let users = client.users().await?;
            emit(g.output, &users, |us| show_users(us))?;
        }
        UsersCommand::Remove { name, confirm } => {
            anyhow::ensure!(
                confirm.as_deref() == Some(name.as_str()),
                "removing a user is final: pass --confirm {name} to do it"
            );
            let out = client.remove_user(&name).await?;
            emit(g.output, &out, |_| println!("Removed user {name}, their tokens and sessions."))?;
        }
        UsersCommand::Grant { name, role, on } => {
            let user = client.grant(&name, app_of(&on), role).await?;
            emit(g.output, &user, |u| println!("{} now has: {}", u.name, grants_text(&u.grants)))?;
        }
        UsersCommand::Revoke { name, on } => {
            let user = client.revoke(&name, app_of(&on)).await?;
            emit(g.output, &user, |u| println!("{} now has: {}", u.name, grants_text(&u.grants)))?;
        }
        UsersCommand::Passwd { name, password_stdin } => {
            let password = read_password(password_stdin, true)?;
            let out = client.set_password(&name, &password).await?;
            emit(g.output, &out, |_| println!("Set the password of {name}."))?;
        }
        UsersCommand::TotpEnable => {
            let setup = client.enable_totp().await?;
            emit(g.output, &setup, |s| {
                println!(
                    "Add this to your authenticator app (shown once):\n  {}\n  secret: {}",
                    s.url, s.secret
                );
                println!("From now on, sign-in asks for the app's current code.");
            })?;
        }
        UsersCommand::TotpDisable { name } => {
            let out = client.disable_totp(&name).await?;
            emit(g.output, &out, |_| println!("{name} signs in without a one-time code now."))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_created(t: &CreatedToken) {
    println!("{}", t.token);
    let until = t.info.expires_at.as_deref().map(|e| format!(", valid until {e}")).unwrap_or_default();
    eprintln!(
        "Token {} ({}) made for {}{until}; it is not shown again.",
        t.info.name, t.info.id, t.info.user
    );
}

fn show_tokens(tokens: &[TokenInfo]) {
    table(&["ID", "NAME", "USER", "CREATED", "EXPIRES"], tokens, |t| {
        let expires = t.expires_at.as_deref().map_or_else(|| "never".into(), crate::output::ago);
        vec![t.id.clone(), t.name.clone(), t.user.clone(), crate::output::ago(&t.created_at), expires]
    });
}

pub async fn tokens(g: &Global, cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        TokensCommand::Create { name, ttl } => {
            let ttl = match ttl.as_deref() {
                Some(t) => Some(
                    humantime::parse_duration(t)
                        .map_err(|_| anyhow::anyhow!("{t:?} is not a duration: use for example 30d or 12h"))?
                        .as_secs(),
                ),
                None => None,
            };
            let created = client.create_token(&name, ttl).await?;
            emit(g.output, &created, show_created)?;
        }
        TokensCommand::List { user, all } => {
            let tokens = client.tokens(user.as_deref(), all).await?;
            emit(g.output, &tokens, |ts| show_tokens(ts))?;
        }
        TokensCommand::Revoke { id_or_name } => {
            let out = client.revoke_token(&id_or_name).await?;
            emit(g.output, &out, |_| println!("Revoked token {id_or_name}."))?;
        }
        TokensCommand::RotateAdmin => {
            let created = client.rotate_admin_token().await?;
            // The CLI config held the old token if it was the admin's: it would stop working.
            let path = super::config_path(g)?;
            let mut config = crate::config::load(&path)?;
            if config.token.is_some() && g.token.is_none() {
                config.token = Some(created.token.clone());
                crate::config::save(&path, &config)?;
            }
            emit(g.output, &created, show_created)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(g: &Global, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let entries = super::client(g)?.audit(args.app.as_deref(), args.since.as_deref()).await?;
    emit(g.output, &entries, |es| {
        table(&["AT", "USER", "ACTION", "APP/ENV", "FROM", "OUTCOME", "DETAIL"], es, |e| {
            let target = match (e.app.as_str(), e.env.as_str()) {
                ("", _) => "-".to_string(),
                (a, "") => a.to_string(),
                (a, env) => format!("{a}/{env}"),
            };
            // Names and details can come from anyone who tried to sign in: no terminal codes.
            [&e.at, &e.user, &e.action, &target, &e.addr, &e.outcome, &e.detail]
                .map(|c| printable(c))
                .to_vec()
        });
    })?;
    Ok(ExitCode::SUCCESS)
}
