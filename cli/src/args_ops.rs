//! The CLI's flags and subcommands of operations: `paas metrics`, `paas alerts`, `paas notify`
//! and the platform's SMTP server.

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct MetricsArgs {
    #[arg(long, short = 'a', env = "PAAS_APP", help = crate::args::APP_HELP,
          required_unless_present_any = ["nodes", "scrape_token"])]
    pub app: Option<String>,
    /// The environment.
    #[arg(long, short = 'e', default_value = "production", env = "PAAS_ENV")]
    pub env: String,
    /// From this long ago (10m, 6h, 7d) or this time (2026-11-27T10:00:00Z); the last hour by
    /// default. Spans longer than a day show 5 minute means.
    #[arg(long)]
    pub since: Option<String>,
    /// The nodes' CPU, memory, disks and network instead of an app's (platform admins).
    #[arg(long)]
    pub nodes: bool,
    /// Print the token Prometheus sends to `/metrics` (platform admins).
    #[arg(long)]
    pub scrape_token: bool,
}

/// The SMTP server email notifications go through (give the URL in the environment: it holds
/// the password).
#[derive(Args, Debug, Clone)]
pub struct SmtpArgs {
    /// `smtps://user:pass@host:465` (TLS), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), or `smtp://host:25` (no TLS: a relay on this machine).
    #[arg(long, env = "PAAS_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of notification emails, e.g. `paas <paas@example.com>`.
    #[arg(long, env = "PAAS_SMTP_FROM", requires = "smtp_url")]
    pub smtp_from: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Alerts firing now, then those resolved in the last week.
    List,
    /// The rules, or change one: `paas alerts rules set node-disk --threshold 90 --for 10m`.
    Rules {
        #[command(subcommand)]
        set: Option<RulesCommand>,
    },
    /// Hold back a rule's notifications for a while (it still shows in `alerts list`).
    Silence {
        rule: String,
        /// How long: 30m, 2h, 1d.
        #[arg(long = "for", default_value = "1h")]
        duration: String,
    },
    /// Send a rule's notifications again.
    Unsilence { rule: String },
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// A rule of your own on a metric: `paas alerts rules add slow-shop --metric
    /// http_latency_p95_ms --threshold 500 --for 5m --app shop`.
    Add {
        name: String,
        /// One of the metrics `paas metrics` shows.
        #[arg(long)]
        metric: String,
        #[arg(long)]
        threshold: f64,
        /// Fire when the value is below the threshold (above by default).
        #[arg(long)]
        below: bool,
        /// How long the condition must hold: 5m, 0s.
        #[arg(long = "for", default_value = "5m")]
        duration: String,
        /// Only this app's series (every app's and the nodes' without it).
        #[arg(long, short = 'a')]
        app: Option<String>,
        /// Only this environment of the app.
        #[arg(long, short = 'e', requires = "app")]
        env: Option<String>,
    },
    /// Remove a rule of your own (the platform's own are turned off with --enabled false).
    Remove { name: String },
    /// Change a rule's threshold, how long it must hold, or turn it off and on.
    Set {
        rule: String,
        #[arg(long)]
        threshold: Option<f64>,
        /// How long the condition must hold before the alert fires: 5m, 0s.
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Send alerts (and with --deploys, deploys) to an email address or a webhook.
    Add(NotifyArgs),
    /// The targets.
    List,
    /// Stop sending to a target.
    Remove { id: String },
    /// Send a test message to every target.
    Test,
}

#[derive(Args, Debug)]
pub struct NotifyArgs {
    /// `email` or `webhook`.
    pub kind: String,
    /// The address, or the URL (JSON POSTs signed with HMAC-SHA256 in X-Paas-Signature).
    pub target: String,
    /// Only this app's alerts and deploys (every app's and the nodes' without it).
    #[arg(long, short = 'a')]
    pub app: Option<String>,
    /// Deploys too: started, live, failed, rolled back.
    #[arg(long)]
    pub deploys: bool,
}
