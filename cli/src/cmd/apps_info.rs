//! `paas apps info NAME`: one app at a glance, from the API's own answers: each environment's
//! URL, serving release, replicas and last deploy, its database, and the app's domains.

use crate::args::Global;
use crate::output::{ago, emit};
use protocol::api::{DatabaseInfo, EnvSummary, Release};
use protocol::domains::Domain;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Serialize)]
struct AppInfo {
    name: String,
    created_at: String,
    envs: Vec<EnvInfo>,
    domains: Vec<Domain>,
}

#[derive(Serialize)]
struct EnvInfo {
    #[serde(flatten)]
    summary: EnvSummary,
    /// The newest release, whatever its outcome.
    last_deploy: Option<Release>,
    database: Option<DatabaseInfo>,
}

pub async fn exec(g: &Global, name: &str) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    let app = client.get_app(name).await?;
    let mut envs = Vec::new();
    for summary in app.envs {
        let last_deploy = client.releases(name, &summary.name).await?.into_iter().max_by_key(|r| r.version);
        let database = match client.db_info(name, &summary.name, false).await {
            Ok(db) => Some(db),
            Err(e) if e.status == Some(404) => None,
            Err(e) => return Err(e.into()),
        };
        envs.push(EnvInfo { summary, last_deploy, database });
    }
    let domains = client.domains(name).await?;
    let info = AppInfo { name: app.name, created_at: app.created_at, envs, domains };
    emit(g.output, &info, print)?;
    Ok(ExitCode::SUCCESS)
}

fn print(info: &AppInfo) {
    println!("=== {} (created {})", info.name, ago(&info.created_at));
    for e in &info.envs {
        let s = &e.summary;
        let serving = s.current_release.map_or_else(|| "nothing deployed".to_string(), |v| format!("v{v}"));
        let maintenance = if s.maintenance { ", maintenance" } else { "" };
        println!(
            "{}: {}  {serving}, {} ({}/{} healthy{maintenance})",
            s.name, s.url, s.status, s.healthy_replicas, s.replicas
        );
        if let Some(r) = &e.last_deploy {
            println!(
                "  last deploy: v{} {} by {} {} ({})",
                r.version,
                r.status.as_str(),
                r.created_by,
                ago(&r.created_at),
                r.description
            );
        }
        if let Some(db) = &e.database {
            let server = |s: &protocol::api::DatabaseServer| {
                format!("{} on {}", if s.healthy { "healthy" } else { s.state.as_str() }, s.node)
            };
            let replica = db
                .replica
                .as_ref()
                .map_or_else(|| "no replica".to_string(), |r| format!("replica {}", server(r)));
            println!("  database: PostgreSQL {}, primary {}, {replica}", db.version, server(&db.primary));
        }
    }
    for d in &info.domains {
        println!("domain {} -> {} ({})", d.domain, d.env, d.tls.as_str());
    }
}
