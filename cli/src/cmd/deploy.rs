//! `paas deploy`: packs and uploads the source (or names an image), then follows the deploy,
//! printing build output and rollout stages, and ends with the URL or the reason it failed.

use crate::args::{DeployArgs, Global, Output};
use crate::bundle;
use anyhow::Context;
use futures_util::stream;
use protocol::api::ReleaseStatus;
use protocol::{AppName, EnvName};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 * 1024;

pub async fn exec(g: &Global, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let (app, env) = (AppName::new(args.target.app.as_str())?, EnvName::new(args.target.env.as_str())?);
    let client = super::client(g)?;
    let human = g.output == Output::Text;
    let started = Instant::now();
    let release = match &args.image {
        Some(image) => {
            anyhow::ensure!(args.dir.is_none(), "give either a directory to build or --image, not both");
            client.deploy_image(app.as_str(), env.as_str(), image).await?
        }
        None => {
            let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let b = bundle::pack(&dir)?;
            let total = b.bytes.len();
            if human {
                eprint!("-----> Uploading {} ({} files, {})", dir.display(), b.files, human_bytes(total));
            }
            let body = upload_body(b.bytes, human);
            let release = client.deploy_source(app.as_str(), env.as_str(), body).await;
            if human {
                eprintln!();
            }
            release?
        }
    };
    if human {
        eprintln!("-----> Release v{} of {app}/{env}", release.version);
    }
    if args.detach {
        crate::output::emit(g.output, &release, |r| println!("Deploy of v{} started", r.version))?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut after = 0;
    loop {
        let page = client
            .deploy_events(app.as_str(), env.as_str(), release.version, after, Duration::from_secs(30))
            .await
            .context("following the deploy")?;
        after = page.next;
        if human {
            for ev in &page.events {
                match ev.kind.as_str() {
                    "build" => eprintln!("       {}", ev.text),
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
fn upload_body(bytes: Vec<u8>, progress: bool) -> reqwest::Body {
    let total = bytes.len();
    let data = bytes::Bytes::from(bytes);
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
