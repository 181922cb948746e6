//! Wire types shared by every paas component: names, API resources, the agent protocol, and the
//! typed HTTP client that the CLI, the console and the node agent use.
//!
//! This crate performs no IO except inside [`client`] (HTTP) and [`files`] (private files at
//! rest); everything else is plain serde types.

pub mod agent;
pub mod api;
pub mod client;
pub mod files;
pub mod manifest;
pub mod names;

pub use client::{Client, ClientError};
pub use names::{AppName, EnvName, NameError};

/// Labels every Docker object created by paas carries (DESIGN.md invariants).
pub mod labels {
    pub const MANAGED: &str = "paas.managed";
    pub const APP: &str = "paas.app";
    pub const ENV: &str = "paas.env";
    pub const PROCESS: &str = "paas.process";
    pub const RELEASE: &str = "paas.release";
    pub const REPLICA: &str = "paas.replica";
    pub const NODE: &str = "paas.node";
    /// `db-primary` / `db-replica` on database containers.
    pub const ROLE: &str = "paas.role";
}

/// The environment every app gets when it is created.
pub const PRODUCTION: &str = "production";

/// The port a web process listens on unless the manifest says otherwise (Heroku's `PORT`).
pub const DEFAULT_PORT: u16 = 8080;

/// Hostname under which an environment is served: production is `app.base`, any other
/// environment is `app-env.base`.
pub fn hostname(app: &str, env: &str, base_domain: &str) -> String {
    if env == PRODUCTION {
        format!("{app}.{base_domain}")
    } else {
        format!("{app}-{env}.{base_domain}")
    }
}

/// The private Docker network of an environment: its app containers and its database.
pub fn env_network(app: &str, env: &str) -> String {
    format!("paas-{app}-{env}")
}

/// Container name convention: `paas-<app>-<env>-<process>-<release>-<n>`.
pub fn container_name(app: &str, env: &str, process: &str, release: u32, replica: u32) -> String {
    format!("paas-{app}-{env}-{process}-{release}-{replica}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_the_convention() {
        assert_eq!(hostname("notes", "production", "localhost"), "notes.localhost");
        assert_eq!(hostname("notes", "staging", "example.com"), "notes-staging.example.com");
        assert_eq!(container_name("notes", "production", "web", 3, 1), "paas-notes-production-web-3-1");
    }
}
