//! `paas domains add|list|remove`: an app's custom domains and their certificates.

use crate::args::{DomainsCommand, Global};
use crate::output::{emit, table};
use anyhow::Context;
use protocol::domains::{parse_domain, AddDomain, CertSource};
use std::process::ExitCode;

/// Reads an uploaded PEM file, refusing what cannot be one before it is sent.
fn read_pem(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read the {what} {}", path.display()))?;
    anyhow::ensure!(meta.len() <= 64 * 1024, "the {what} {} is larger than 64 KiB", path.display());
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    anyhow::ensure!(text.contains("-----BEGIN "), "the {what} {} is not a PEM file", path.display());
    Ok(text)
}

pub async fn exec(g: &Global, cmd: DomainsCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        DomainsCommand::Add { app, env, domain, cert, key } => {
            let domain = parse_domain(&domain).map_err(anyhow::Error::msg)?;
            let (cert_pem, key_pem) = match (cert, key) {
                (Some(c), Some(k)) => (Some(read_pem(&c, "certificate")?), Some(read_pem(&k, "key")?)),
                _ => (None, None),
            };
            let added = client.add_domain(&app, &AddDomain { domain, env, cert_pem, key_pem }).await?;
            emit(g.output, &added, |d| {
                if d.replaced_certificate {
                    println!(
                        "Replaced the certificate of {} ({}/{}), valid until {}",
                        d.domain,
                        d.app,
                        d.env,
                        expires(&d.cert_expires)
                    );
                    return;
                }
                println!("Added {} to {}/{}", d.domain, d.app, d.env);
                match d.tls {
                    CertSource::Uploaded => println!("HTTPS: your certificate, until {}", expires(&d.cert_expires)),
                    CertSource::Acme => println!("HTTPS: a certificate from the ACME server, once the DNS record below is in place"),
                    CertSource::Local => println!("HTTPS: a certificate from the platform's local CA (trusted only where it is installed)"),
                }
                println!("DNS: {}", d.dns);
            })?;
        }
        DomainsCommand::List { app } => {
            let domains = client.domains(&app).await?;
            emit(g.output, &domains, |domains| {
                if domains.is_empty() {
                    println!("{app} has no domains. Add one with `paas domains add --app {app} DOMAIN`.");
                    return;
                }
                table(&["DOMAIN", "ENV", "CERTIFICATE", "EXPIRES", "ADDED BY"], domains, |d| {
                    vec![
                        d.domain.clone(),
                        d.env.clone(),
                        d.tls.to_string(),
                        expires(&d.cert_expires),
                        d.created_by.clone(),
                    ]
                });
            })?;
        }
        DomainsCommand::Remove { app, domain } => {
            let domain = parse_domain(&domain).map_err(anyhow::Error::msg)?;
            let removed = client.remove_domain(&app, &domain).await?;
            emit(g.output, &removed, |d| println!("Removed {} from {}/{}", d.domain, d.app, d.env))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn expires(at: &Option<String>) -> String {
    at.clone().unwrap_or_else(|| "-".into())
}
