//! Ships the WAL archive of each primary on this node: the archiver gzips every finished
//! segment into a spool in the data directory (`pg_paas_archive`, see the start script), and
//! this loop streams each file to the control plane in WAL order, removing it from the spool
//! only once the control plane said it is stored. A file shipped twice (the agent died between
//! the answer and the removal) is stored again, harmlessly.

use crate::dbroles::PGDATA;
use crate::docker::DockerClient;
use protocol::agent::{Assignment, DatabaseSpec, DbRole};
use protocol::Client;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the spools are looked at: a small share of the archive timeout.
const EVERY: Duration = Duration::from_secs(2);

/// Whether a spool entry is a finished file to ship (not a `.part` being written).
fn shippable(name: &str) -> bool {
    name.ends_with(".gz") && !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
}

pub async fn run(
    docker: DockerClient,
    client: Client,
    assignment: watch::Receiver<Option<Assignment>>,
    shutdown: CancellationToken,
) {
    loop {
        let primaries: Vec<DatabaseSpec> = assignment
            .borrow()
            .as_ref()
            .map(|a| {
                a.databases
                    .iter()
                    .filter(|d| d.role == DbRole::Primary && d.archive_timeout_secs > 0)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for spec in &primaries {
            if let Err(e) = ship(&docker, &client, spec).await {
                tracing::warn!(app = %spec.app, env = %spec.env, error = %format!("{e:#}"), "shipping archived WAL failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn ship(docker: &DockerClient, client: &Client, spec: &DatabaseSpec) -> anyhow::Result<()> {
    let dir = format!("{PGDATA}/pg_paas_archive");
    let Ok((0, out)) = docker.exec_output(&spec.name, &["ls".into(), "-1".into(), dir.clone()]).await else {
        return Ok(()); // not running, or no spool yet: the database loop tells why
    };
    let mut names: Vec<&str> = out.lines().map(str::trim).filter(|n| shippable(n)).collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort_unstable();
    let system = crate::dbtasks::system_id(docker, spec).await?;
    for name in names {
        let path = format!("{dir}/{name}");
        let (c, app, env, file) = (client.clone(), spec.app.clone(), spec.env.clone(), name.to_string());
        let system = system.clone();
        let shipped = crate::dbtasks::upload_output(
            docker,
            &spec.name,
            vec!["cat".into(), path.clone()],
            move |body| async move { c.upload_wal((&app, &env), &system, &file, body).await },
        )
        .await;
        if let Err(e) = shipped {
            if !format!("{e:#}").contains("other content than the one archived") {
                return Err(e);
            }
            // The archive holds another file of that name: this one is set aside (kept, not
            // shipped) so it cannot block the files after it; the control plane raised an event.
            tracing::error!(app = %spec.app, env = %spec.env, segment = name, "the control plane refused a WAL file it holds with other content; setting it aside");
            let aside = format!("{path}.refused");
            docker.exec_output(&spec.name, &["mv".into(), "-f".into(), path.clone(), aside]).await?;
            continue;
        }
        let (code, out) = docker.exec_output(&spec.name, &["rm".into(), "-f".into(), path]).await?;
        anyhow::ensure!(code == 0, "removing {name} from the spool failed: {}", out.trim());
        tracing::debug!(app = %spec.app, env = %spec.env, segment = name, "WAL file shipped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_finished_files_ship() {
        assert!(super::shippable("000000010000000000000003.gz"));
        assert!(super::shippable("00000002.history.gz"));
        assert!(!super::shippable("000000010000000000000003.gz.part"));
        assert!(!super::shippable("../x.gz.part"));
        assert!(!super::shippable("a b.gz"));
    }
}
