//! `paas nodes token` (a one-time join token for a new node) and `paas nodes remove`.

use crate::args::Global;
use crate::output::emit;
use std::process::ExitCode;
use std::time::Duration;

pub async fn token(g: &Global, ttl: Duration) -> anyhow::Result<ExitCode> {
    let created = super::client(g)?.create_join_token(ttl.as_secs()).await?;
    emit(g.output, &created, |c| {
        println!("{}", c.token);
        eprintln!("This token joins one node, until {}:", c.expires_at);
        eprintln!("  paas agent --join https://<agent address> --join-token <the token above>");
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn remove(g: &Global, node: &str) -> anyhow::Result<ExitCode> {
    let removed = super::client(g)?.remove_node(node).await?;
    emit(g.output, &removed, |_| println!("Removed node {node}; its certificate no longer works."))?;
    Ok(ExitCode::SUCCESS)
}
