//! Views: `paas releases`, `paas ps`, `paas nodes list`; and `paas nodes prune`.

use crate::args::{AppEnv, EventsArgs, Global, NodesCommand};
use crate::output::{emit, table};
use std::collections::BTreeMap;
use std::process::ExitCode;

fn short_image(id: &Option<String>) -> String {
    id.as_deref()
        .map(|i| i.strip_prefix("sha256:").unwrap_or(i).chars().take(12).collect())
        .unwrap_or_else(|| "-".into())
}

/// A release's error in one table cell: its first sentence without the "Last log lines of
/// ...:" that introduces the tail, then the tail's last line, usually the app's own reason
/// (`--output json` has the whole text).
fn error_summary(error: &str) -> String {
    let first = error.lines().next().unwrap_or("");
    let head = [" Last log lines of ", " Last lines:"]
        .iter()
        .fold(first, |head, intro| head.split(intro).next().unwrap_or(head))
        .trim_end();
    match error.lines().skip(1).map(str::trim).filter(|l| !l.is_empty()).last() {
        Some(last) => format!("{head} Last line: {}", crate::output::printable(last)),
        None => head.to_string(),
    }
}

pub async fn releases(g: &Global, t: AppEnv) -> anyhow::Result<ExitCode> {
    let releases = super::client(g)?.releases(&t.app, &t.env).await?;
    emit(g.output, &releases, |rs| {
        table(&["VERSION", "STATUS", "DESCRIPTION", "IMAGE", "CREATED", "BY", "ERROR"], rs, |r| {
            vec![
                format!("v{}", r.version),
                r.status.as_str().to_string(),
                r.description.clone(),
                short_image(&r.image_id),
                crate::output::ago(&r.created_at),
                r.created_by.clone(),
                r.error.as_deref().map(error_summary).unwrap_or_default(),
            ]
        });
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn ps(g: &Global, t: AppEnv) -> anyhow::Result<ExitCode> {
    let procs = super::client(g)?.processes(&t.app, &t.env).await?;
    emit(g.output, &procs, |ps| {
        table(&["NAME", "RELEASE", "NODE", "STATE", "HEALTH", "ADDRESS", "RESTARTS", "LIMITS"], ps, |p| {
            vec![
                p.name.clone(),
                format!("v{}", p.release),
                p.node.clone(),
                p.state.clone(),
                if p.healthy { "healthy" } else { "unhealthy" }.to_string(),
                p.address.clone().unwrap_or_else(|| "-".into()),
                p.restarts.to_string(),
                p.limits.map_or_else(|| "-".into(), |l| l.describe()),
            ]
        });
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn nodes(g: &Global, cmd: NodesCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    let nodes = client.nodes().await?;
    if let NodesCommand::Prune { node } = cmd {
        let ready = nodes.iter().filter(|n| n.status == "ready").map(|n| n.name.clone());
        let names: Vec<String> = node.map_or_else(|| ready.collect(), |n| vec![n]);
        let mut outcomes = BTreeMap::new();
        for name in names {
            outcomes.insert(name.clone(), client.prune_node(&name).await?);
        }
        emit(g.output, &outcomes, |os| {
            for (name, o) in os {
                let freed = super::backups::human(o.reclaimed_bytes);
                let (images, containers) = (o.images.len(), o.containers.len());
                println!("{name}: removed {images} images and {containers} containers, {freed} freed");
            }
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    emit(g.output, &nodes, |ns| {
        let head = [
            "NODE",
            "STATUS",
            "ROLES",
            "PRIVATE ADDRESS",
            "CPU",
            "MEMORY",
            "REPLICAS",
            "IMAGES",
            "VOLUMES",
            "LOGS",
            "BACKUPS",
            "LAST REPORT",
        ];
        let size = |b: Option<u64>| b.map_or("-".to_string(), super::backups::human);
        table(&head, ns, |n| {
            let disk = n.disk.clone();
            let cap = |used: String, cap: u64, text: &dyn Fn(u64) -> String| {
                if cap == 0 {
                    used
                } else {
                    format!("{used}/{}", text(cap))
                }
            };
            let cpus = |m: u64| format!("{}", m as f64 / 1000.0);
            vec![
                n.name.clone(),
                n.status.clone(),
                if n.ingress { "worker,ingress" } else { "worker" }.to_string(),
                n.private_addr.clone(),
                cap(cpus(n.allocated.millicpus), n.capacity.millicpus, &cpus),
                cap(
                    super::backups::human(n.allocated.memory_bytes),
                    n.capacity.memory_bytes,
                    &super::backups::human,
                ),
                n.replicas.to_string(),
                size(disk.as_ref().map(|d| d.images)),
                size(disk.as_ref().map(|d| d.volumes)),
                size(disk.as_ref().and_then(|d| d.logs)),
                size(disk.as_ref().and_then(|d| d.backups)),
                n.last_report_secs
                    .map_or_else(|| crate::output::ago(&n.last_seen), |s| format!("{s:.0}s ago")),
            ]
        });
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `paas nodes drain` and `undrain`.
pub async fn drain(g: &Global, node: &str, drain: bool) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    if !drain {
        let done = client.undrain_node(node).await?;
        emit(g.output, &done, |_| println!("{node} takes new replicas again."))?;
        return Ok(ExitCode::SUCCESS);
    }
    if g.output == crate::args::Output::Text {
        eprintln!("Draining {node}: each replica starts on another node before this one's stops…");
    }
    let done = client.drain_node(node).await?;
    emit(g.output, &done, |d| {
        println!("{} is drained: {} replica(s) moved to other nodes.", d.node, d.moved.len());
        if !d.databases.is_empty() {
            println!(
                "Databases still run there ({}): a drain does not move them, and the node cannot be removed while they do.",
                d.databases.join(", ")
            );
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn events(g: &Global, args: EventsArgs) -> anyhow::Result<ExitCode> {
    if let Some(app) = &args.app {
        protocol::names::AppName::new(app)?;
    }
    if let Some(env) = &args.env {
        protocol::names::EnvName::new(env)?;
    }
    let client = super::client(g)?;
    let events = client.events(args.since, args.app.as_deref(), args.env.as_deref(), args.n).await?;
    emit(g.output, &events, |es| {
        table(&["ID", "WHEN", "APP/ENV", "WHO", "WHAT", "MESSAGE"], es, |e| {
            let who = if e.by.is_empty() { "platform" } else { &e.by };
            // Messages can quote what an app printed or a name someone typed: no terminal codes.
            vec![
                e.id.to_string(),
                crate::output::ago(&e.at),
                // Events of the whole app (its creation) name no environment.
                if e.env.is_empty() { e.app.clone() } else { format!("{}/{}", e.app, e.env) },
                crate::output::printable(who),
                e.kind.clone(),
                match e.severity.as_str() {
                    "info" | "" => crate::output::printable(&e.message),
                    level => format!("{}: {}", level.to_uppercase(), crate::output::printable(&e.message)),
                },
            ]
        });
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_release_error_cell_ends_with_the_apps_last_line() {
        let e = "v2 crashed (exit 3); the old release keeps serving. Last log lines of web.1:\nbooting\ncannot start: no config\n";
        assert_eq!(
            super::error_summary(e),
            "v2 crashed (exit 3); the old release keeps serving. Last line: cannot start: no config"
        );
        assert_eq!(super::error_summary("the build failed"), "the build failed");
    }
}
