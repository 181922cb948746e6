//! Nodes as the scheduler sees them: their state (ready, draining, lost) and assignment
//! generation, what they offer and what their replicas reserve, and moving a replica off one.

use super::{InstanceRow, Result, Store, StoreError};
use protocol::agent::Capacity;
use std::collections::HashMap;

/// What one node's replicas reserve, and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocation {
    pub reserved: Capacity,
    pub replicas: u32,
}

impl Store {
    pub async fn node(&self, name: &str) -> Result<super::NodeRow> {
        on!(self.pool, |ex| sqlx::query_as("SELECT * FROM nodes WHERE name = $1")
            .bind(name)
            .fetch_optional(ex)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("there is no node named {name:?}")))
    }

    /// Records what a node offers (from its registration).
    pub async fn set_node_capacity(&self, name: &str, capacity: Capacity) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "UPDATE nodes SET millicpus = $1, memory_bytes = $2 WHERE name = $3"
        )
        .bind(capacity.millicpus as i64)
        .bind(capacity.memory_bytes as i64)
        .bind(name)
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// Sets a node's state; returns the state it had.
    pub async fn set_node_state(&self, name: &str, state: &str) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let was: Option<String> =
            on!(tx, |ex| sqlx::query_scalar("SELECT state FROM nodes WHERE name = $1")
                .bind(name)
                .fetch_optional(ex)
                .await)?;
        let Some(was) = was else {
            return Err(StoreError::NotFound(format!("there is no node named {name:?}")));
        };
        exec!(tx, |ex| sqlx::query("UPDATE nodes SET state = $1 WHERE name = $2")
            .bind(state)
            .bind(name)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        Ok(was)
    }

    /// Declares a node lost: its generation goes up, so reports from what it still runs no
    /// longer count. Returns the new generation, or `None` when it was lost already.
    pub async fn lose_node(&self, name: &str) -> Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let generation: Option<i64> = on!(tx, |ex| sqlx::query_scalar(
            "UPDATE nodes SET state = 'lost', generation = generation + 1
             WHERE name = $1 AND state != 'lost' RETURNING generation",
        )
        .bind(name)
        .fetch_optional(ex)
        .await)?;
        tx.commit().await?;
        Ok(generation)
    }

    /// A lost node that reports again is ready again (its stale work is gone from its
    /// assignment by then); a draining one stays draining. Returns whether it was lost.
    pub async fn node_returned(&self, name: &str) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query(
            "UPDATE nodes SET state = 'ready' WHERE name = $1 AND state = 'lost'"
        )
        .bind(name)
        .execute(ex)
        .await)?;
        Ok(done.rows_affected() > 0)
    }

    /// What each node's replicas reserve.
    pub async fn allocations(&self) -> Result<HashMap<String, Allocation>> {
        let rows: Vec<(String, i64, i64, i64)> = on!(self.pool, |ex| {
            sqlx::query_as(
            "SELECT node, CAST(SUM(reserve_millicpus) AS BIGINT), CAST(SUM(reserve_memory_bytes) AS BIGINT), COUNT(*)
             FROM instances GROUP BY node",
        )
        .fetch_all(ex)
        .await
        })?;
        Ok(rows
            .into_iter()
            .map(|(node, cpu, mem, n)| {
                let reserved = Capacity { millicpus: cpu.max(0) as u64, memory_bytes: mem.max(0) as u64 };
                (node, Allocation { reserved, replicas: n as u32 })
            })
            .collect())
    }

    /// Takes a replica out of the route table (its replacement serves); it stays assigned.
    pub async fn unroute_instance(&self, name: &str) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("UPDATE instances SET unrouted = TRUE WHERE name = $1")
            .bind(name)
            .execute(ex)
            .await)?;
        Ok(())
    }

    /// Puts `new` in the place of the replica `old` in one transaction (a lost node's replica
    /// placed elsewhere). Returns false when `old` was gone already (a deploy retired it).
    pub async fn replace_instance(&self, old: &str, new: &InstanceRow) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done =
            exec!(tx, |ex| sqlx::query("DELETE FROM instances WHERE name = $1").bind(old).execute(ex).await)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        super::releases::insert_instances(&mut tx, std::slice::from_ref(new)).await?;
        tx.commit().await?;
        self.placed_now(std::slice::from_ref(new));
        Ok(true)
    }
}
