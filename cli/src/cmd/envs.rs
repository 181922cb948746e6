//! `paas envs`, `paas config`, `paas promote` and `paas maintenance`: environments, their config
//! vars, moving an image from one environment to the next, and maintenance mode.

use super::deploy::{follow, start};
use crate::args::{ConfigCommand, EnvsCommand, Global, MaintenanceArgs, OnOff, Output, PromoteArgs};
use crate::output::{emit, table};
use protocol::api::ConfigChange;
use protocol::{AppName, EnvName};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

pub async fn envs(g: &Global, cmd: EnvsCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        EnvsCommand::Create { app, name } => {
            EnvName::new(name.as_str())?;
            let view = client.create_env(&app, &name).await?;
            emit(g.output, &view, |a| {
                let url = a.envs.iter().find(|e| e.name == name).map(|e| e.url.as_str()).unwrap_or("");
                println!("Created environment {app}/{name} (served at {url})");
            })?;
        }
        EnvsCommand::List { app } => {
            let view = client.get_app(&app).await?;
            emit(g.output, &view.envs, |envs| {
                table(&["ENV", "RELEASE", "STATUS", "URL"], envs, |e| {
                    vec![
                        e.name.clone(),
                        e.current_release.map(|v| format!("v{v}")).unwrap_or_else(|| "-".into()),
                        status(e),
                        e.url.clone(),
                    ]
                });
            })?;
        }
        EnvsCommand::Delete { app, name, confirm } => {
            if confirm.as_deref() != Some(name.as_str()) {
                anyhow::bail!("deleting {app}/{name} stops its containers and removes its releases; confirm with --confirm {name}");
            }
            let done = client.delete_env(&app, &name).await?;
            emit(g.output, &done, |_| println!("Deleted environment {app}/{name}"))?;
        }
        EnvsCommand::Swap { app, env1, env2 } => {
            EnvName::new(env1.as_str())?;
            EnvName::new(env2.as_str())?;
            let view = client.swap_envs(&app, &env1, &env2).await?;
            emit(g.output, &view, |a| {
                println!("Swapped the hostnames of {app}/{env1} and {app}/{env2}:");
                for e in a.envs.iter().filter(|e| e.name == env1 || e.name == env2) {
                    println!("  {} now serves {}", e.name, e.url);
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An environment's status as listed: maintenance mode first, since it hides whatever state the
/// app is in from visitors.
pub(super) fn status(e: &protocol::api::EnvSummary) -> String {
    if e.maintenance {
        format!("maintenance ({})", e.status)
    } else {
        e.status.clone()
    }
}

/// `KEY=VALUE` into its parts; the value may contain `=`.
fn parse_pair(pair: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = pair
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("malformed {:?}: config vars are given as KEY=VALUE", redact(pair)))?;
    protocol::names::check_config_key(k)?;
    Ok((k.to_string(), v.to_string()))
}

/// A malformed pair may be a secret typed without its key: show only its start.
fn redact(s: &str) -> String {
    if s.chars().count() <= 4 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(3).collect::<String>())
    }
}

pub async fn config(g: &Global, cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    let (target, change, detach) = match cmd {
        ConfigCommand::Get { target, key } => {
            let client = super::client(g)?;
            let masked = client.config(&target.app, &target.env, false).await?;
            let Some(value) = masked.vars.get(&key) else {
                anyhow::bail!(
                    "{}/{} has no config var {key:?}; see `paas config list`",
                    target.app,
                    target.env
                );
            };
            // Only a secret comes back masked: ask again, revealed (and audited), for it alone.
            let value = if value != "****" {
                value.clone()
            } else {
                let revealed = client.config(&target.app, &target.env, true).await?;
                revealed.vars.get(&key).cloned().unwrap_or_default()
            };
            crate::output::emit(g.output, &serde_json::json!({ "key": key, "value": value }), |_| {
                println!("{value}")
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        ConfigCommand::List { target, reveal } => {
            let vars = super::client(g)?.config(&target.app, &target.env, reveal).await?;
            emit(g.output, &vars, |v| {
                if v.vars.is_empty() {
                    println!("{}/{} has no config vars", v.app, v.env);
                }
                for (k, val) in &v.vars {
                    println!("{k}={val}");
                }
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        ConfigCommand::Set { target, pairs, secret, detach } => {
            // Every pair is checked before anything is sent.
            let set: BTreeMap<String, String> =
                pairs.iter().map(|p| parse_pair(p)).collect::<anyhow::Result<_>>()?;
            (target, ConfigChange { set, unset: Vec::new(), secret }, detach)
        }
        ConfigCommand::Unset { target, keys, detach } => {
            for k in &keys {
                protocol::names::check_config_key(k)?;
            }
            (target, ConfigChange { set: BTreeMap::new(), unset: keys, secret: false }, detach)
        }
    };
    AppName::new(target.app.as_str())?;
    EnvName::new(target.env.as_str())?;
    let client = super::client(g)?;
    let started = Instant::now();
    let changed = client.change_config(&target.app, &target.env, &change).await?;
    match changed.release {
        Some(release) if !detach => {
            if g.output == Output::Text {
                eprintln!(
                    "-----> Release v{} of {}/{}: {}",
                    release.version, release.app, release.env, release.description
                );
            }
            follow(g, &client, &release, started).await
        }
        _ => {
            emit(g.output, &changed, |c| {
                let keys: Vec<&str> = c.vars.vars.keys().map(String::as_str).collect();
                match &c.release {
                    Some(r) => println!(
                        "Config of {}/{} changed; release v{} is rolling out",
                        c.vars.app, c.vars.env, r.version
                    ),
                    None => println!(
                        "Config of {}/{} changed ({}); it applies from the next deploy",
                        c.vars.app,
                        c.vars.env,
                        keys.join(", ")
                    ),
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn promote(g: &Global, args: PromoteArgs) -> anyhow::Result<ExitCode> {
    AppName::new(args.app.as_str())?;
    EnvName::new(args.from.as_str())?;
    EnvName::new(args.to.as_str())?;
    let client = super::client(g)?;
    let started = Instant::now();
    let human = g.output == Output::Text;
    let release = start(false, human, || client.promote(&args.app, &args.from, &args.to)).await?;
    follow(g, &client, &release, started).await
}

pub async fn maintenance(g: &Global, args: MaintenanceArgs) -> anyhow::Result<ExitCode> {
    let (app, env) = (args.target.app, args.target.env);
    AppName::new(app.as_str())?;
    EnvName::new(env.as_str())?;
    let enabled = args.mode == OnOff::On;
    let mode = super::client(g)?.set_maintenance(&app, &env, enabled).await?;
    emit(g.output, &mode, |m| {
        if m.enabled {
            println!("Maintenance mode on for {app}/{env}: visitors get a 503 maintenance page");
        } else {
            println!("Maintenance mode off for {app}/{env}: the app serves again");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pairs_split_at_the_first_equals_and_bad_ones_are_redacted() {
        assert_eq!(super::parse_pair("URL=a=b").unwrap(), ("URL".into(), "a=b".into()));
        let e = super::parse_pair("supersecretvalue").unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE") && !e.contains("supersecret"), "{e}");
        assert!(super::parse_pair("1X=2").is_err());
        assert!(super::parse_pair("PORT=1").is_err());
    }
}
