//! Node identity: one-time join tokens (by the hash of their secret, with an expiry) and the
//! node certificates on record (by the sha256 of their DER). A certificate speaks for its node
//! only while it is on record: removing the node, or renewing past it, ends it at once.

use super::unix_now;
use super::{now, Result, Store, StoreError};

/// A certificate the CA signed, as the store keeps it.
#[derive(Debug, Clone, Copy)]
pub struct NewCert<'a> {
    pub fingerprint: &'a str,
    pub not_after: i64,
}

/// Why a join token was not taken (answered 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRefused(pub String);

impl Store {
    pub async fn insert_join_token(&self, hash: &str, created_by: &str, expires_at: i64) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO join_tokens (hash, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(hash)
        .bind(created_by)
        .bind(now())
        .bind(expires_at)
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// Joins node `name` with the join token `token_hash` in one write transaction: the token
    /// must be unused and unexpired and is burnt; the name must be new, or a node without a
    /// valid certificate (one from before certificates, or whose certificate expired); the
    /// address must not be another node's. On any refusal nothing changes, the token included.
    pub async fn join_node(
        &self,
        name: &str,
        private_addr: &str,
        ingress: bool,
        token_hash: &str,
        cert: NewCert<'_>,
    ) -> Result<std::result::Result<(), TokenRefused>> {
        let mut tx = self.write_tx().await?;
        let token: Option<(i64, Option<String>, Option<String>)> = on!(tx, |ex| sqlx::query_as(
            "SELECT expires_at, used_at, used_by FROM join_tokens WHERE hash = $1"
        )
        .bind(token_hash)
        .fetch_optional(ex)
        .await)?;
        let again = "make a new one with `paas nodes token`";
        let refused = match token {
            None => Some(format!(
                "this join token is not valid (never issued, or from another control plane): {again}"
            )),
            Some((_, Some(at), by)) => Some(format!(
                "this join token was used already (by node {:?} at {at}): a join token works once; {again}",
                by.unwrap_or_default()
            )),
            Some((expires, None, _)) if expires <= unix_now() => {
                let at = time::OffsetDateTime::from_unix_timestamp(expires)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                Some(format!("this join token expired at {at}: {again}"))
            }
            Some(_) => None,
        };
        if let Some(why) = refused {
            return Ok(Err(TokenRefused(why)));
        }
        let valid: Option<String> = on!(tx, |ex| sqlx::query_scalar(
            "SELECT node FROM node_certs WHERE node = $1 AND not_after > $2 LIMIT 1"
        )
        .bind(name)
        .bind(unix_now())
        .fetch_optional(ex)
        .await)?;
        if valid.is_some() {
            return Err(StoreError::Forbidden(format!(
                "node {name:?} is registered already and holds a valid certificate: give this node another --node-name, or remove the old one first (paas nodes remove {name})"
            )));
        }
        Self::check_address(&mut tx, name, private_addr).await?;
        Self::upsert_node(&mut tx, name, private_addr, ingress).await?;
        exec!(tx, |ex| sqlx::query("DELETE FROM node_certs WHERE node = $1").bind(name).execute(ex).await)?;
        Self::insert_cert(&mut tx, name, cert).await?;
        exec!(tx, |ex| sqlx::query("UPDATE join_tokens SET used_at = $1, used_by = $2 WHERE hash = $3")
            .bind(now())
            .bind(name)
            .bind(token_hash)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    async fn insert_cert(tx: &mut super::Tx, node: &str, cert: NewCert<'_>) -> Result<()> {
        exec!(tx, |ex| sqlx::query(
            "INSERT INTO node_certs (fingerprint, node, not_after, created_at) VALUES ($1, $2, $3, $4)"
        )
        .bind(cert.fingerprint)
        .bind(node)
        .bind(cert.not_after)
        .bind(now())
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// Records `node`'s renewed certificate. The one it renewed with (`current`) stays valid
    /// until the agent switches (requests in flight on it finish); any older one ends now.
    pub async fn renew_cert(&self, node: &str, current: &str, cert: NewCert<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| sqlx::query("DELETE FROM node_certs WHERE node = $1 AND fingerprint != $2")
            .bind(node)
            .bind(current)
            .execute(ex)
            .await)?;
        Self::insert_cert(&mut tx, node, cert).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives `node` this certificate alone: the path `paas up` takes for its own agent, which
    /// it trusts because they share a process.
    pub async fn replace_certs(&self, node: &str, cert: NewCert<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| sqlx::query("DELETE FROM node_certs WHERE node = $1").bind(node).execute(ex).await)?;
        Self::insert_cert(&mut tx, node, cert).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The node an unexpired certificate on record (by its fingerprint) speaks for.
    pub async fn cert_node(&self, fingerprint: &str) -> Result<Option<String>> {
        Ok(on!(self.pool, |ex| sqlx::query_scalar(
            "SELECT node FROM node_certs WHERE fingerprint = $1 AND not_after > $2"
        )
        .bind(fingerprint)
        .bind(unix_now())
        .fetch_optional(ex)
        .await)?)
    }

    /// Removes a node that runs nothing any more, with its certificates, in one transaction.
    pub async fn remove_node(&self, name: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let exists: Option<String> =
            on!(tx, |ex| sqlx::query_scalar("SELECT name FROM nodes WHERE name = $1")
                .bind(name)
                .fetch_optional(ex)
                .await)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("there is no node named {name:?}")));
        }
        let containers: i64 =
            on!(tx, |ex| sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE node = $1")
                .bind(name)
                .fetch_one(ex)
                .await)?;
        let databases: i64 = on!(tx, |ex| sqlx::query_scalar(
            "SELECT COUNT(*) FROM databases WHERE node = $1 OR replica_node = $2"
        )
        .bind(name)
        .bind(name)
        .fetch_one(ex)
        .await)?;
        if containers + databases > 0 {
            return Err(StoreError::Conflict(format!(
                "node {name:?} still has {containers} containers and {databases} databases assigned: scale them away or delete their apps first"
            )));
        }
        exec!(tx, |ex| sqlx::query("DELETE FROM node_certs WHERE node = $1").bind(name).execute(ex).await)?;
        exec!(tx, |ex| sqlx::query("DELETE FROM nodes WHERE name = $1").bind(name).execute(ex).await)?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(fingerprint: &str, not_after: i64) -> NewCert<'_> {
        NewCert { fingerprint, not_after }
    }

    #[tokio::test]
    async fn a_join_token_works_once_and_not_after_it_expired() {
        let store = Store::open_in_memory().await.unwrap();
        let later = unix_now() + 3600;
        store.insert_join_token("t1", "admin", later).await.unwrap();
        store.insert_join_token("old", "admin", unix_now() - 1).await.unwrap();
        let refused = |r: Result<std::result::Result<(), TokenRefused>>, needle: &str| {
            let why = r.unwrap().unwrap_err().0;
            assert!(why.contains(needle), "{why}");
        };
        refused(store.join_node("a", "10.0.0.1", false, "old", cert("c0", later)).await, "expired");
        refused(store.join_node("a", "10.0.0.1", false, "nope", cert("c0", later)).await, "not valid");
        // A refusal for the name leaves the token unused.
        store.join_node("a", "10.0.0.1", false, "t1", cert("c1", later)).await.unwrap().unwrap();
        store.insert_join_token("t2", "admin", later).await.unwrap();
        let taken = store.join_node("a", "10.0.0.2", false, "t2", cert("c2", later)).await;
        assert!(matches!(taken, Err(StoreError::Forbidden(_))), "{taken:?}");
        let addr = store.join_node("b", "10.0.0.1", false, "t2", cert("c2", later)).await;
        assert!(matches!(addr, Err(StoreError::Forbidden(_))), "{addr:?}");
        store.join_node("b", "10.0.0.2", false, "t2", cert("c2", later)).await.unwrap().unwrap();
        refused(
            store.join_node("c", "10.0.0.3", false, "t1", cert("c3", later)).await,
            "used already (by node \"a\"",
        );
        assert_eq!(store.cert_node("c1").await.unwrap().as_deref(), Some("a"));
        assert_eq!(store.cert_node("c3").await.unwrap(), None);

        // Renewal keeps the current and the new certificate; the next renewal ends the first.
        store.renew_cert("a", "c1", cert("c1b", later)).await.unwrap();
        assert_eq!(store.cert_node("c1").await.unwrap().as_deref(), Some("a"));
        store.renew_cert("a", "c1b", cert("c1c", later)).await.unwrap();
        assert_eq!(store.cert_node("c1").await.unwrap(), None);
        assert_eq!(store.cert_node("c1b").await.unwrap().as_deref(), Some("a"));

        // A removed node's certificates end; its name can join again with a new token.
        store.remove_node("a").await.unwrap();
        assert_eq!(store.cert_node("c1c").await.unwrap(), None);
        store.insert_join_token("t3", "admin", later).await.unwrap();
        store.join_node("a", "10.0.0.1", false, "t3", cert("c4", later)).await.unwrap().unwrap();
        // A node whose certificate expired may join again.
        store.replace_certs("b", cert("c5", unix_now() - 1)).await.unwrap();
        assert_eq!(store.cert_node("c5").await.unwrap(), None);
        store.insert_join_token("t4", "admin", later).await.unwrap();
        store.join_node("b", "10.0.0.2", false, "t4", cert("c6", later)).await.unwrap().unwrap();
        assert!(matches!(store.remove_node("zz").await, Err(StoreError::NotFound(_))));
    }
}
