//! Environment networks: one bridge per environment on its subnet from the platform's pool,
//! and their removal once the environment has nothing left on this node.

use super::{docker_message, DockerClient};
use protocol::labels;
use std::collections::HashMap;

impl DockerClient {
    /// Creates the environment's private network when this node lacks it, on `subnet` from the
    /// platform's pool (Docker picks a range when `subnet` is empty: an environment from before
    /// subnets keeps what it has). A network of that name is used only when it carries the
    /// platform's labels for this environment, else refused; one with another subnet (left by
    /// a deleted environment of the same name) is made again once nothing is attached to it.
    pub async fn ensure_network(&self, name: &str, app: &str, env: &str, subnet: &str) -> anyhow::Result<()> {
        use bollard::models::{Ipam, IpamConfig};
        use bollard::network::CreateNetworkOptions;
        if let Ok(found) = self.docker.inspect_network::<String>(name, None).await {
            if subnet.is_empty() {
                return Ok(());
            }
            let tags = found.labels.unwrap_or_default();
            let tag = |k: &str| tags.get(k).map(String::as_str);
            anyhow::ensure!(
                tag(labels::MANAGED) == Some("true") && tag(labels::APP) == Some(app) && tag(labels::ENV) == Some(env),
                "a Docker network named {name} exists that paas did not make for {app}/{env}; remove or rename it so the platform can make its own"
            );
            let has = found
                .ipam
                .and_then(|i| i.config)
                .unwrap_or_default()
                .iter()
                .any(|c| c.subnet.as_deref() == Some(subnet));
            if has || found.containers.is_some_and(|c| !c.is_empty()) {
                return Ok(());
            }
            tracing::info!(
                network = name,
                subnet,
                "making the environment's network again on its assigned subnet"
            );
            self.docker
                .remove_network(name)
                .await
                .map_err(|e| anyhow::anyhow!("replacing network {name}: {}", docker_message(&e)))?;
        }
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::APP.to_string(), app.to_string()),
            (labels::ENV.to_string(), env.to_string()),
            (labels::NODE.to_string(), self.node.clone()),
        ]);
        let ipam = (!subnet.is_empty()).then(|| Ipam {
            config: Some(vec![IpamConfig { subnet: Some(subnet.to_string()), ..Default::default() }]),
            ..Default::default()
        });
        let opts = CreateNetworkOptions {
            name: name.to_string(),
            driver: "bridge".to_string(),
            labels,
            ipam: ipam.unwrap_or_default(),
            ..Default::default()
        };
        match self.docker.create_network(opts).await {
            Ok(_) => Ok(()),
            // Another task created it meanwhile.
            Err(_) if self.docker.inspect_network::<String>(name, None).await.is_ok() => Ok(()),
            Err(e) => {
                let msg = docker_message(&e);
                let hint = if msg.contains("overlap") {
                    " (another network on this Docker engine holds addresses of the platform's network pool; see --network-pool)"
                } else {
                    ""
                };
                Err(anyhow::anyhow!("creating network {name} on {subnet}: {msg}{hint}"))
            }
        }
    }

    /// Removes this node's environment networks for which `wanted` says no: their environment
    /// was deleted or has nothing left on this node. Only networks with the platform's labels
    /// for this node are looked at. Docker refuses to remove a network something is attached
    /// to (a container still retiring); those are counted and left for the next call.
    pub async fn remove_unwanted_networks(&self, wanted: impl Fn(&str) -> bool) -> anyhow::Result<usize> {
        use bollard::network::ListNetworksOptions;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}=true", labels::MANAGED), format!("{}={}", labels::NODE, self.node)],
        )]);
        let found = self.docker.list_networks(Some(ListNetworksOptions { filters })).await?;
        let mut left = 0;
        for name in found.into_iter().filter_map(|n| n.name).filter(|n| !wanted(n)) {
            match self.docker.remove_network(&name).await {
                Ok(()) => {
                    tracing::info!(network = %name, "removed the network of an environment this node no longer runs")
                }
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
                Err(e) => {
                    tracing::debug!(network = %name, error = %docker_message(&e), "network not removed yet");
                    left += 1;
                }
            }
        }
        Ok(left)
    }
}
