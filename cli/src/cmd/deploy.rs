//! `paas deploy`: packs and uploads the source (or names an image), then follows the deploy,
//! printing build output and rollout stages, and ends with the URL or the reason it failed.

use crate::args::{AppEnv, DeployArgs, Global, Output, RestartArgs, RollbackArgs};
use crate::bundle;
use anyhow::Context;
use futures_util::stream;
use protocol::api::{Release, ReleaseStatus};
use protocol::manifest;
use protocol::{AppName, EnvName};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;

pub async fn exec(g: &Global, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let (app, env) = (AppName::new(args.target.app.as_str())?, EnvName::new(args.target.env.as_str())?);
    let client = super::client(g)?;
    let human = g.output == Output::Text;
    let started = Instant::now();
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    // Checked here so a bad manifest fails before any upload; the server checks it again.
    let mut text = read_manifest_text(&dir)?;
    if let Some(spec) = &args.health_check {
        text = Some(with_health_check(text.as_deref().unwrap_or(""), spec)?);
    }
    if let Some(t) = &text {
        manifest::parse(t, env.as_str())?;
    }
    // A bad token, or an app or environment that is not there, is told before any packing or
    // upload (a source tree can take a while to send).
    let known = client.get_app(app.as_str()).await?;
    anyhow::ensure!(
        known.envs.iter().any(|e| e.name == env.as_str()),
        "app {:?} has no environment named {:?}; see `paas envs list --app {app}`",
        app.as_str(),
        env.as_str()
    );
    let replaced = args.health_check.as_ref().and(text.as_deref());
    let release = match &args.image {
        Some(image) => {
            let image = image.clone();
            start(args.wait, human, || client.deploy_image(app.as_str(), env.as_str(), &image, text.clone()))
                .await?
        }
        None => {
            let b = bundle::pack(&dir, replaced)?;
            let bytes = bytes::Bytes::from(b.bytes);
            start(args.wait, human, || {
                if human {
                    eprint!(
                        "-----> Uploading {} ({} files, {})",
                        dir.display(),
                        b.files,
                        human_bytes(bytes.len())
                    );
                }
                let body = upload_body(bytes.clone(), human);
                let (client, app, env) = (&client, &app, &env);
                async move {
                    let r = client.deploy_source(app.as_str(), env.as_str(), body).await;
                    if human {
                        eprintln!();
                    }
                    r
                }
            })
            .await?
        }
    };
    if args.detach {
        crate::output::emit(g.output, &release, |r| println!("Deploy of v{} started", r.version))?;
        return Ok(ExitCode::SUCCESS);
    }
    follow(g, &client, &release, started).await
}

pub async fn rollback(g: &Global, args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let to = match &args.to {
        Some(v) => Some(
            v.trim_start_matches('v')
                .parse::<u32>()
                .map_err(|_| anyhow::anyhow!("--to {v:?} is not a release version like 3 or v3"))?,
        ),
        None => None,
    };
    again(g, &args.target, args.wait, |c, app, env| async move { c.rollback(&app, &env, to).await }).await
}

pub async fn restart(g: &Global, args: RestartArgs) -> anyhow::Result<ExitCode> {
    if let Some(process) = &args.process {
        return restart_process(g, &args.target, process).await;
    }
    again(g, &args.target, args.wait, |c, app, env| async move { c.restart(&app, &env).await }).await
}

/// `paas restart --process P`: answers once every replica of P was replaced.
async fn restart_process(g: &Global, target: &AppEnv, process: &str) -> anyhow::Result<ExitCode> {
    protocol::names::check_process(process)?;
    let (app, env) = (AppName::new(target.app.as_str())?, EnvName::new(target.env.as_str())?);
    let client = super::client(g)?;
    let started = Instant::now();
    if g.output == Output::Text {
        eprintln!("Restarting {process} of {app}/{env}, one replica at a time...");
    }
    let done = client.restart_process(app.as_str(), env.as_str(), process).await?;
    crate::output::emit(g.output, &done, |d| {
        println!(
            "Restarted {} replica(s) of {} in v{} of {}/{} ({:.1}s): {}",
            d.replaced.len(),
            d.process,
            d.release,
            d.app,
            d.env,
            started.elapsed().as_secs_f64(),
            d.replaced.join(", ")
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A release made by the server from an existing one (rollback, restart), followed like a deploy.
async fn again<F, Fut>(g: &Global, target: &AppEnv, wait: bool, call: F) -> anyhow::Result<ExitCode>
where
    F: Fn(protocol::Client, String, String) -> Fut,
    Fut: std::future::Future<Output = Result<Release, protocol::ClientError>>,
{
    let (app, env) = (AppName::new(target.app.as_str())?, EnvName::new(target.env.as_str())?);
    let client = super::client(g)?;
    let started = Instant::now();
    let human = g.output == Output::Text;
    let release =
        start(wait, human, || call(client.clone(), app.as_str().to_string(), env.as_str().to_string()))
            .await?;
    follow(g, &client, &release, started).await
}

/// The text of `dir`'s `paas.toml`, if there is one.
fn read_manifest_text(dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dir.join("paas.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `paas.toml` with the web process's probe replaced by `--health-check SPEC`; its interval,
/// timeout and thresholds stay as written.
fn with_health_check(text: &str, spec: &str) -> anyhow::Result<String> {
    let mut doc: toml::Table =
        toml::from_str(text).map_err(|e| anyhow::anyhow!("paas.toml: {}", e.message()))?;
    let mut probe = toml::Table::new();
    match spec.split_once(':') {
        Some(("http", path)) => {
            probe.insert("type".into(), "http".into());
            probe.insert("path".into(), path.into());
        }
        Some(("command", cmd)) if !cmd.trim().is_empty() => {
            let argv: Vec<toml::Value> = cmd.split_whitespace().map(|a| a.into()).collect();
            probe.insert("type".into(), "command".into());
            probe.insert("command".into(), argv.into());
        }
        None if spec == "tcp" => {
            probe.insert("type".into(), "tcp".into());
        }
        _ => anyhow::bail!("--health-check {spec:?} is not `http:/PATH`, `tcp` or `command:CMD ARGS`"),
    }
    fn table<'a>(parent: &'a mut toml::Table, key: &str) -> anyhow::Result<&'a mut toml::Table> {
        parent
            .entry(key)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("paas.toml: `{key}` must be a table"))
    }
    let health = table(table(table(&mut doc, "processes")?, "web")?, "healthcheck")?;
    for key in ["type", "path", "command", "expect_status"] {
        health.remove(key);
    }
    health.extend(probe);
    Ok(toml::to_string(&doc)?)
}

/// Starts a release; with `wait`, retries while another deploy of the environment runs.
pub(super) async fn start<F, Fut>(wait: bool, human: bool, mut call: F) -> anyhow::Result<Release>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Release, protocol::ClientError>>,
{
    let mut told = false;
    loop {
        match call().await {
            Err(e) if wait && e.status == Some(409) && e.message.contains("in progress") => {
                if human && !told {
                    eprintln!("-----> {}; waiting", e.message.split(';').next().unwrap_or(&e.message));
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => {
                let release = other?;
                if human {
                    eprintln!(
                        "-----> Release v{} of {}/{}: {}",
                        release.version, release.app, release.env, release.description
                    );
                }
                return Ok(release);
            }
        }
    }
}

/// Streams the deploy's progress until it ends; the exit code says how it ended.
pub(super) async fn follow(
    g: &Global,
    client: &protocol::Client,
    release: &Release,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let human = g.output == Output::Text;
    let (app, env) = (release.app.as_str(), release.env.as_str());
    let mut after = 0;
    loop {
        let page = client
            .deploy_events(app, env, release.version, after, Duration::from_secs(30))
            .await
            .context("following the deploy")?;
        after = page.next;
        if human {
            for ev in &page.events {
                match ev.kind.as_str() {
                    "build" | "release" => eprintln!("       {}", ev.text),
                    "stage" => eprintln!("-----> {}", ev.text),
                    _ => {}
                }
            }
        }
        if page.release.status.is_finished() && page.events.is_empty() {
            let r = page.release;
            if r.status == ReleaseStatus::Failed {
                let why = r.error.clone().unwrap_or_else(|| "the deploy failed".into());
                if g.output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                }
                anyhow::bail!("deploy of {app}/{env} v{} failed: {why}", r.version);
            }
            let secs = started.elapsed().as_secs_f64();
            crate::output::emit(g.output, &r, |r| {
                println!("Release v{} of {app}/{env} is live at {} ({secs:.1}s)", r.version, page.url)
            })?;
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// The upload as a stream of chunks, printing progress dots as they go out.
fn upload_body(data: bytes::Bytes, progress: bool) -> reqwest::Body {
    let total = data.len();
    let chunks: Vec<bytes::Bytes> =
        (0..total).step_by(CHUNK).map(|i| data.slice(i..(i + CHUNK).min(total))).collect();
    let n = chunks.len();
    let stream = stream::iter(chunks.into_iter().enumerate().map(move |(i, c)| {
        if progress && (i + 1 == n || (i + 1) % 16 == 0) {
            eprint!(" {}%", (i + 1) * 100 / n);
            let _ = std::io::stderr().flush();
        }
        Ok::<_, std::io::Error>(c)
    }));
    reqwest::Body::wrap_stream(stream)
}

fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::with_health_check;
    use protocol::manifest::{parse, Probe};

    #[test]
    fn the_flag_replaces_only_the_probe() {
        let text = "[processes.web]\nreplicas = 2\nhealthcheck = { path = \"/old\", interval = \"5s\" }\n";
        let m = parse(&with_health_check(text, "http:/new").unwrap(), "production").unwrap();
        let web = m.web().unwrap();
        assert_eq!(web.healthcheck.probe, Probe::Http { path: "/new".into(), expect_status: None });
        assert_eq!((web.replicas, web.healthcheck.interval_ms), (2, 5000));
        let m = parse(&with_health_check("", "command:pg_isready -q").unwrap(), "production").unwrap();
        assert_eq!(
            m.web().unwrap().healthcheck.probe,
            Probe::Command { command: vec!["pg_isready".into(), "-q".into()] }
        );
        assert!(with_health_check("", "ping").is_err());
    }
}
