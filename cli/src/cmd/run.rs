//! `paas run --app A -- CMD ARGS`: a one-off container of the current release; its output
//! streams here and its exit code becomes ours.

use crate::args::{Global, RunArgs};
use anyhow::Context;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

pub async fn exec(g: &Global, args: RunArgs) -> anyhow::Result<ExitCode> {
    protocol::AppName::new(args.target.app.as_str())?;
    protocol::EnvName::new(args.target.env.as_str())?;
    let client = super::client(g)?;
    let (app, env) = (args.target.app.as_str(), args.target.env.as_str());
    let started = client.run(app, env, args.command).await?;
    let mut after = 0;
    loop {
        let page = client
            .run_output(app, env, &started.id, after, Duration::from_secs(30))
            .await
            .context("following the run")?;
        after = page.next;
        let mut out = std::io::stdout().lock();
        for line in &page.lines {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        if page.finished {
            if let Some(e) = page.error {
                anyhow::bail!("the command could not run: {e}");
            }
            let code = page.exit_code.unwrap_or(1);
            // Exit codes outside 0..=255 (signals, Docker's -1) map to a plain failure.
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
    }
}
