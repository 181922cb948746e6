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
                        printable(&shell_words(&j.command)),
                        j.next_run.as_deref().map(ago).unwrap_or_else(|| "never".into()),
                        last_run(j),
                    ]
                });
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The command as a shell would take it: `sh -c 'echo hi'`.
fn shell_words(argv: &[String]) -> String {
    let plain =
        |a: &str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    let word = |a: &String| if plain(a) { a.clone() } else { format!("'{}'", a.replace('\'', "'\\''")) };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
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

#[cfg(test)]
mod tests {
    #[test]
    fn commands_read_as_a_shell_would_take_them() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(super::shell_words(&argv(&["python3", "job.py", "--n=2"])), "python3 job.py --n=2");
        assert_eq!(super::shell_words(&argv(&["sh", "-c", "echo it's"])), "sh -c 'echo it'\\''s'");
        assert_eq!(super::shell_words(&argv(&["echo", ""])), "echo ''");
    }
}
