//! The edge in state.db: custom domains (each goes with its environment) and the certificates
//! the ingress serves, one per host name, keys sealed.

use super::{now, Result, Store};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DomainRow {
    pub domain: String,
    pub app: String,
    pub env: String,
    /// Where its certificate comes from: `local`, `uploaded` or `acme`.
    pub tls: String,
    pub created_at: String,
    pub created_by: String,
    /// Why the last ACME attempt failed, and when; `None` once one succeeds.
    pub cert_error: Option<String>,
    pub cert_error_at: Option<String>,
}

#[derive(Clone, sqlx::FromRow)]
pub struct CertRow {
    pub host: String,
    /// `local`, `uploaded` or `acme`.
    pub source: String,
    pub chain_pem: String,
    /// Sealed (hex): open it with the data directory's secret box.
    pub key_sealed: String,
    /// Unix seconds.
    pub not_after: i64,
    /// The local CA's fingerprint for its certificates; empty for the others.
    pub issuer: String,
    pub updated_at: String,
}

impl Store {
    /// Adds a domain, with its certificate when one was uploaded, in one transaction: false
    /// when the domain is taken.
    pub async fn insert_domain(&self, d: &DomainRow, cert: Option<&CertRow>) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let added = exec!(tx, |ex| sqlx::query(
            "INSERT INTO domains (domain, app, env, tls, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (domain) DO NOTHING",
        )
        .bind(&d.domain)
        .bind(&d.app)
        .bind(&d.env)
        .bind(&d.tls)
        .bind(&d.created_at)
        .bind(&d.created_by)
        .execute(ex)
        .await)?
        .rows_affected()
            == 1;
        if !added {
            return Ok(false);
        }
        if let Some(cert) = cert {
            put_certificate(&mut tx, cert).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces the certificate of a domain (an upload over whatever it had).
    pub async fn replace_domain_cert(&self, domain: &str, tls: &str, cert: &CertRow) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| sqlx::query(
            "UPDATE domains SET tls = $1, cert_error = NULL, cert_error_at = NULL WHERE domain = $2"
        )
        .bind(tls)
        .bind(domain)
        .execute(ex)
        .await)?;
        put_certificate(&mut tx, cert).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_domains(&self, app: Option<&str>) -> Result<Vec<DomainRow>> {
        let rows = match app {
            Some(app) => on!(self.pool, |ex| sqlx::query_as(
                "SELECT * FROM domains WHERE app = $1 ORDER BY env, domain"
            )
            .bind(app)
            .fetch_all(ex)
            .await)?,
            None => on!(self.pool, |ex| sqlx::query_as("SELECT * FROM domains ORDER BY domain")
                .fetch_all(ex)
                .await)?,
        };
        Ok(rows)
    }

    pub async fn get_domain(&self, domain: &str) -> Result<Option<DomainRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_optional(ex)
            .await)?)
    }

    /// Removes `app`'s domain and its certificate; false when the app has no such domain.
    pub async fn delete_domain(&self, app: &str, domain: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let gone = exec!(tx, |ex| sqlx::query("DELETE FROM domains WHERE app = $1 AND domain = $2")
            .bind(app)
            .bind(domain)
            .execute(ex)
            .await)?
        .rows_affected()
            == 1;
        if gone {
            exec!(tx, |ex| sqlx::query("DELETE FROM certificates WHERE host = $1")
                .bind(domain)
                .execute(ex)
                .await)?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// Records how the latest ACME attempt for `domain` went (`None`: it succeeded).
    pub async fn domain_cert_error(&self, domain: &str, error: Option<&str>) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "UPDATE domains SET cert_error = $1, cert_error_at = $2 WHERE domain = $3"
        )
        .bind(error)
        .bind(error.map(|_| now()))
        .bind(domain)
        .execute(ex)
        .await)?;
        Ok(())
    }

    pub async fn list_certificates(&self) -> Result<Vec<CertRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM certificates ORDER BY host")
            .fetch_all(ex)
            .await)?)
    }

    pub async fn get_certificate(&self, host: &str) -> Result<Option<CertRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM certificates WHERE host = $1")
            .bind(host)
            .fetch_optional(ex)
            .await)?)
    }

    pub async fn put_certificate(&self, cert: &CertRow) -> Result<()> {
        let mut tx = self.write_tx().await?;
        put_certificate(&mut tx, cert).await?;
        Ok(tx.commit().await?)
    }

    /// Deletes the certificates of `hosts`.
    pub async fn delete_certificates(&self, hosts: &[String]) -> Result<()> {
        for host in hosts {
            exec!(self.pool, |ex| sqlx::query("DELETE FROM certificates WHERE host = $1")
                .bind(host)
                .execute(ex)
                .await)?;
        }
        Ok(())
    }
}

async fn put_certificate(tx: &mut super::Tx, c: &CertRow) -> Result<()> {
    exec!(tx, |ex| sqlx::query(
        "INSERT INTO certificates (host, source, chain_pem, key_sealed, not_after, issuer, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (host) DO UPDATE SET source = excluded.source, chain_pem = excluded.chain_pem,
           key_sealed = excluded.key_sealed, not_after = excluded.not_after, issuer = excluded.issuer,
           updated_at = excluded.updated_at",
    )
    .bind(&c.host)
    .bind(&c.source)
    .bind(&c.chain_pem)
    .bind(&c.key_sealed)
    .bind(c.not_after)
    .bind(&c.issuer)
    .bind(now())
    .execute(ex)
    .await)?;
    Ok(())
}
