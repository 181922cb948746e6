//! The CLI's `paas cron`: the `[cron]` jobs of `paas.toml` as the serving release runs them.

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CronCommand {
    /// List an environment's scheduled jobs (from the serving release's paas.toml): schedule
    /// (UTC), command, next run and the last run's outcome. Their output is in
    /// `paas logs --process cron-NAME`.
    List {
        #[command(flatten)]
        target: super::AppEnv,
    },
}
