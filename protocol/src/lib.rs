//! Wire types shared by every paas component: names, API resources, the agent protocol, and the
//! typed HTTP client that the CLI, the console and the node agent use.
//!
//! This crate performs no IO except inside [`client`] and [`tls`] (HTTP), [`files`] (private
//! files at rest) and [`attach`] (reading frames); everything else is plain serde types.

pub mod access;
pub mod agent;
pub mod alerts;
pub mod api;
pub mod attach;
pub mod client;
pub mod cron;
pub mod domains;
pub mod drains;
pub mod files;
pub mod logs;
pub mod manifest;
pub mod metrics;
pub mod names;
pub mod registry;
pub mod secrets;
pub mod tls;

pub use client::{Client, ClientError};
pub use names::{AppName, EnvName, NameError};

/// A string that names no value of a [`string_enum!`]: the store refuses such a row rather than
/// guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {of}")]
pub struct UnknownValue {
    pub of: &'static str,
    pub value: String,
}

/// A closed set of states or roles that travels (serde) and is stored as fixed strings: the
/// strings are written once, and `TryFrom<String>` lets the store decode a column strictly
/// (`#[sqlx(try_from = "String")]`) without this crate knowing sqlx.
#[macro_export]
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text,)+ }
            }
        }
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl ::std::str::FromStr for $name {
            type Err = $crate::UnknownValue;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownValue { of: stringify!($name), value: s.to_string() }),
                }
            }
        }
        impl ::std::convert::TryFrom<::std::string::String> for $name {
            type Error = $crate::UnknownValue;
            fn try_from(s: String) -> ::std::result::Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

/// Labels every Docker object created by paas carries (ARCHITECTURE.md, Invariants: Labels).
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

/// The Docker object names of one environment: its network, app containers, database
/// containers and volumes, and the repository its images are tagged in.
///
/// App, environment and process names cannot contain `--` (see [`names`]), so `--` between them
/// makes every name belong to exactly one (app, env, process): app `shop` with environment
/// `eu-production` and app `shop-eu` with `production` get `paas-shop--eu-production` and
/// `paas-shop-eu--production`. Environments created before that rule keep their old names
/// (`legacy`, `paas-<app>-<env>...`) so their running containers and database volumes carry on
/// after an upgrade; the store marks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DockerNames<'a> {
    pub app: &'a str,
    pub env: &'a str,
    pub legacy: bool,
}

impl<'a> DockerNames<'a> {
    pub fn new(app: &'a str, env: &'a str) -> Self {
        Self { app, env, legacy: false }
    }

    fn sep(&self) -> &'static str {
        if self.legacy {
            "-"
        } else {
            "--"
        }
    }

    /// The environment's private network (its app containers, jobs and database).
    pub fn network(&self) -> String {
        format!("paas-{}{}{}", self.app, self.sep(), self.env)
    }

    /// An app container: `paas-<app>--<env>--<process>-<release>-<replica>`.
    pub fn container(&self, process: &str, release: u32, replica: u32) -> String {
        format!("{}{}{process}-{release}-{replica}", self.network(), self.sep())
    }

    /// A database server's container and its volume (`role`: `db-primary`, `db-replica`).
    pub fn database(&self, role: &str) -> String {
        format!("{}{}{role}", self.network(), self.sep())
    }

    /// The repository a release's image is tagged in (`paas/<app>--<env>:v<n>`).
    pub fn image_repo(&self) -> String {
        format!("paas/{}{}{}", self.app, self.sep(), self.env)
    }
}

/// A size as people read it: `1.50 GiB`, `12.3 MiB`, `512 B`.
pub fn bytes_human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_the_convention() {
        assert_eq!(hostname("notes", "production", "localhost"), "notes.localhost");
        assert_eq!(hostname("notes", "staging", "example.com"), "notes-staging.example.com");
    }

    #[test]
    fn docker_names_of_different_environments_never_collide() {
        let a = DockerNames::new("shop", "eu-production");
        let b = DockerNames::new("shop-eu", "production");
        assert_eq!(a.network(), "paas-shop--eu-production");
        assert_ne!(a.network(), b.network());
        assert_ne!(a.container("web", 1, 1), b.container("web", 1, 1));
        assert_ne!(a.database("db-primary"), b.database("db-primary"));
        assert_ne!(a.image_repo(), b.image_repo());
        // An environment whose name extends another's by a process-like suffix.
        let c = DockerNames::new("a", "b-web");
        let d = DockerNames::new("a", "b");
        assert_ne!(c.container("x", 1, 1), d.container("web-x", 1, 1));
        assert_eq!(d.container("web", 3, 1), "paas-a--b--web-3-1");
        let old = DockerNames { app: "notes", env: "production", legacy: true };
        assert_eq!(old.container("web", 3, 1), "paas-notes-production-web-3-1");
        assert_eq!(old.database("db-primary"), "paas-notes-production-db-primary");
    }
}
