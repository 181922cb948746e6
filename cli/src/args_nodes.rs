//! The CLI's flags of nodes: what an agent is started with (`paas agent`, and the node half of
//! `paas up`) and `paas nodes`.

use clap::{Args, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct NodeOpts {
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Address app containers publish their ports on; keep it private.
    #[arg(long, default_value = "127.0.0.1")]
    pub private_addr: IpAddr,
    /// Docker network mode for image builds, e.g. `host` when the Docker bridge has no egress.
    #[arg(long, env = "PAAS_BUILD_NETWORK")]
    pub build_network: Option<String>,
    /// Proxies in front of the ingress (CIDR blocks or addresses, comma-separated) whose
    /// X-Forwarded-For/-Proto/-Host, X-Real-IP and X-Request-Id are believed; from anyone else they
    /// are replaced.
    #[arg(long, value_delimiter = ',', value_parser = node_agent::ingress::parse_trusted_proxy)]
    pub trusted_proxies: Vec<node_agent::ingress::IpNet>,
    /// Release images a prune keeps per environment, newest first (the current, target and
    /// rollback releases' images are kept besides).
    #[arg(long, env = "PAAS_KEEP_IMAGES", default_value_t = 5)]
    pub keep_images: usize,
    /// Seconds between prunes of old release images, stopped platform containers and dangling
    /// platform images; 0: only when `paas nodes prune` asks.
    #[arg(long, env = "PAAS_PRUNE_EVERY_SECS", default_value_t = 3600)]
    pub prune_every_secs: u64,
    /// Cap of the node's log spool on disk, in MiB (lines not yet shipped to the control
    /// plane); when full, the oldest lines are dropped and the loss is counted and shown.
    #[arg(long, env = "PAAS_LOG_SPOOL_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_spool_mib: u64,
    /// CPUs this node offers to replicas' reservations (default: the machine's).
    #[arg(long, env = "PAAS_NODE_CPUS")]
    pub cpus: Option<f64>,
    /// Memory this node offers to replicas' reservations, e.g. 8G (default: the machine's).
    #[arg(long, env = "PAAS_NODE_MEMORY", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Count only images tagged for this node as here (several agents on one Docker engine,
    /// as the tests run them), so images travel between them as between machines.
    #[arg(long, hide = true)]
    pub node_scoped_images: bool,
}

impl NodeOpts {
    pub fn log_settings(&self) -> node_agent::LogSettings {
        node_agent::LogSettings { spool_bytes: self.log_spool_mib << 20 }
    }

    /// What the node offers to reservations: the flags, else the machine's.
    pub fn capacity(&self) -> anyhow::Result<protocol::agent::Capacity> {
        let mut c = node_agent::machine_capacity();
        if let Some(cpus) = self.cpus {
            anyhow::ensure!(
                cpus > 0.0 && cpus <= 4096.0,
                "--cpus {cpus}: give a number of CPUs, like 2 or 0.5"
            );
            c.millicpus = (cpus * 1000.0).round() as u64;
        }
        if let Some(memory) = self.memory {
            c.memory_bytes = memory;
        }
        Ok(c)
    }

    pub fn prune_every(&self) -> Option<std::time::Duration> {
        (self.prune_every_secs > 0).then(|| std::time::Duration::from_secs(self.prune_every_secs))
    }
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The control plane's agent address, e.g. https://10.0.0.5:7071 (`paas server --agent-addr`).
    #[arg(long)]
    pub join: String,
    /// One-time join token from `paas nodes token`. Needed only to join: the node's key and
    /// certificate are then kept in the state dir and used (and renewed) from then on.
    #[arg(long = "join-token", env = "PAAS_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    #[command(flatten)]
    pub node: NodeOpts,
    /// Serve the ingress on this address (makes this an ingress node).
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
    /// Serve the ingress over HTTPS on this address too (with --http-addr).
    #[arg(long, requires = "http_addr")]
    pub https_addr: Option<SocketAddr>,
    /// Agent state directory, holding the node's key and certificate (default: $XDG_DATA_HOME/paas-agent).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// List nodes: state, roles, CPU and memory reserved and offered, replicas, disk use.
    List,
    /// Prune a node now: old release images, stopped platform containers, dangling images.
    Prune {
        /// The node (default: every ready node).
        node: Option<String>,
    },
    /// Make a one-time join token for a new node (`paas agent --join-token`).
    Token {
        /// How long the token can be used, e.g. 30m, 1h, 2d (1 minute to 7 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Remove a node that runs nothing any more (drain it first); its certificate stops
    /// working at once.
    Remove { node: String },
    /// Move a node's replicas to other nodes, each started and healthy before the old one
    /// stops serving, and place nothing new there (for maintenance or before `remove`).
    Drain { node: String },
    /// Let a drained node take new replicas again.
    Undrain { node: String },
}

/// `8G`, `512M`, `1024MiB` as bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    protocol::manifest::parse_memory(text).ok_or_else(|| format!("{text:?} is not a size like 8G or 512M"))
}

/// The optional external registry release images travel through between nodes. Give the
/// password in the environment, where `ps` cannot see it.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Push each release image to this repository (e.g. registry.example.com:5000/paas, tagged
    /// by image id) and have other nodes pull it from there, instead of through the control
    /// plane's copies.
    #[arg(long, env = "PAAS_REGISTRY", value_parser = protocol::registry::parse_repository)]
    pub registry: Option<String>,
    /// The registry login's user, for a registry that needs one.
    #[arg(long, env = "PAAS_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// The registry login's password (give it in the environment).
    #[arg(long, env = "PAAS_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
}

impl RegistryArgs {
    pub fn registry(&self) -> anyhow::Result<Option<protocol::registry::Registry>> {
        // A login without a registry is ignored: the environment may hold it for later.
        let Some(repository) = self.registry.clone() else { return Ok(None) };
        match (&self.registry_user, &self.registry_password) {
            (Some(_), None) => anyhow::bail!("--registry-user needs a password: set PAAS_REGISTRY_PASSWORD"),
            (None, Some(_)) => anyhow::bail!("a registry password needs its user: add --registry-user"),
            _ => {}
        }
        let (username, password) = (self.registry_user.clone(), self.registry_password.clone());
        Ok(Some(protocol::registry::Registry { repository, username, password }))
    }
}
