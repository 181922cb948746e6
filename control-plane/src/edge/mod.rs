//! The edge: which host names the ingress serves (every environment's generated hostname and
//! its custom domains) and the certificate each one is served with over HTTPS. The
//! certificate loop ([`run`]) keeps one certificate per served name: the local CA's where no
//! other was uploaded or obtained, renewed a third of its life before it ends, and deletes the
//! certificates of names no longer served. Ingress nodes get them in their assignment.

pub mod acme;
pub mod domains;
pub mod local_ca;

use crate::state::AppState;
use crate::store::unix_now;
use crate::store::CertRow;
use local_ca::LocalCa;
use protocol::agent::TlsCertificate;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// The loop looks again this often even when nothing changed (renewals).
const RECHECK: Duration = Duration::from_secs(3600);
/// State changes come in bursts (a deploy); the loop looks once per burst.
const SETTLE: Duration = Duration::from_millis(200);

/// Every host name the ingress serves.
pub async fn served_hosts(state: &AppState) -> anyhow::Result<BTreeSet<String>> {
    let mut hosts: BTreeSet<String> =
        state.store.all_envs().await?.iter().map(|e| e.hostname(&state.config.base_domain)).collect();
    hosts.extend(state.store.list_domains(None).await?.into_iter().map(|d| d.domain));
    Ok(hosts)
}

/// Whether the local CA should make (again) the certificate of a host that has `row`.
fn needs_local(row: Option<&CertRow>, ca: &LocalCa, now: i64) -> bool {
    let Some(row) = row else { return true };
    let renew_at = row.not_after - (local_ca::LOCAL_LIFETIME.as_secs() / 3) as i64;
    row.source == "local" && (row.issuer != ca.fingerprint() || now >= renew_at)
}

/// One pass: makes the missing and ageing certificates of served names, deletes those of names
/// no longer served. Answers whether anything changed.
pub async fn refresh(state: &AppState) -> anyhow::Result<bool> {
    let hosts = served_hosts(state).await?;
    let rows: HashMap<String, CertRow> =
        state.store.list_certificates().await?.into_iter().map(|r| (r.host.clone(), r)).collect();
    let ca = &state.ingress_ca;
    let now = unix_now();
    let mut changed = false;
    for host in &hosts {
        if !needs_local(rows.get(host), ca, now) {
            continue;
        }
        let issued = ca.issue(std::slice::from_ref(host))?;
        state
            .store
            .put_certificate(&CertRow {
                host: host.clone(),
                source: "local".into(),
                chain_pem: issued.chain_pem,
                key_sealed: state.secrets.seal_text(issued.key_pem.as_bytes()),
                not_after: issued.not_after,
                issuer: ca.fingerprint().to_string(),
                updated_at: String::new(),
            })
            .await?;
        tracing::info!(host = %host, "the local CA made a certificate");
        changed = true;
    }
    let gone: Vec<String> = rows.keys().filter(|h| !hosts.contains(*h)).cloned().collect();
    if !gone.is_empty() {
        state.store.delete_certificates(&gone).await?;
        changed = true;
    }
    Ok(changed)
}

/// Keeps every served name's certificate current until shutdown.
pub async fn run(state: AppState) {
    let mut changes = state.subscribe();
    let stop = state.shutting_down();
    loop {
        match refresh(&state).await {
            Ok(true) => state.bump(),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "keeping the HTTPS certificates current failed")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SETTLE) => {}
        }
        changes.borrow_and_update();
    }
}

/// The certificates an ingress node serves, keys unsealed.
pub async fn assigned(state: &AppState) -> anyhow::Result<Vec<TlsCertificate>> {
    let mut out = Vec::new();
    for row in state.store.list_certificates().await? {
        let key = state.secrets.open_text(&row.key_sealed)?;
        out.push(TlsCertificate {
            hosts: vec![row.host],
            chain_pem: row.chain_pem,
            key_pem: String::from_utf8(key)?,
        });
    }
    Ok(out)
}
