//! The `paas` binary: parses the command line and hands off to one module per command.

mod args;
mod bundle;
mod cmd;
mod config;
mod dockerignore;
mod output;
mod sockets;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PAAS_LOG").unwrap_or_else(|_| {
        let default = if cli.command.is_daemon() { "info" } else { "warn" };
        tracing_subscriber::EnvFilter::new(default)
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::exec(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", output::error_sentence(&e));
            ExitCode::FAILURE
        }
    }
}
