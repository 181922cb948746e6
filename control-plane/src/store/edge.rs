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
        let mut tx = self.pool.begin().await?;
        let added = sqlx::query(
            "INSERT INTO domains (domain, app, env, tls, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (domain) DO NOTHING",
        )
        .bind(&d.domain)
        .bind(&d.app)
        .bind(&d.env)
        .bind(&d.tls)
        .bind(&d.created_at)
        .bind(&d.created_by)
        .execute(&mut *tx)
        .await?
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE domains SET tls = ?, cert_error = NULL, cert_error_at = NULL WHERE domain = ?")
            .bind(tls)
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        put_certificate(&mut tx, cert).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_domains(&self, app: Option<&str>) -> Result<Vec<DomainRow>> {
        let rows = match app {
            Some(app) => {
                sqlx::query_as("SELECT * FROM domains WHERE app = ? ORDER BY env, domain")
                    .bind(app)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query_as("SELECT * FROM domains ORDER BY domain").fetch_all(&self.pool).await?,
        };
        Ok(rows)
    }

    pub async fn get_domain(&self, domain: &str) -> Result<Option<DomainRow>> {
        Ok(sqlx::query_as("SELECT * FROM domains WHERE domain = ?")
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Removes `app`'s domain and its certificate; false when the app has no such domain.
    pub async fn delete_domain(&self, app: &str, domain: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM domains WHERE app = ? AND domain = ?")
            .bind(app)
            .bind(domain)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if gone {
            sqlx::query("DELETE FROM certificates WHERE host = ?").bind(domain).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// Records how the latest ACME attempt for `domain` went (`None`: it succeeded).
    pub async fn domain_cert_error(&self, domain: &str, error: Option<&str>) -> Result<()> {
        sqlx::query("UPDATE domains SET cert_error = ?, cert_error_at = ? WHERE domain = ?")
            .bind(error)
            .bind(error.map(|_| now()))
            .bind(domain)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_certificates(&self) -> Result<Vec<CertRow>> {
        Ok(sqlx::query_as("SELECT * FROM certificates ORDER BY host").fetch_all(&self.pool).await?)
    }

    pub async fn get_certificate(&self, host: &str) -> Result<Option<CertRow>> {
        Ok(sqlx::query_as("SELECT * FROM certificates WHERE host = ?")
            .bind(host)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn put_certificate(&self, cert: &CertRow) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        put_certificate(&mut conn, cert).await
    }

    /// Deletes the certificates of `hosts`.
    pub async fn delete_certificates(&self, hosts: &[String]) -> Result<()> {
        for host in hosts {
            sqlx::query("DELETE FROM certificates WHERE host = ?").bind(host).execute(&self.pool).await?;
        }
        Ok(())
    }
}

async fn put_certificate(conn: &mut sqlx::SqliteConnection, c: &CertRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO certificates (host, source, chain_pem, key_sealed, not_after, issuer, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
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
    .execute(conn)
    .await?;
    Ok(())
}
