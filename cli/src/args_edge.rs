//! The CLI's flags and subcommands of the edge: how the API is served (`--api-tls`), where
//! custom domains get certificates (ACME), and `paas domains`.

use clap::{Args, Subcommand};
use std::path::PathBuf;

/// How the API, the console and `git push` are served.
#[derive(Args, Debug, Clone)]
pub struct ApiTlsArgs {
    /// Serve the API, the console and `git push` over HTTPS, with a certificate from the
    /// platform's local CA for localhost, the API address and every --api-name.
    #[arg(long, env = "PAAS_API_TLS")]
    pub api_tls: bool,
    /// A DNS name clients reach the API by (repeatable), listed in its certificate.
    #[arg(long, env = "PAAS_API_NAME", value_delimiter = ',', requires = "api_tls")]
    pub api_name: Vec<String>,
    /// Serve the API over plain HTTP on a non-loopback address anyway (behind a TLS proxy of
    /// your own): tokens and session cookies would otherwise cross the network in clear.
    #[arg(long, env = "PAAS_INSECURE_HTTP", conflicts_with = "api_tls")]
    pub insecure_http: bool,
}

/// Where custom domains get their certificates: an ACME server (Let's Encrypt's is
/// https://acme-v02.api.letsencrypt.org/directory), or the local CA without one.
#[derive(Args, Debug, Clone)]
pub struct AcmeArgs {
    /// The ACME directory URL custom domains get certificates from (HTTP-01: the domain must
    /// reach this platform's ingress on port 80).
    #[arg(long, env = "PAAS_ACME_DIRECTORY", requires = "acme_email")]
    pub acme_directory: Option<String>,
    /// The contact address of the ACME account (expiry notices go there).
    #[arg(long, env = "PAAS_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// PEM file of CA certificates trusted to reach the ACME server (a private one such as
    /// pebble).
    #[arg(long, env = "PAAS_ACME_CA_FILE")]
    pub acme_ca_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DomainsCommand {
    /// Serve an environment (production unless --env) under DOMAIN too. Over HTTPS it gets a
    /// certificate from the platform's local CA (or ACME), unless you upload one with --cert and
    /// --key. Prints the DNS record the domain needs. Given again with --cert and --key, it
    /// replaces the domain's certificate.
    Add {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
        #[arg(long, short = 'e')]
        env: Option<String>,
        domain: String,
        /// PEM certificate for DOMAIN, followed by its intermediates.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// PEM private key of --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// List an app's domains with their environment, certificate and DNS record.
    List {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
    },
    /// Stop serving DOMAIN (its certificate is deleted).
    Remove {
        #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP)]
        app: String,
        domain: String,
    },
}
