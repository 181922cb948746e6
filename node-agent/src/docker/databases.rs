//! PostgreSQL servers: the primary's and replicas' containers and volumes, throwaway servers
//! for restore drills, and the image they run.

use super::{docker_message, limited_host_config, observe, DockerClient, Observed, DB_MEMORY};
use bollard::container::Config as ContainerConfig;
use bollard::models::{HostConfig, PortBinding};
use protocol::agent::DbRole;
use protocol::labels;
use std::collections::HashMap;

impl DockerClient {
    /// The database container `name` as observed (any state), if it exists.
    pub async fn database(&self, name: &str) -> anyhow::Result<Option<Observed>> {
        let list = self
            .labelled(vec![format!("{}={}", labels::NODE, self.node), format!("{}", labels::ROLE)])
            .await?;
        Ok(list.into_iter().filter_map(|c| observe(c, Some(5432))).find(|o| o.name == name))
    }

    /// Creates and starts a PostgreSQL server: data on its named volume, reachable as its role
    /// (`db-primary`) on the environment's network and on this node's private address.
    pub async fn create_database(
        &self,
        spec: &protocol::agent::DatabaseSpec,
        script: &str,
    ) -> anyhow::Result<()> {
        use bollard::volume::CreateVolumeOptions;
        self.ensure_network(&spec.network, &spec.app, &spec.env, &spec.subnet).await?;
        // One server per data directory: whatever else of this node's still mounts the volume
        // (the replica it was, before a switchover) goes first.
        let filters = HashMap::from([
            ("label".to_string(), vec![format!("{}={}", labels::NODE, self.node)]),
            ("volume".to_string(), vec![spec.volume.clone()]),
        ]);
        let opts =
            bollard::container::ListContainersOptions::<String> { all: true, filters, ..Default::default() };
        for c in self.docker.list_containers(Some(opts)).await? {
            let Some(name) = c.names.and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string()))
            else {
                continue;
            };
            tracing::info!(container = %name, volume = %spec.volume, "stopping the server that mounts the volume first");
            self.stop_and_remove(&name, 30).await?;
        }
        let labels = self.db_labels(spec, spec.role.as_str());
        let vol =
            CreateVolumeOptions { name: spec.volume.clone(), labels: labels.clone(), ..Default::default() };
        self.docker
            .create_volume(vol)
            .await
            .map_err(|e| anyhow::anyhow!("creating volume: {}", docker_message(&e)))?;
        self.create_postgres(spec, &spec.name, script, labels, false).await
    }

    /// A throwaway copy of a database's server for restore drills: same image, names and
    /// roles, no volume (the container layer), no network at all.
    pub async fn create_verify_database(
        &self,
        spec: &protocol::agent::DatabaseSpec,
        name: &str,
        script: &str,
    ) -> anyhow::Result<()> {
        let _ = self.stop_and_remove(name, 1).await;
        let labels = self.db_labels(spec, "db-verify");
        self.create_postgres(spec, name, script, labels, true).await
    }

    fn db_labels(&self, spec: &protocol::agent::DatabaseSpec, role: &str) -> HashMap<String, String> {
        self.node_labels(&[(labels::APP, &spec.app), (labels::ENV, &spec.env), (labels::ROLE, role)])
    }

    async fn create_postgres(
        &self,
        spec: &protocol::agent::DatabaseSpec,
        name: &str,
        script: &str,
        labels: HashMap<String, String>,
        throwaway: bool,
    ) -> anyhow::Result<()> {
        use bollard::models::{EndpointSettings, Mount, MountTypeEnum};
        crate::dbroles::ready(spec).map_err(|why| anyhow::anyhow!("cannot create the database: {why}"))?;
        // The start scripts read the passwords and unset them before postgres starts.
        let mut env = vec![
            format!("PG_MAJOR={}", spec.version),
            format!("PGDATA={}", crate::dbroles::PGDATA),
            format!("POSTGRES_USER={}", spec.user),
            format!("POSTGRES_PASSWORD={}", spec.password),
            format!("POSTGRES_DB={}", spec.database),
            format!("SUPERUSER_PASSWORD={}", spec.superuser_password),
            format!("REPLICATION_PASSWORD={}", spec.replication_password),
            format!("PG_HBA={}", crate::dbroles::pg_hba(&spec.user)),
            format!("MAX_CONNECTIONS={}", spec.max_connections),
            format!("ARCHIVE_TIMEOUT={}", spec.archive_timeout_secs),
        ];
        if spec.role == DbRole::Replica && !throwaway {
            env.push(format!("PRIMARY_HOST={}", spec.primary_host));
            env.push(format!("PRIMARY_PORT={}", spec.primary_port));
            env.push(format!("PRIMARY_CONNINFO={}", crate::dbroles::primary_conninfo(spec)));
        }
        // A server gets more room than an app process: one backend process per connection.
        let limits = protocol::manifest::Limits {
            memory_bytes: DB_MEMORY,
            millicpus: 2000,
            pids: (spec.max_connections * 2 + 64).max(512),
        };
        let mut host_config = HostConfig {
            // PostgreSQL's own shared memory needs more than Docker's 64 MB default.
            shm_size: Some(256 * 1024 * 1024),
            ..limited_host_config(&limits)
        };
        let mut networking = None;
        if throwaway {
            host_config.network_mode = Some("none".into());
        } else {
            host_config.mounts = Some(vec![Mount {
                target: Some("/var/lib/postgresql/data".into()),
                source: Some(spec.volume.clone()),
                typ: Some(MountTypeEnum::VOLUME),
                ..Default::default()
            }]);
            host_config.port_bindings = Some(HashMap::from([(
                "5432/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some(self.private_addr.clone()),
                    host_port: Some(if spec.host_port == 0 {
                        String::new()
                    } else {
                        spec.host_port.to_string()
                    }),
                }]),
            )]));
            host_config.network_mode = Some(spec.network.clone());
            let endpoint =
                EndpointSettings { aliases: Some(vec![spec.role.to_string()]), ..Default::default() };
            networking = Some(bollard::container::NetworkingConfig {
                endpoints_config: HashMap::from([(spec.network.clone(), endpoint)]),
            });
        }
        let config = ContainerConfig {
            image: Some(spec.image.clone()),
            cmd: Some(vec!["sh".to_string(), "-c".to_string(), script.to_string()]),
            env: Some(env),
            labels: Some(labels),
            user: Some("postgres".into()),
            // Fast shutdown: SIGINT ends sessions and checkpoints; SIGTERM would wait for clients.
            stop_signal: Some("SIGINT".into()),
            exposed_ports: (!throwaway).then(|| HashMap::from([("5432/tcp".to_string(), HashMap::new())])),
            host_config: Some(host_config),
            networking_config: networking,
            ..Default::default()
        };
        self.create_started(name, config).await
    }

    /// Builds the default PostgreSQL image from the embedded Dockerfile.
    pub async fn build_postgres(
        &self,
        tag: &str,
        version: u32,
        dockerfile: &str,
        network: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(dockerfile.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "Dockerfile", dockerfile.as_bytes())?;
        let context = bytes::Bytes::from(tar.into_inner()?);
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            ("paas.image".to_string(), "postgres".to_string()),
        ]);
        let args = HashMap::from([("PG_MAJOR".to_string(), version.to_string())]);
        self.build(context, tag, labels, args, network, |line| tracing::debug!("{line}")).await.map(drop)
    }
    /// Names of this node's database volumes (the platform's, with this node's label and a
    /// database role), whether a database still uses them or not.
    pub async fn database_volumes(&self) -> anyhow::Result<Vec<String>> {
        use bollard::volume::ListVolumesOptions;
        let (managed, node) =
            (format!("{}=true", labels::MANAGED), format!("{}={}", labels::NODE, self.node));
        let filters = HashMap::from([("label", vec![managed.as_str(), node.as_str(), labels::ROLE])]);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions { filters }))
            .await
            .map_err(|e| anyhow::anyhow!("listing volumes: {}", docker_message(&e)))?;
        let mut names: Vec<String> = list.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        names.sort();
        Ok(names)
    }

    /// Names of this node's database containers with `role` (`db-primary`, `db-replica`,
    /// `db-verify`).
    pub async fn database_names(&self, role: &str) -> anyhow::Result<Vec<String>> {
        let list = self
            .labelled(vec![format!("{}={}", labels::NODE, self.node), format!("{}={role}", labels::ROLE)])
            .await?;
        Ok(list
            .into_iter()
            .filter_map(|c| Some(c.names?.first()?.trim_start_matches('/').to_string()))
            .collect())
    }
}
