//! Environment subnets: the platform's address pool for environment networks, and the one
//! subnet per environment allocated from it (`env_subnets`), freed with the environment.

use super::{BindKey, Result, Store, StoreError};
use ipnet::Ipv4Net;
use std::collections::HashMap;

/// Where environment networks get their subnets: `range` cut into subnets of `prefix` bits.
///
/// The default, 10.123.0.0/16 in /26s (1024 environments of 61 addresses each), stays clear of
/// Docker's own pools (172.17-31.0.0/16, 192.168.0.0/16), of the ranges cloud and cluster
/// defaults use (10.0-10.1/16 VPCs, 10.42-43 k3s, 10.96/12 Kubernetes services, 10.128/9 GCP,
/// 10.244/16 flannel, 172.31/16 AWS, 100.64/10 CGNAT) and of home LANs (192.168/16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkPool {
    range: Ipv4Net,
    prefix: u8,
}

impl Default for NetworkPool {
    fn default() -> Self {
        Self::parse(Self::DEFAULT_RANGE, Self::DEFAULT_PREFIX).expect("the default pool is valid")
    }
}

impl std::fmt::Display for NetworkPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (/{} per environment)", self.range, self.prefix)
    }
}

impl NetworkPool {
    pub const DEFAULT_RANGE: &str = "10.123.0.0/16";
    pub const DEFAULT_PREFIX: u8 = 26;
    /// A /29 leaves 5 addresses for an environment's containers (gateway, network and
    /// broadcast take 3): the smallest that still holds a database and a few replicas.
    pub const SMALLEST_SUBNET: u8 = 29;

    /// `range` in CIDR notation (`10.123.0.0/16`), cut into subnets of `prefix` bits.
    pub fn parse(range: &str, prefix: u8) -> anyhow::Result<Self> {
        let range: Ipv4Net = range.parse().map_err(|_| {
            anyhow::anyhow!("the network pool {range:?} is not an IPv4 network such as 10.123.0.0/16")
        })?;
        anyhow::ensure!(
            (range.prefix_len()..=Self::SMALLEST_SUBNET).contains(&prefix),
            "an environment's subnet must be between /{} (the whole pool) and /{}, not /{prefix}",
            range.prefix_len(),
            Self::SMALLEST_SUBNET
        );
        Ok(Self { range: range.trunc(), prefix })
    }

    /// How many environments the pool holds.
    pub fn capacity(&self) -> u64 {
        1 << (self.prefix - self.range.prefix_len())
    }

    /// A free subnet: above every one taken while there is room, so a subnet just freed (whose
    /// network a node may still be removing) is handed out again only when the pool wraps.
    /// Taken subnets are compared by overlap, so a pool or prefix changed between runs never
    /// hands out an address twice.
    fn pick(&self, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
        let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
        let free = |c: &Ipv4Net| !taken.iter().any(|t| overlaps(c, t));
        let highest = taken.iter().filter(|t| overlaps(&self.range, t)).map(|t| t.broadcast()).max();
        let mut all = self.range.subnets(self.prefix).expect("prefix checked in new");
        all.clone()
            .find(|c| highest.is_some_and(|h| c.network() > h) && free(c))
            .or_else(|| all.find(|c| free(c)))
    }
}

impl Store {
    /// Environments created from now on take their subnets from `pool`.
    pub fn with_network_pool(mut self, pool: NetworkPool) -> Self {
        self.subnets = pool;
        self
    }

    /// Gives a new environment its subnet, inside the transaction that creates it.
    pub(super) async fn allocate_subnet(&self, tx: &mut super::Tx, app: &str, env: &str) -> Result<()> {
        let taken: Vec<String> =
            on!(tx, |ex| sqlx::query_scalar("SELECT subnet FROM env_subnets").fetch_all(ex).await)?;
        let taken = taken
            .iter()
            .map(|s| {
                s.parse().map_err(|_| StoreError::Db(sqlx::Error::Decode(format!("bad subnet {s:?}").into())))
            })
            .collect::<Result<Vec<Ipv4Net>>>()?;
        let Some(subnet) = self.subnets.pick(&taken) else {
            return Err(StoreError::Conflict(format!(
                "every subnet of the network pool {} is taken: delete an environment, or start the control plane with a larger --network-pool",
                self.subnets
            )));
        };
        exec!(tx, |ex| sqlx::query("INSERT INTO env_subnets (app, env, subnet) VALUES ($1, $2, $3)")
            .bind_env(app, env)
            .bind(subnet.to_string())
            .execute(ex)
            .await)?;
        Ok(())
    }

    /// Every environment's subnet by (app, env); environments from before subnets have none.
    pub async fn env_subnets(&self) -> Result<HashMap<(String, String), String>> {
        let rows: Vec<(String, String, String)> =
            on!(self.pool, |ex| sqlx::query_as("SELECT app, env, subnet FROM env_subnets")
                .fetch_all(ex)
                .await)?;
        Ok(rows.into_iter().map(|(app, env, subnet)| ((app, env), subnet)).collect())
    }

    /// One environment's subnet; empty for an environment from before subnets (Docker picks).
    pub async fn env_subnet(&self, app: &str, env: &str) -> Result<String> {
        let subnet: Option<String> = on!(self.pool, |ex| sqlx::query_scalar(
            "SELECT subnet FROM env_subnets WHERE app = $1 AND env = $2"
        )
        .bind_env(app, env)
        .fetch_optional(ex)
        .await)?;
        Ok(subnet.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn picks_above_the_highest_taken_then_reuses_freed_subnets() {
        let pool = NetworkPool::parse("10.9.0.0/24", 26).unwrap();
        assert_eq!(pool.capacity(), 4);
        assert_eq!(pool.pick(&[]), Some(net("10.9.0.0/26")));
        assert_eq!(pool.pick(&[net("10.9.0.0/26")]), Some(net("10.9.0.64/26")));
        // .64 was freed: the next goes above .128 first.
        assert_eq!(pool.pick(&[net("10.9.0.0/26"), net("10.9.0.128/26")]), Some(net("10.9.0.192/26")));
        // Full at the top: the lowest freed one comes back.
        let top = [net("10.9.0.0/26"), net("10.9.0.192/26")];
        assert_eq!(pool.pick(&top), Some(net("10.9.0.64/26")));
        let full: Vec<_> = pool.range.subnets(26).unwrap().collect();
        assert_eq!(pool.pick(&full), None);
    }

    #[test]
    fn subnets_taken_under_another_prefix_are_never_handed_out_again() {
        // Allocated as /24s before the prefix changed to /26.
        let pool = NetworkPool::parse("10.9.0.0/22", 26).unwrap();
        let taken = [net("10.9.0.0/24"), net("10.9.2.0/24"), net("10.9.3.0/24")];
        assert_eq!(pool.pick(&taken), Some(net("10.9.1.0/26")));
        assert!(NetworkPool::parse("10.9.0.0/22", 30).is_err());
        assert!(NetworkPool::parse("10.9.0.0/22", 21).is_err());
    }

    #[tokio::test]
    async fn environments_get_a_subnet_each_and_free_it_when_deleted() {
        let dir = std::env::temp_dir().join(format!("paas-subnets-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("state.db"))
            .await
            .unwrap()
            .with_network_pool(NetworkPool::parse("10.9.0.0/25", 26).unwrap());
        store.create_app("shop").await.unwrap();
        store.create_env("shop", "staging").await.unwrap();
        assert_eq!(store.env_subnet("shop", "production").await.unwrap(), "10.9.0.0/26");
        assert_eq!(store.env_subnet("shop", "staging").await.unwrap(), "10.9.0.64/26");
        // The pool is full: creating refuses and leaves nothing behind.
        let err = store.create_env("shop", "qa").await.unwrap_err().to_string();
        assert!(err.contains("every subnet of the network pool 10.9.0.0/25"), "{err}");
        assert!(store.get_env("shop", "qa").await.is_err());
        store.delete_env("shop", "staging").await.unwrap();
        store.create_env("shop", "qa").await.unwrap();
        assert_eq!(store.env_subnet("shop", "qa").await.unwrap(), "10.9.0.64/26");
        store.delete_app("shop").await.unwrap();
        assert!(store.env_subnets().await.unwrap().is_empty());
        // An environment from before subnets has none: Docker picks, as before.
        exec!(store.pool, |ex| sqlx::query("INSERT INTO apps (name, created_at) VALUES ('old', '')")
            .execute(ex)
            .await)
        .unwrap();
        exec!(store.pool, |ex| sqlx::query(
            "INSERT INTO envs (app, name, created_at) VALUES ('old', 'production', '')"
        )
        .execute(ex)
        .await)
        .unwrap();
        assert_eq!(store.env_subnet("old", "production").await.unwrap(), "");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
