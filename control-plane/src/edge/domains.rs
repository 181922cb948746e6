//! Custom domains of an app's environments: adding one (with an uploaded certificate, checked
//! for the name, its dates and its key; with one from ACME when the platform has an ACME
//! server; else with the local CA's), listing them with the DNS record each needs, and removing
//! them. Each is served like its environment's hostname.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::{CertRow, DomainRow};
use protocol::domains::{parse_domain, AddDomain, CertSource, Domain};
use x509_cert::der::Decode;

/// Domains an app may have.
pub const MAX_DOMAINS_PER_APP: usize = 50;
/// Largest certificate or key upload.
const MAX_PEM: usize = 64 * 1024;

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Checks an uploaded certificate for `domain`: it and its key parse and belong together, it
/// names the domain, and it is valid now. Answers when it ends (unix seconds).
pub fn check_upload(domain: &str, chain_pem: &str, key_pem: &str) -> std::result::Result<i64, String> {
    if chain_pem.len() > MAX_PEM || key_pem.len() > MAX_PEM {
        return Err("the certificate or key file is larger than 64 KiB".into());
    }
    let certified = protocol::tls::certified_key(chain_pem, key_pem)?;
    let leaf = certified.end_entity_cert().map_err(|_| "the certificate file holds no certificate")?;
    let parsed =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(domain)
        .map_err(|_| format!("{domain} is not a name a certificate can be for"))?;
    parsed
        .verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("the certificate is not valid for {domain}: it names other hosts"))?;
    let x509 = x509_cert::Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("the certificate cannot be read: {e}"))?;
    let validity = &x509.tbs_certificate.validity;
    let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    let (from, until) = (secs(&validity.not_before), secs(&validity.not_after));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now >= until {
        return Err(format!("the certificate expired on {}", rfc3339(until)));
    }
    if now < from {
        return Err(format!("the certificate is not valid before {}", rfc3339(from)));
    }
    Ok(until)
}

/// The DNS record `domain` needs so that clients reach the ingress.
async fn dns_instruction(state: &AppState, row: &DomainRow) -> Result<String> {
    let hostname = state.store.get_env(&row.app, &row.env).await?.hostname(&state.config.base_domain);
    Ok(if state.config.base_domain == "localhost" {
        format!(
            "point {} at the ingress: an A (or AAAA) record to the public address of the machine running the ingress",
            row.domain
        )
    } else {
        format!(
            "point {} at the ingress: a CNAME record to {hostname}, or an A (or AAAA) record to the ingress's public address",
            row.domain
        )
    })
}

async fn view(state: &AppState, row: DomainRow) -> Result<Domain> {
    let cert = state.store.get_certificate(&row.domain).await?;
    Ok(Domain {
        dns: dns_instruction(state, &row).await?,
        tls: row.tls.parse().unwrap_or(CertSource::Local),
        cert_expires: cert.as_ref().map(|c| rfc3339(c.not_after)),
        cert_source: cert.and_then(|c| c.source.parse().ok()),
        cert_error: row.cert_error,
        domain: row.domain,
        app: row.app,
        env: row.env,
        created_at: row.created_at,
        created_by: row.created_by,
        replaced_certificate: false,
    })
}

/// `app`'s domains.
pub async fn list(state: &AppState, app: &str) -> Result<Vec<Domain>> {
    protocol::AppName::new(app)?;
    state.store.get_app(app).await?;
    let mut out = Vec::new();
    for row in state.store.list_domains(Some(app)).await? {
        out.push(view(state, row).await?);
    }
    Ok(out)
}

/// Serialises additions, so the same domain cannot pass the checks twice at once.
static ADDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Adds a domain to an environment of `app` (production unless named); it is served, with its
/// certificate, once the ingress nodes have the new route table.
pub async fn add(state: &AppState, user: &str, app: &str, req: AddDomain) -> Result<Domain> {
    protocol::AppName::new(app)?;
    let domain = parse_domain(&req.domain).map_err(DomainError::Invalid)?;
    let env = req.env.map(|e| e.trim().to_string()).filter(|e| !e.is_empty());
    let env = env.unwrap_or_else(|| "production".to_string());
    protocol::EnvName::new(&env)?;
    state.store.get_env(app, &env).await?;
    let base = &state.config.base_domain;
    if domain == *base || domain.ends_with(&format!(".{base}")) {
        return Err(DomainError::Invalid(format!(
            "{domain} is under the platform's base domain {base}, whose names belong to apps' environments: pick a domain of your own"
        )));
    }
    let upload = match (req.cert_pem, req.key_pem) {
        (Some(cert), Some(key)) => {
            let not_after =
                check_upload(&domain, &cert, &key).map_err(|why| DomainError::Invalid(format!("{why}.")))?;
            Some(CertRow {
                host: domain.clone(),
                source: CertSource::Uploaded.to_string(),
                chain_pem: cert,
                key_sealed: state.secrets.seal_text(key.as_bytes()),
                not_after,
                issuer: String::new(),
                updated_at: String::new(),
            })
        }
        (None, None) => None,
        _ => return Err(DomainError::Invalid("give both --cert and --key, or neither".into())),
    };
    let tls = match (&upload, &state.acme) {
        (Some(_), _) => CertSource::Uploaded,
        (None, Some(_)) => CertSource::Acme,
        (None, None) => CertSource::Local,
    };
    let _adding = ADDING.lock().await;
    if let Some(taken) = state.store.get_domain(&domain).await? {
        // The same domain again with a certificate: it replaces the one served (a renewal
        // done elsewhere); new connections get it, open ones keep theirs.
        if let (true, Some(cert)) = (taken.app == app && taken.env == env, &upload) {
            state.store.replace_domain_cert(&domain, CertSource::Uploaded.as_str(), cert).await?;
            tracing::info!(app, env = %env, domain = %domain, user, "domain certificate replaced");
            state.bump();
            let row = state.store.get_domain(&domain).await?.unwrap_or(taken);
            return Ok(Domain { replaced_certificate: true, ..view(state, row).await? });
        }
        let whose = if taken.app == app { format!("{}'s {}", app, taken.env) } else { "another app".into() };
        return Err(DomainError::Conflict(format!("{domain} is already a domain of {whose}")));
    }
    if state.store.list_domains(Some(app)).await?.len() >= MAX_DOMAINS_PER_APP {
        return Err(DomainError::Conflict(format!(
            "{app} has {MAX_DOMAINS_PER_APP} domains, the most an app may have: remove one first"
        )));
    }
    let row = DomainRow {
        domain: domain.clone(),
        app: app.to_string(),
        env: env.clone(),
        tls: tls.to_string(),
        created_at: crate::store::now(),
        created_by: user.to_string(),
        cert_error: None,
        cert_error_at: None,
    };
    if !state.store.insert_domain(&row, upload.as_ref()).await? {
        return Err(DomainError::Conflict(format!("{domain} is already a domain")));
    }
    tracing::info!(app, env = %env, domain = %domain, tls = %tls, user, "domain added");
    // Its certificate (the local CA's) before the answer, so it serves HTTPS at once; an ACME
    // one replaces it when it comes.
    super::refresh(state).await?;
    // Served by every ingress when the answer arrives.
    crate::assign::publish_routes(state).await?;
    if let Some(acme) = &state.acme {
        acme.wake();
    }
    view(state, row).await
}

/// Removes `app`'s domain and its certificate.
pub async fn remove(state: &AppState, user: &str, app: &str, domain: &str) -> Result<Domain> {
    protocol::AppName::new(app)?;
    state.store.get_app(app).await?;
    let domain = parse_domain(domain).map_err(DomainError::Invalid)?;
    let Some(row) = state.store.get_domain(&domain).await?.filter(|d| d.app == app) else {
        return Err(DomainError::NotFound(format!("{app} has no domain {domain}")));
    };
    let shown = view(state, row).await?;
    state.store.delete_domain(app, &domain).await?;
    crate::assign::publish_routes(state).await?;
    tracing::info!(app, domain = %domain, user, "domain removed");
    Ok(shown)
}
