//! `paas cron list`: an environment's scheduled jobs, their next run and how the last one went.

use crate::args::{CronCommand, Global};
use crate::output::{ago, emit, printable, table};
use protocol::api::CronStatus;
use std::process::ExitCode;

pub async fn exec(g: &Global, cmd: CronCommand) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    match cmd {
        CronCommand::List { target } => {
            let (app, env) = (target.app.as_str(), target.env.as_str());
            let jobs = client.cron_list(app, env).await?;
            emit(g.output, &jobs, |jobs| {
                if jobs.is_empty() {
                    println!(
                        "{app}/{env} has no scheduled jobs. Add [cron.NAME] with a schedule and a command to paas.toml and deploy."
                    );
                    return;
                }
                table(&["NAME", "SCHEDULE (UTC)", "COMMAND", "NEXT RUN", "LAST RUN"], jobs, |j| {
                    vec![
                        j.name.clone(),
                        j.schedule.clone(),
                        printable(&j.command.join(" ")),
                        j.next_run.as_deref().map(ago).unwrap_or_else(|| "never".into()),
                        last_run(j),
                    ]
                });
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `succeeded 3 min ago`, `failed 1 h ago (exit code 2)`, `running since 12 s ago`, `-`.
fn last_run(j: &CronStatus) -> String {
    let Some(r) = &j.last_run else { return "-".into() };
    let when = ago(&r.started_at);
    match (r.status.as_str(), r.exit_code, &r.error) {
        ("running", _, _) => format!("running, started {when}"),
        ("failed", _, Some(e)) => format!("failed {when}: {}", printable(e)),
        ("failed", Some(code), None) => format!("failed {when} (exit code {code})"),
        (status, _, _) => format!("{status} {when}"),
    }
}
