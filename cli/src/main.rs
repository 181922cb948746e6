//! The `paas` binary: parses the command line and hands off to one module per command.

/// `println!`/`print!` for the whole CLI: when the reader of stdout is gone (`paas releases |
/// head -3`) a command ends quietly, as Unix tools do, instead of panicking (see `output::write`).
macro_rules! println {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

mod args;
mod bundle;
mod cmd;
mod config;
mod dockerignore;
mod link;
mod output;
mod sockets;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before parsing: every --app falls back to PAAS_APP (see `link`).
    if std::env::var_os("PAAS_APP").is_none() {
        if let Some(app) = link::linked_app(std::path::Path::new(".")) {
            std::env::set_var("PAAS_APP", app);
        }
    }
    let cli = args::Cli::parse_from(args::download_file_flag(std::env::args_os().collect()));
    output::set_daemon(cli.command.is_daemon());
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
