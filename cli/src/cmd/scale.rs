//! `paas scale web=3`: changes replica counts in place, without touching healthy replicas.

use crate::args::{Global, ScaleArgs};
use crate::output::emit;
use std::process::ExitCode;

/// Parses `PROCESS=N`.
fn parse(pair: &str) -> anyhow::Result<(String, u32)> {
    let (process, n) = pair
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{pair:?} is not PROCESS=REPLICAS, e.g. web=3"))?;
    protocol::names::check_process(process)?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{pair:?}: the replica count must be a whole number"))?;
    Ok((process.to_string(), n))
}

pub async fn exec(g: &Global, args: ScaleArgs) -> anyhow::Result<ExitCode> {
    // Check every pair before changing anything.
    let pairs = args.formation.iter().map(|p| parse(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let client = super::client(g)?;
    let mut last = None;
    for (process, n) in pairs {
        last = Some(client.scale(&args.target.app, &args.target.env, &process, n).await?);
    }
    let formation = last.expect("clap requires at least one pair");
    emit(g.output, &formation, |f| {
        let parts: Vec<String> = f.processes.iter().map(|(p, n)| format!("{p}={n}")).collect();
        println!("Scaled {}/{}: {}", f.app, f.env, parts.join(" "));
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_pairs_and_refuses_garbage() {
        assert_eq!(super::parse("web=3").unwrap(), ("web".to_string(), 3));
        assert!(super::parse("web").unwrap_err().to_string().contains("PROCESS=REPLICAS"));
        assert!(super::parse("web=-1").unwrap_err().to_string().contains("whole number"));
        assert!(super::parse("Web=1").is_err());
    }
}
