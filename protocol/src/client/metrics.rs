//! The client's calls for metrics: an agent's samples, and the views `paas metrics` shows.

use super::{Client, ClientError, AGENT_CALL_TIMEOUT};
use crate::metrics::{MetricsView, NodeSample};

/// `GET /api/v1/metrics/scrape-token`: what Prometheus sends on `/metrics`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScrapeToken {
    pub token: String,
}

impl Client {
    /// Sends a node's sample (the agent, over mutual TLS).
    pub async fn send_metrics(
        &self,
        node: &str,
        sample: &NodeSample,
    ) -> Result<serde_json::Value, ClientError> {
        let req = self.http().post(self.url(&format!("/agent/v1/nodes/{node}/metrics"))).json(sample);
        self.send(req.timeout(AGENT_CALL_TIMEOUT)).await
    }

    /// An environment's series since `since` (`6h`, or a time).
    pub async fn metrics(&self, app: &str, env: &str, since: &str) -> Result<MetricsView, ClientError> {
        let url = self.url(&format!("/api/v1/apps/{app}/envs/{env}/metrics"));
        self.send(self.http().get(url).query(&[("since", since)])).await
    }

    /// The nodes' own series since `since`.
    pub async fn node_metrics(&self, since: &str) -> Result<MetricsView, ClientError> {
        self.send(self.http().get(self.url("/api/v1/nodes/metrics")).query(&[("since", since)])).await
    }

    pub async fn scrape_token(&self) -> Result<ScrapeToken, ClientError> {
        self.send(self.http().get(self.url("/api/v1/metrics/scrape-token"))).await
    }
}
