//! `paas alerts` (alerts, rules, silences) and `paas notify` (where notifications go).

use crate::args::{AlertsCommand, Global, NotifyCommand, RulesCommand};
use crate::output::{emit, table};
use protocol::alerts::{AddRule, AddTarget, AlertRule, SetRule};
use std::process::ExitCode;

pub async fn alerts(g: &Global, cmd: AlertsCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        AlertsCommand::List => {
            let alerts = client.alerts().await?;
            emit(g.output, &alerts, |alerts| {
                if alerts.is_empty() {
                    println!("No alert has fired in the last week.");
                    return;
                }
                table(&["STATE", "RULE", "SUBJECT", "VALUE", "SINCE", "RESOLVED"], alerts, |a| {
                    let state = if a.silenced && a.state == "firing" {
                        "firing (silenced)".into()
                    } else {
                        a.state.clone()
                    };
                    vec![
                        state,
                        a.rule.clone(),
                        a.subject.clone(),
                        format!("{:.1}", a.value),
                        a.since.clone(),
                        a.resolved_at.clone().unwrap_or_default(),
                    ]
                });
            })?;
        }
        AlertsCommand::Rules { set: None } => {
            let rules = client.alert_rules().await?;
            emit(g.output, &rules, |rules| print_rules(rules))?;
        }
        AlertsCommand::Rules { set: Some(RulesCommand::Set { rule, threshold, duration, enabled }) } => {
            if threshold.is_none() && duration.is_none() && enabled.is_none() {
                anyhow::bail!("say what to change: --threshold, --for or --enabled");
            }
            let set = SetRule { threshold, for_: duration, enabled };
            let rule = client.set_alert_rule(&rule, &set).await?;
            emit(g.output, &rule, |r| print_rules(std::slice::from_ref(r)))?;
        }
        AlertsCommand::Rules {
            set: Some(RulesCommand::Add { name, metric, threshold, below, duration, app, env }),
        } => {
            let op = if below { "<" } else { ">" }.to_string();
            let add = AddRule { id: name, metric, op, threshold, for_: duration, app, env };
            let rule = client.add_alert_rule(&add).await?;
            emit(g.output, &rule, |r| print_rules(std::slice::from_ref(r)))?;
        }
        AlertsCommand::Rules { set: Some(RulesCommand::Remove { name }) } => {
            let removed = client.remove_alert_rule(&name).await?;
            emit(g.output, &removed, |_| println!("Removed rule {name}."))?;
        }
        AlertsCommand::Silence { rule, duration } => {
            let rule = client.silence_alert_rule(&rule, Some(duration)).await?;
            emit(g.output, &rule, |r| {
                println!("{} is silenced until {}.", r.id, r.silenced_until.as_deref().unwrap_or("-"));
            })?;
        }
        AlertsCommand::Unsilence { rule } => {
            let rule = client.silence_alert_rule(&rule, None).await?;
            emit(g.output, &rule, |r| println!("{} sends notifications again.", r.id))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rules(rules: &[AlertRule]) {
    table(&["RULE", "CONDITION", "FOR", "SCOPE", "ON", "SILENCED UNTIL", "WHAT"], rules, |r| {
        let condition = match r.kind.as_str() {
            "event" => r.metric.clone(),
            "increase" => format!("{} grows {} {}", r.metric, r.op, r.threshold),
            _ => format!("{} {} {}", r.metric, r.op, r.threshold),
        };
        let scope = match (&r.app, &r.env) {
            (Some(a), Some(e)) => format!("{a}/{e}"),
            (Some(a), None) => a.clone(),
            _ => "all".into(),
        };
        vec![
            r.id.clone(),
            condition,
            humantime::format_duration(std::time::Duration::from_secs(r.for_secs)).to_string(),
            scope,
            if r.enabled { "yes" } else { "no" }.into(),
            r.silenced_until.clone().unwrap_or_default(),
            r.description.clone(),
        ]
    });
}

pub async fn notify(g: &Global, cmd: NotifyCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        NotifyCommand::Add(args) => {
            let add =
                AddTarget { kind: args.kind, target: args.target, app: args.app, deploys: args.deploys };
            let t = client.add_notify_target(&add).await?;
            emit(g.output, &t, |t| {
                println!("Added {} {}: {}.", t.kind, t.id, t.target);
                if let Some(secret) = &t.secret {
                    println!("Its requests are signed with HMAC-SHA256 in X-Paas-Signature (sha256=<hex>) under this key, shown once:");
                    println!("{secret}");
                }
            })?;
        }
        NotifyCommand::List => {
            let targets = client.notify_targets().await?;
            emit(g.output, &targets, |targets| {
                if targets.is_empty() {
                    println!(
                        "No notification targets. Add one with `paas notify add email ops@example.com`."
                    );
                    return;
                }
                table(&["ID", "KIND", "TARGET", "APP", "DEPLOYS"], targets, |t| {
                    vec![
                        t.id.clone(),
                        t.kind.clone(),
                        t.target.clone(),
                        t.app.clone().unwrap_or_else(|| "all".into()),
                        if t.deploys { "yes" } else { "no" }.into(),
                    ]
                });
            })?;
        }
        NotifyCommand::Remove { id } => {
            let removed = client.remove_notify_target(&id).await?;
            emit(g.output, &removed, |_| println!("Removed {id}."))?;
        }
        NotifyCommand::Test => {
            let outcomes = client.test_notify().await?;
            let failed = outcomes.iter().any(|o| o.error.is_some());
            emit(g.output, &outcomes, |outcomes| {
                for o in outcomes {
                    match &o.error {
                        None => println!("{} {}: sent", o.id, o.target),
                        Some(e) => println!("{} {}: failed: {e}", o.id, o.target),
                    }
                }
            })?;
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
