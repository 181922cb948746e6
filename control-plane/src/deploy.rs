//! Deploy orchestration: one task per release walks it from build to serving (or to failed),
//! blue/green: new replicas start beside the old ones, must all pass their health checks and
//! stay up through the stability window, then the ingress switches and the old ones drain.

use crate::assign;
use crate::state::AppState;
use crate::store::{InstanceRow, JobKind, JobRow, JobStatus, NewEvent};
use protocol::api::{Release, ReleaseStatus};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Longest a build may run before the deploy gives up on it.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long ingress nodes get to extract a new release's static files.
const STATIC_EXTRACTION: Duration = Duration::from_secs(60);
/// Longest a release command (a migration, say) may run.
const RELEASE_PHASE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Lines of a failed release command's output shown in the deploy error.
const RELEASE_FAILURE_LINES: u32 = 20;
/// How long the end of a stability window waits for the agents' next observation.
const FRESH_REPORT: Duration = Duration::from_secs(15);
/// What failure messages say about the release that was serving; a first deploy's failure says
/// [`NOTHING_SERVED`] instead (see `supervise`).
const KEEPS_SERVING: &str = "the old release keeps serving";
const NOTHING_SERVED: &str = "nothing served before it";

/// A new replica that restarted this often while the deploy waits is crash-looping.
const CRASH_LOOP_RESTARTS: u32 = 3;

/// Ends a deploy that cannot go on (an error, a panic, shutdown, a restart): once the switch
/// happened the release serves, so it is finished (active, the others retired); before it, the
/// release fails with `why` and its containers go, the served release untouched. Either way the
/// environment leaves `deploying`, so the next deploy runs.
pub async fn settle(
    state: &AppState,
    app: &str,
    env: &str,
    version: u32,
    why: &str,
) -> anyhow::Result<ReleaseStatus> {
    let status = if state.store.get_env(app, env).await?.current_release == Some(version) {
        state.store.retire_others(app, env, version).await?;
        state.store.set_release_status(app, env, version, ReleaseStatus::Active, None).await?;
        ReleaseStatus::Active
    } else {
        state.store.abort_rollout(app, env, version, why).await?;
        ReleaseStatus::Failed
    };
    state.bump();
    Ok(status)
}

/// Settles deploys a previous run left unfinished (killed, or shut down before they ended).
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
    for r in state.store.unfinished_releases().await? {
        let why = "the control plane restarted during this deploy; deploy again";
        let status = settle(state, &r.app, &r.env, r.version, why).await?;
        tracing::warn!(app = %r.app, env = %r.env, release = r.version, status = status.as_str(), "settled a deploy the last run left unfinished");
        if status == ReleaseStatus::Failed {
            state.deploy_event(&r.app, &r.env, r.version, "error", &[why.to_string()]).await;
            milestone(state, &r.app, &r.env, r.version, &r.description, Err(why)).await;
        }
    }
    Ok(())
}

/// How a deploy task ended.
enum Ending {
    Live,
    Failed(String),
    /// The control plane is shutting down.
    Stopped,
}

/// The text of a panic, for the release's error.
fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string()),
        Err(e) => e.to_string(),
    }
}

/// Drives a freshly created release to the end; spawned by the deploy handlers.
pub fn spawn(state: AppState, release: Release) {
    let span =
        tracing::info_span!("deploy", app = %release.app, env = %release.env, release = release.version);
    let work = {
        let (state, release) = (state.clone(), release.clone());
        tokio::spawn(async move { run(&state, &release).await }.instrument(span.clone()))
    };
    state.clone().spawn(supervise(state, release, work).instrument(span));
}

/// Watches a deploy's work, which runs in a task of its own, so whatever ends it (an error, a
/// panic, shutdown) is seen here and the release is settled: the environment never stays
/// `deploying`.
async fn supervise(state: AppState, release: Release, mut work: JoinHandle<anyhow::Result<()>>) {
    let (app, env, version) = (release.app.as_str(), release.env.as_str(), release.version);
    let stop = state.shutting_down();
    let ending = tokio::select! {
        joined = &mut work => match joined {
            Ok(Ok(())) => Ending::Live,
            Ok(Err(e)) => Ending::Failed(format!("{e:#}")),
            Err(e) => Ending::Failed(format!("the deploy stopped on an internal error ({}); deploy again", panic_text(e))),
        },
        _ = stop.cancelled() => {
            // Settled only once the work has stopped, so no write of it lands after.
            work.abort();
            let _ = (&mut work).await;
            Ending::Stopped
        }
    };
    let why = match ending {
        Ending::Live => {
            tracing::info!("release is live");
            milestone(&state, app, env, version, &release.description, Ok(())).await;
            state.events_changed();
            return;
        }
        Ending::Failed(msg) => msg,
        Ending::Stopped => "the control plane shut down during this deploy; deploy again".to_string(),
    };
    // A first deploy had no release serving before it.
    let why = match state.store.get_env(app, env).await {
        Ok(row) if row.current_release.is_none() => why.replace(KEEPS_SERVING, NOTHING_SERVED),
        _ => why,
    };
    tracing::warn!(error = %why, "deploy failed");
    // The store may be briefly busy; the environment must not stay `deploying`.
    for attempt in 1..=5u64 {
        match settle(&state, app, env, version, &why).await {
            Ok(ReleaseStatus::Active) => {
                tracing::info!("the release had switched already; it stays live");
                milestone(&state, app, env, version, &release.description, Ok(())).await;
                break;
            }
            Ok(_) => {
                state.deploy_event(app, env, version, "error", std::slice::from_ref(&why)).await;
                milestone(&state, app, env, version, &release.description, Err(&why)).await;
                break;
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), attempt, "recording the failed deploy failed");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
    state.events_changed();
}

/// What a deploy is called in its platform events: `Deploy v3`, `Rollback to v2 (v5)`; the
/// long form says what it deploys (`Deploy v3 of image shop:1`, `Deploy v4 (Set KEY)`).
fn deploy_name(version: u32, description: &str, long: bool) -> String {
    if let Some(to) = description.strip_prefix("Rollback to ") {
        return format!("Rollback to {to} (v{version})");
    }
    match (long, description.strip_prefix("Deploy of ")) {
        (false, _) => format!("Deploy v{version}"),
        (true, Some(what)) => format!("Deploy v{version} of {what}"),
        (true, None) if description.is_empty() => format!("Deploy v{version}"),
        (true, None) => format!("Deploy v{version} ({description})"),
    }
}

/// The platform event of a deploy that started (by `user`).
pub async fn started(state: &AppState, release: &Release) {
    let (app, env, version) = (release.app.as_str(), release.env.as_str(), release.version);
    let name = deploy_name(version, &release.description, true);
    let message = format!("{name} started by {}", release.created_by);
    state
        .record_event(
            &NewEvent::new(app, env, kind(&release.description, "started"), &message).release(version),
        )
        .await;
}

/// The platform event of a deploy that ended: live, or failed with the first sentence of why
/// (the rest, the app's last lines, is in the deploy's own output).
async fn milestone(
    state: &AppState,
    app: &str,
    env: &str,
    version: u32,
    description: &str,
    ended: Result<(), &str>,
) {
    let name = deploy_name(version, description, false);
    let (what, severity, message) = match ended {
        Ok(()) => ("live", "info", format!("{name} is live")),
        Err(why) => ("failed", "warning", format!("{name} failed: {}", first_sentence(why))),
    };
    let event = NewEvent::new(app, env, kind(description, what), &message).severity(severity);
    state.record_event(&event.release(version)).await;
}

fn kind(description: &str, what: &str) -> &'static str {
    match (description.starts_with("Rollback to "), what) {
        (true, "started") => "rollback.started",
        (true, "live") => "rollback.live",
        (true, _) => "rollback.failed",
        (false, "started") => "deploy.started",
        (false, "live") => "deploy.live",
        (false, _) => "deploy.failed",
    }
}

/// The first sentence of a deploy's error, which may go on with the app's last log lines.
fn first_sentence(why: &str) -> String {
    let line = why.lines().next().unwrap_or_default().trim();
    let sentence = match line.find(". ") {
        Some(end) => &line[..=end],
        None => line.trim_end_matches(':'),
    };
    let mut s: String = sentence.chars().take(300).collect();
    if s.len() < sentence.len() {
        s.push('…');
    }
    s
}

async fn run(state: &AppState, release: &Release) -> anyhow::Result<()> {
    let (app, env, version) = (release.app.as_str(), release.env.as_str(), release.version);
    let stage = |text: String| async move { state.deploy_event(app, env, version, "stage", &[text]).await };

    let image = wait_for_image(state, release).await?;
    stage(format!("Image {} ready", short_id(&image))).await;

    if let Some(command) = &release.manifest.release_command {
        stage(format!("Running the release command: {}", command.join(" "))).await;
        release_phase(state, release, command).await?;
        stage("The release command succeeded".to_string()).await;
    }

    // A scale that lands while the replicas are placed changes their number: place again.
    let (instances, serving) = loop {
        let env_row = state.store.get_env(app, env).await?;
        let mut instances = Vec::new();
        for process in release.manifest.processes.keys() {
            let n = env_row.replicas(&release.manifest, process);
            instances.extend(assign::place(state, &env_row, process, version, 1..=n).await?);
        }
        anyhow::ensure!(!instances.is_empty(), "the release has no replicas to run; scale a process above 0");
        if state.store.start_rollout(app, env, version, &env_row.formation, &instances).await? {
            break (instances, env_row.current_release);
        }
    };
    state.bump_nodes(&env_nodes(state, release).await?, &[(app.to_string(), env.to_string())]);
    // A first deploy has no running release to start beside or to drain.
    let beside = match serving {
        Some(v) => format!(" beside v{v}, which keeps serving"),
        None => String::new(),
    };
    stage(format!("Starting {} replica(s) of v{version}{beside}", instances.len())).await;

    let settings = &release.manifest.deploy;
    wait_healthy(state, release, instances.len(), settings.timeout()).await?;
    let window = settings.stability_window();
    if !window.is_zero() {
        stage(format!("All replicas of v{version} are healthy; watching them for {}s", window.as_secs_f64()))
            .await;
        stay_healthy(state, release, instances.len(), window).await?;
    }
    // Static files must be servable by every ingress before they route to the new release.
    let ingress = assign::ingress_nodes(state).await?;
    if let Some(st) = assign::static_route(&state.store.get_release(app, env, version).await?) {
        let late = state.wait_static(&ingress, &st.key(), STATIC_EXTRACTION).await;
        anyhow::ensure!(
            late.is_empty(),
            "ingress node(s) {} could not extract the static files {} from the image; does that directory exist?",
            late.join(", "),
            st.dir
        );
    }
    stage(format!("Switching traffic to v{version}")).await;

    let kept = kept_images(state, app, env).await?;
    state.store.switch_release(app, env, version).await?;
    // The old replicas are unassigned (and start draining) only once every ingress routes to
    // the new ones, and the release is reported live only then, so the first request after
    // `paas deploy` returns reaches the new release.
    let late = assign::publish_routes(state).await?;
    if !late.is_empty() {
        stage(format!("Ingress node(s) {} have not confirmed the switch yet", late.join(", "))).await;
    }
    let nodes = env_nodes(state, release).await?;
    let retired = state.store.retire_others(app, env, version).await?;
    state.store.set_release_status(app, env, version, ReleaseStatus::Active, None).await?;
    // The nodes of the retired replicas, and, when the images the environment keeps changed
    // (a redeploy: the release before the last one is no longer kept), every node that runs or
    // built it. A first deploy changes neither for the nodes of its new replicas: they are not
    // woken again just to find their assignments unchanged.
    let woken = if kept_images(state, app, env).await? == kept { retired } else { nodes };
    state.bump_nodes(&woken, &[(app.to_string(), env.to_string())]);
    let after = match serving {
        Some(v) => format!("; v{v} drains and stops"),
        None => String::new(),
    };
    stage(format!("v{version} serves{after}")).await;
    Ok(())
}

/// The nodes whose assignments a step of this release's rollout can change: those running a
/// replica of its environment (their containers, the images they keep) and its build node
/// (the images it is asked to send).
async fn env_nodes(state: &AppState, release: &Release) -> anyhow::Result<Vec<String>> {
    let (app, env, version) = (&release.app, &release.env, release.version);
    let builder = state.store.build_node(app, env, version).await?;
    let instances = state.store.instances_for_env(app, env).await?;
    let mut nodes: Vec<String> = instances.into_iter().map(|i| i.node).chain(builder).collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// The images an environment keeps (`View::kept_for` hands them to its nodes).
async fn kept_images(state: &AppState, app: &str, env: &str) -> anyhow::Result<Vec<String>> {
    let all = state.store.kept_images_by_env().await?;
    let mut ids: Vec<String> =
        all.into_iter().filter(|(a, e, _)| a == app && e == env).map(|k| k.2).collect();
    ids.sort();
    Ok(ids)
}

/// Runs the release command once for this release (the job id is fixed per release, so retries
/// and restarts never run it twice) and waits for it.
async fn release_phase(state: &AppState, release: &Release, command: &[String]) -> anyhow::Result<()> {
    let (app, env, version) = (release.app.as_str(), release.env.as_str(), release.version);
    // `--` as in Docker names: app `a` env `b-c` and app `a-b` env `c` must not share a job.
    let id = format!("release-{app}--{env}-{version}");
    let job = JobRow {
        id: id.clone(),
        app: app.to_string(),
        env: env.to_string(),
        release: version,
        node: assign::build_node(state).await?,
        kind: JobKind::Release,
        command: command.to_vec(),
        status: JobStatus::Pending,
        exit_code: None,
        error: None,
        attach_tty: None,
    };
    state.store.create_job(&job, &release.created_by).await?;
    state.bump();
    let deadline = Instant::now() + RELEASE_PHASE_TIMEOUT;
    let job = loop {
        let seen = state.index();
        let job = state.store.get_job(&id).await?;
        if job.done() {
            break job;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "the release command did not finish within {} minutes",
            RELEASE_PHASE_TIMEOUT.as_secs() / 60
        );
        state.wait_env_past(&release.app, &release.env, seen, left.min(Duration::from_secs(5))).await;
    };
    match (job.exit_code, job.error) {
        (Some(0), _) => Ok(()),
        (code, error) => {
            // The command's own last lines (masked by the agent), however much it printed.
            let lines = state.store.job_output_tail(&id, RELEASE_FAILURE_LINES).await?;
            let tail =
                if lines.is_empty() { "(the command printed nothing)".to_string() } else { lines.join("\n") };
            let why = match (code, error) {
                (Some(c), _) => format!("the release command exited with {c}"),
                (None, Some(e)) => format!("the release command could not run: {e}"),
                (None, None) => "the release command failed".to_string(),
            };
            anyhow::bail!("{why}; the new release was not started and {KEEPS_SERVING}. Last lines:\n{tail}")
        }
    }
}

fn short_id(image: &str) -> &str {
    let id = image.strip_prefix("sha256:").unwrap_or(image);
    &id[..id.len().min(12)]
}

/// Waits for the node's build result and returns the image id.
async fn wait_for_image(state: &AppState, release: &Release) -> anyhow::Result<String> {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        let seen = state.index();
        let r = state.store.get_release(&release.app, &release.env, release.version).await?;
        if let Some(err) = r.error {
            anyhow::bail!("{err}");
        }
        if let Some(image) = r.image_id {
            return Ok(image);
        }
        if r.status != ReleaseStatus::Building {
            anyhow::bail!("the release was cancelled while building");
        }
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "the build did not finish within {} minutes",
            BUILD_TIMEOUT.as_secs() / 60
        );
        state.wait_env_past(&release.app, &release.env, seen, left.min(Duration::from_secs(5))).await;
    }
}

async fn release_instances(state: &AppState, r: &Release) -> anyhow::Result<Vec<InstanceRow>> {
    let all = state.store.instances_for_env(&r.app, &r.env).await?;
    let mine: Vec<_> = all.into_iter().filter(|i| i.release == r.version).collect();
    anyhow::ensure!(!mine.is_empty(), "the release's containers were removed while it was deploying");
    Ok(mine)
}

/// The failure message for a replica: what happened, then its last log lines.
fn explain(head: String, replica: &InstanceRow) -> anyhow::Error {
    let tail = if replica.log_tail.is_empty() {
        "(the container printed nothing)".to_string()
    } else {
        replica.log_tail.join("\n")
    };
    anyhow::anyhow!("{head}; {KEEPS_SERVING}. Last log lines of {}:\n{tail}", replica.name)
}

/// Waits until every new replica is healthy; fails on timeout or a crash loop.
async fn wait_healthy(state: &AppState, r: &Release, wanted: usize, timeout: Duration) -> anyhow::Result<()> {
    let (deadline, version) = (Instant::now() + timeout, r.version);
    loop {
        let seen = state.index();
        let mine = release_instances(state, r).await?;
        if mine.len() >= wanted && mine.iter().all(|i| i.healthy) {
            return Ok(());
        }
        if let Some(c) = mine.iter().find(|i| i.restarts >= CRASH_LOOP_RESTARTS) {
            return Err(explain(
                format!(
                    "release v{version} is crash-looping: {} exited and was restarted {} times",
                    c.process, c.restarts
                ),
                c,
            ));
        }
        if Instant::now() >= deadline {
            // Read once: a replica may have turned healthy or been removed since the check above.
            return Err(match mine.iter().find(|i| !i.healthy) {
                Some(worst) => explain(
                    format!(
                        "release v{version} did not pass its health check within {}s ({} replica {} is {})",
                        timeout.as_secs(),
                        worst.process,
                        worst.replica,
                        worst.state
                    ),
                    worst,
                ),
                None => anyhow::anyhow!(
                    "release v{version} has {} of its {wanted} replica(s) after {}s: the others were \
                     removed while it deployed; {KEEPS_SERVING}",
                    mine.len(),
                    timeout.as_secs()
                ),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        state.wait_env_past(&r.app, &r.env, seen, left.min(Duration::from_secs(2))).await;
    }
}

/// The stability window: every new replica must stay running and healthy, without restarts.
async fn stay_healthy(state: &AppState, r: &Release, wanted: usize, window: Duration) -> anyhow::Result<()> {
    let (deadline, version) = (Instant::now() + window, r.version);
    let window_end_ms = unix_ms() + window.as_millis() as u64;
    let start = release_instances(state, r).await?;
    let mut fresh = false;
    loop {
        let seen = state.index();
        let mine = release_instances(state, r).await?;
        let bad = mine.iter().find(|i| {
            let before = start.iter().find(|s| s.name == i.name).map_or(0, |s| s.restarts);
            !i.healthy || i.state != "running" || i.restarts > before
        });
        if let Some(b) = bad.or(if mine.len() < wanted { mine.first() } else { None }) {
            return Err(explain(
                format!(
                    "release v{version} failed during the {}s stability window: {} replica {} is {}{}",
                    window.as_secs_f64(),
                    b.process,
                    b.replica,
                    b.state,
                    if b.healthy { "" } else { " and unhealthy" }
                ),
                b,
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if fresh {
                return Ok(());
            }
            // A busy node may not have looked yet: judge the window only on what the agents
            // saw after it ended, so a crash late in the window is not missed.
            let mut nodes: Vec<String> = mine.iter().map(|i| i.node.clone()).collect();
            nodes.sort();
            nodes.dedup();
            let late = state.observed.wait_all(&nodes, window_end_ms, FRESH_REPORT).await;
            anyhow::ensure!(
                late.is_empty(),
                "node(s) {} did not report on release v{version} after its stability window",
                late.join(", ")
            );
            fresh = true;
            continue;
        }
        state.wait_env_past(&r.app, &r.env, seen, left.min(Duration::from_millis(500))).await;
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewRelease;

    async fn new_release(state: &AppState) -> Release {
        let new = NewRelease {
            source: "build".into(),
            created_by: "test".into(),
            build_node: "n1".into(),
            manifest: Default::default(),
            description: String::new(),
            image_id: None,
            config: Vec::new(),
            config_keys: Vec::new(),
            manifest_text: String::new(),
        };
        state.store.create_release("shop", "production", &new).await.unwrap()
    }

    /// Waits until the release has left `building`/`deploying`.
    async fn settled(state: &AppState, version: u32) -> Release {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = state.store.get_release("shop", "production", version).await.unwrap();
            if !matches!(r.status, ReleaseStatus::Building | ReleaseStatus::Deploying) {
                return r;
            }
            assert!(Instant::now() < deadline, "release v{version} stayed {:?}", r.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_deploy_that_panics_fails_its_release_and_the_next_deploy_runs() {
        let (state, dir) = AppState::for_tests().await;
        let r = new_release(&state).await;
        let work = tokio::spawn(async { panic!("a bug in the deploy") });
        state.spawn(supervise(state.clone(), r.clone(), work));
        let r = settled(&state, r.version).await;
        assert_eq!(r.status, ReleaseStatus::Failed);
        let why = r.error.unwrap();
        assert!(why.contains("internal error (a bug in the deploy)"), "{why}");
        // The central log hears of it, in one sentence.
        // Recorded just after the release's status: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let failed = loop {
            let events = state.store.event_rows_after(0, 10).await.unwrap();
            if let Some(e) = events.into_iter().find(|e| e.kind == "deploy.failed") {
                break e;
            }
            assert!(Instant::now() < deadline, "no deploy.failed event");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            (failed.message.as_str(), failed.release),
            ("Deploy v1 failed: the deploy stopped on an internal error (a bug in the deploy); deploy again", Some(1))
        );
        assert_eq!(new_release(&state).await.version, 2, "the environment stayed busy");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn deploy_events_name_the_deploy_and_keep_one_sentence_of_why() {
        assert_eq!(deploy_name(3, "Deploy of image shop:1", true), "Deploy v3 of image shop:1");
        assert_eq!(deploy_name(5, "Rollback to v2", false), "Rollback to v2 (v5)");
        assert_eq!(deploy_name(4, "Set A, B", true), "Deploy v4 (Set A, B)");
        assert_eq!(deploy_name(4, "Set A, B", false), "Deploy v4");
        let why = "release v3 did not pass its health check within 8s (web replica 1 is running); the old \
                   release keeps serving. Last log lines of c:\nSECRET=x";
        assert_eq!(
            first_sentence(why),
            "release v3 did not pass its health check within 8s (web replica 1 is running); the old release keeps serving."
        );
        assert_eq!(first_sentence("the build failed:\nstep 3"), "the build failed");
    }

    #[tokio::test]
    async fn shutdown_settles_a_deploy_in_flight() {
        let (state, dir) = AppState::for_tests().await;
        let r = new_release(&state).await;
        let work = tokio::spawn(std::future::pending::<anyhow::Result<()>>());
        state.spawn(supervise(state.clone(), r.clone(), work));
        assert_eq!(state.drain(Duration::from_secs(10)).await, 0, "the deploy task outlived shutdown");
        let r = state.store.get_release("shop", "production", r.version).await.unwrap();
        assert_eq!(r.status, ReleaseStatus::Failed);
        assert!(r.error.unwrap().contains("shut down during this deploy"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
