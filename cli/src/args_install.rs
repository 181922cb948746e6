//! The arguments of `paas install`: which systemd unit to install, and where.

use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// What the service runs: `up` (paas.service: control plane, agent and ingress on one
    /// machine), `server` (paas-server.service) or `agent` (paas-agent.service).
    #[arg(value_enum, default_value_t = Role::Up)]
    pub role: Role,
    /// Print what would be done, and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the files under this directory, as if it were `/` (an image being built, a test);
    /// no user is made and systemctl is not run.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Up,
    Server,
    Agent,
}
