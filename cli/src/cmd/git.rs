//! `paas git-remote` (the URL to push to) and `paas git-hook`, the pre-receive hook the control
//! plane installs in each app repository: it deploys pushed branches and prints the progress,
//! which git relays to the pusher as `remote:` lines; a failed deploy rejects the push.

use crate::args::{Global, Output};
use anyhow::Context;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::Instant;

pub async fn remote(g: &Global, app: &str) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    client.get_app(app).await?;
    let url = format!("{}/git/{app}.git", client.base());
    crate::output::emit(g.output, &serde_json::json!({ "url": url }), |_| {
        println!("{url}");
        eprintln!("git remote add paas {url}   # push `main` to deploy production, `<env>` to deploy that environment");
        eprintln!("git asks for a password: give your API token (any user name)");
    })?;
    Ok(ExitCode::SUCCESS)
}

const ZERO: &str = "0000000000000000000000000000000000000000";

pub async fn hook() -> anyhow::Result<ExitCode> {
    let var = |k: &str| {
        std::env::var(k)
            .with_context(|| format!("{k} is not set; this command is run by git on the paas server"))
    };
    let (server, token, app) = (var("PAAS_HOOK_SERVER")?, var("PAAS_HOOK_TOKEN")?, var("PAAS_HOOK_APP")?);
    // Under --api-tls the hook trusts the local CA the server's certificate comes from.
    let ca = std::env::var_os("PAAS_HOOK_CA_FILE").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let client = super::client_for(&server, &token, ca.as_ref())?;
    let envs: Vec<String> = client.get_app(&app).await?.envs.into_iter().map(|e| e.name).collect();
    let updates: Vec<(String, String, String)> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let mut parts = l.split_whitespace().map(str::to_string);
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect();
    let g =
        crate::args::Global { server: None, token: None, config: None, ca_file: None, output: Output::Text };
    let mut code = ExitCode::SUCCESS;
    for (_old, new, refname) in updates {
        let Some(branch) = refname.strip_prefix("refs/heads/") else { continue };
        let env = match branch {
            "main" | "master" => protocol::PRODUCTION.to_string(),
            b if envs.iter().any(|e| e == b) => b.to_string(),
            b => {
                println!("-----> Branch {b} stored; push `main` or an environment's name to deploy");
                continue;
            }
        };
        if new == ZERO {
            println!("-----> Branch {branch} deleted; {app}/{env} keeps running");
            continue;
        }
        println!("-----> Deploying {branch} ({}) to {app}/{env}", &new[..new.len().min(12)]);
        let started = Instant::now();
        let archive = Archive::of(&new)?;
        let file = tokio::fs::File::open(&archive.0).await.context("reading the archive")?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let release = match client.deploy_source(&app, &env, body).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                code = ExitCode::FAILURE;
                break;
            }
        };
        eprintln!("-----> Release v{} of {app}/{env}: deploy of {branch}", release.version);
        match super::deploy::follow(&g, &client, &release, started).await {
            Ok(c) if c == ExitCode::SUCCESS => {}
            Ok(c) => code = c,
            Err(e) => {
                eprintln!("error: {}", crate::output::error_sentence(&e));
                eprintln!("The push is rejected; {app}/{env} keeps running its previous release.");
                code = ExitCode::FAILURE;
                break;
            }
        }
    }
    Ok(code)
}

/// A pushed revision as a tar.gz in a temporary file (removed on drop), so a large push is
/// streamed to the server rather than held in memory.
struct Archive(std::path::PathBuf);

impl Archive {
    fn of(rev: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("paas-push-{}-{rev}.tar.gz", std::process::id()));
        let mut open = std::fs::OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let file = open.open(&path).with_context(|| format!("creating {}", path.display()))?;
        let archive = Self(path);
        // The pushed objects are in git's quarantine, which this process's environment points at.
        let out = std::process::Command::new("git")
            .args(["archive", "--format=tar.gz", rev])
            .stdout(file)
            .stderr(std::process::Stdio::piped())
            .output()
            .context("running git archive")?;
        if !out.status.success() {
            anyhow::bail!("git archive failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(archive)
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
