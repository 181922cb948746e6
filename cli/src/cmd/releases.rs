//! `paas releases [info N]`: an environment's release history (`info::releases`), or one
//! release whole with its build and deploy output.

use crate::args::{AppEnv, Global, Output, ReleasesArgs, ReleasesCommand};
use protocol::api::{DeployEvent, Release};
use std::process::ExitCode;
use std::time::Duration;

pub async fn exec(g: &Global, args: ReleasesArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => {
            let Some(app) = args.app else {
                anyhow::bail!("give the app with --app APP (or run this inside a directory linked to one)");
            };
            super::info::releases(g, AppEnv { app, env: args.env }).await
        }
        Some(ReleasesCommand::Info { version, target }) => info(g, &version, target).await,
    }
}

/// `3` or `v3`.
fn version_number(text: &str) -> anyhow::Result<u32> {
    let digits = text.strip_prefix('v').unwrap_or(text);
    match digits.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => anyhow::bail!(
            "{text:?} is not a release version; give its number, like 3 or v3 (see `paas releases`)"
        ),
    }
}

async fn info(g: &Global, version: &str, t: AppEnv) -> anyhow::Result<ExitCode> {
    let version = version_number(version)?;
    protocol::AppName::new(t.app.as_str())?;
    protocol::EnvName::new(t.env.as_str())?;
    let client = super::client(g)?;
    let releases = client.releases(&t.app, &t.env).await?;
    let Some(release) = releases.into_iter().find(|r| r.version == version) else {
        anyhow::bail!("{}/{} has no release v{version}; `paas releases` lists them", t.app, t.env);
    };
    // Every page of its output, without waiting for more.
    let (mut output, mut after) = (Vec::new(), 0);
    loop {
        let page = client.deploy_events(&t.app, &t.env, version, after, Duration::ZERO).await?;
        if page.events.is_empty() {
            break;
        }
        after = page.next;
        output.extend(page.events);
    }
    match g.output {
        Output::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "release": release, "output": output }))?
            )
        }
        Output::Text => print_release(&release, &output),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_release(r: &Release, output: &[DeployEvent]) {
    println!("Release v{} of {}/{}: {}", r.version, r.app, r.env, r.status.as_str());
    println!("Description:  {}", r.description);
    println!("Created:      {} ({}) by {}", r.created_at, crate::output::ago(&r.created_at), r.created_by);
    println!("Source:       {}", r.source);
    println!("Image:        {}", r.image_id.as_deref().unwrap_or("- (not built)"));
    let keys = if r.config_keys.is_empty() { "(none)".to_string() } else { r.config_keys.join(", ") };
    println!("Config keys:  {keys}");
    if let Some(e) = &r.error {
        println!("Error:");
        for line in e.lines() {
            println!("  {}", crate::output::printable(line));
        }
    }
    println!("Settings (the manifest this release runs, defaults filled in):");
    let manifest = toml::to_string(&r.manifest)
        .unwrap_or_else(|_| serde_json::to_string_pretty(&r.manifest).unwrap_or_default());
    for line in manifest.lines() {
        println!("  {line}");
    }
    if output.is_empty() {
        println!("Output: none kept");
        return;
    }
    println!("Output (build and deploy):");
    for e in output {
        let text = crate::output::printable(&e.text);
        match e.kind.as_str() {
            "build" | "release" => println!("  {text}"),
            _ => println!("  -----> {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_numbers_with_or_without_a_v() {
        assert_eq!(super::version_number("3").unwrap(), 3);
        assert_eq!(super::version_number("v12").unwrap(), 12);
        for bad in ["", "v", "0", "three", "-1", "v3.1"] {
            let e = super::version_number(bad).unwrap_err().to_string();
            assert!(e.contains("like 3 or v3"), "{bad:?}: {e}");
        }
    }
}
