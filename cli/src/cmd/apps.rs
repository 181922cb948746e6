//! `paas apps create|list|delete|log-retention`.

use crate::args::{AppsCommand, Global};
use crate::output::{emit, table};
use protocol::AppName;
use std::process::ExitCode;

/// `paas link --app A`: this directory belongs to `app` from now on (checked to exist first).
pub async fn link(g: &Global, app: &str) -> anyhow::Result<ExitCode> {
    let app = super::client(g)?.get_app(AppName::new(app)?.as_str()).await?;
    let path = crate::link::link(std::path::Path::new("."), &app.name)?;
    println!("Linked this directory to {} ({}); --app is optional in it", app.name, path.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn exec(g: &Global, cmd: AppsCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        AppsCommand::Create { name } => {
            // Checked here too so a bad name fails before any network round trip.
            AppName::new(name.as_str())?;
            let app = client.create_app(&name).await?;
            // Created from an app's source directory: commands run in it need no --app.
            let dir = std::path::Path::new(".");
            let linked =
                if crate::link::is_app_dir(dir) { Some(crate::link::link(dir, &name)?) } else { None };
            emit(g.output, &app, |app| {
                let url = app.envs.first().map(|e| e.url.as_str()).unwrap_or("");
                println!("Created app {} (production will be served at {url})", app.name);
                if let Some(path) = &linked {
                    println!(
                        "Linked this directory to {} ({}); --app is optional in it",
                        app.name,
                        path.display()
                    );
                }
            })?;
        }
        AppsCommand::Info { name } => return super::apps_info::exec(g, &name).await,
        AppsCommand::List => {
            let apps = client.list_apps().await?;
            emit(g.output, &apps, |apps| {
                let envs: Vec<_> = apps.iter().flat_map(|a| a.envs.iter().map(move |e| (a, e))).collect();
                if envs.is_empty() {
                    println!("No apps yet. Create one with `paas apps create NAME`.");
                } else {
                    table(&["APP", "ENV", "RELEASE", "STATUS", "REPLICAS", "URL"], &envs, |(a, e)| {
                        vec![
                            a.name.clone(),
                            e.name.clone(),
                            e.current_release.map(|v| format!("v{v}")).unwrap_or_else(|| "-".into()),
                            super::envs::status(e),
                            format!("{}/{}", e.healthy_replicas, e.replicas),
                            e.url.clone(),
                        ]
                    });
                }
            })?;
        }
        AppsCommand::Delete { name, confirm, purge, purge_backups } => {
            if confirm.as_deref() != Some(name.as_str()) {
                anyhow::bail!("{}. Confirm with --confirm {name}", deletion(&name, purge, purge_backups));
            }
            let done = client.delete_app(&name, purge, purge_backups).await?;
            emit(g.output, &done, |d| {
                if !purge {
                    println!(
                        "Deleted app {name}; its database volumes (if any), images and backups are kept"
                    );
                    return;
                }
                println!("Deleted app {name}");
                let list = |what: &str, items: &[String]| {
                    let items = if items.is_empty() { "none".to_string() } else { items.join(", ") };
                    println!("  {what}: {items}");
                };
                list("removed database volumes", &d.volumes);
                list("removed networks", &d.networks);
                list("removed images", &d.images);
                if purge_backups {
                    list("removed backups", &d.backups);
                } else {
                    println!("  backups: kept (--purge-backups deletes them)");
                }
                for left in &d.left {
                    println!("  WARNING: left in place: {left}");
                }
            })?;
        }
        AppsCommand::LogRetention { name, age, max_mib, reset } => {
            AppName::new(name.as_str())?;
            let r = if reset || age.is_some() || max_mib.is_some() {
                let current = client.log_retention(&name).await?;
                // An option not given keeps its value; --reset clears both.
                let keep_age = current.age_secs.map(|s| format!("{s}s"));
                let set = protocol::logs::SetLogRetention {
                    age: if reset { None } else { age.or(keep_age) },
                    max_mib: if reset { None } else { max_mib.or(current.max_mib) },
                };
                client.set_log_retention(&name, &set).await?
            } else {
                client.log_retention(&name).await?
            };
            emit(g.output, &r, |r| {
                let age = |s: u64| humantime::format_duration(std::time::Duration::from_secs(s)).to_string();
                let platform =
                    format!("{} and {} MiB for all apps together", age(r.store_age_secs), r.store_max_mib);
                let own: Vec<String> = [
                    r.age_secs.map(|s| format!("kept for {}", age(s))),
                    r.max_mib.map(|m| format!("at most {m} MiB")),
                ]
                .into_iter()
                .flatten()
                .collect();
                if own.is_empty() {
                    println!("Logs of {name} follow the platform's limits: {platform}.");
                } else {
                    println!("Logs of {name}: {} (the platform's limits: {platform}).", own.join(", "));
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What deleting app `name` removes and keeps, for its confirmation.
fn deletion(name: &str, purge: bool, purge_backups: bool) -> String {
    let always = format!(
        "deleting app {name:?} stops its containers and removes its environments, releases, config, domains, drains and logs"
    );
    match (purge, purge_backups) {
        (false, _) => format!(
            "{always}; its database volumes stay on the nodes, and its images and backups stay too (--purge removes volumes, networks and images)"
        ),
        (true, false) => format!(
            "{always}, and with --purge its database volumes (their data is gone), networks and images on every node; its backups stay in their stores (--purge-backups deletes them too)"
        ),
        (true, true) => format!(
            "{always}, and with --purge its database volumes (their data is gone), networks and images on every node, and with --purge-backups every backup of it in every store: nothing of it is left"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::deletion;

    #[test]
    fn the_confirmation_says_what_goes_and_what_stays() {
        let plain = deletion("shop", false, false);
        assert!(plain.contains("database volumes stay") && plain.contains("backups stay"), "{plain}");
        let purge = deletion("shop", true, false);
        assert!(purge.contains("database volumes (their data is gone), networks and images"), "{purge}");
        assert!(purge.contains("backups stay"), "{purge}");
        let all = deletion("shop", true, true);
        assert!(all.contains("every backup of it") && !all.contains("stay"), "{all}");
    }
}
