//! The controller without Docker: a real control plane on a loopback port, driven through
//! `/api/v1` as the CLI drives it and `/agent/v1` by a fake agent, through blue/green deploys,
//! failed deploys, scaling during rollouts and restarts mid-deploy. Each test takes seconds.

mod common;

use common::fake_agent::{Applied, FakeAgent, ADDR};
use common::{deploy, eventually, processes, releases_in_use, settled, DataDir, Plane, ENV};
use protocol::api::{Release, ReleaseStatus};
use std::collections::BTreeSet;
use std::time::Duration;

const IMAGE: &str = "example/web:1";
const NODE: &str = "node-1";

/// Two web replicas, a short stability window; `timeout` bounds how long they may take to
/// become healthy.
fn manifest(timeout: &str) -> String {
    format!(
        "[processes.web]\nreplicas = 2\n[deploy]\ntimeout = \"{timeout}\"\nstability_window = \"200ms\"\n"
    )
}

/// A control plane with one fake agent and an app whose v1 serves with two replicas.
async fn serving_v1(dir: &DataDir, app: &str) -> (Plane, FakeAgent) {
    let p = Plane::start(dir).await;
    let agent = FakeAgent::join(&p.agent_url, &p.join_token().await, NODE).await;
    p.api.create_app(app).await.expect("creating the app");
    let v1 = deploy(&p.api, app, IMAGE, &manifest("5s")).await;
    assert_active(&p, app, v1).await;
    serves_only(&p, &agent, app, 1, 2).await;
    (p, agent)
}

/// Waits until release `version` settles and checks that it went live.
async fn assert_active(p: &Plane, app: &str, version: u32) {
    let r = settled(&p.api, app, version).await;
    assert_eq!((r.status, r.error), (ReleaseStatus::Active, None), "v{version} went live");
}

/// The environment was not left busy: a healthy deploy, release `version`, goes live.
async fn next_deploy_goes_live(p: &Plane, agent: &FakeAgent, version: u32) {
    agent.script(|s| s.unhealthy.clear());
    assert_eq!(deploy(&p.api, "shop", IMAGE, &manifest("5s")).await, version);
    assert_active(p, "shop", version).await;
    serves_only(p, agent, "shop", version, 2).await;
}

/// Ports of the containers of `version` the fake runs.
fn ports_of(a: &Applied, version: u32) -> BTreeSet<String> {
    a.running.values().filter(|r| r.release == version).map(|r| format!("{ADDR}:{}", r.port)).collect()
}

/// The fake's route for `app`: the release it points at and its backends.
fn route_of(a: &Applied, app: &str) -> Option<(u32, BTreeSet<String>)> {
    let r = a.assignment.routes.iter().find(|r| r.app == app && r.env == ENV)?;
    Some((r.release, r.backends.iter().cloned().collect()))
}

/// The environment serves `version` and only it: it is current with nothing rolling out, the
/// formation asks for `replicas` web replicas and exactly those (1..=replicas, healthy) are
/// assigned; the fake runs just them and routes the app to just them.
async fn serves_only(p: &Plane, agent: &FakeAgent, app: &str, version: u32, replicas: u32) {
    assert_eq!(releases_in_use(&p.api, app).await, (Some(version), None), "v{version} serves alone");
    let summary = p.api.get_app(app).await.unwrap();
    assert_eq!(summary.envs[0].replicas, replicas, "the formation");
    // Replicas a scale just added are healthy once the fake has reported them.
    eventually(
        &format!("v{version}'s {replicas} healthy replicas alone"),
        Duration::from_secs(5),
        || async {
            let assigned = processes(&p.api, app).await;
            let numbers: BTreeSet<u32> = assigned.iter().map(|i| i.replica).collect();
            let ok = assigned.iter().all(|i| i.release == version && i.healthy)
                && assigned.len() == replicas as usize
                && numbers == (1..=replicas).collect();
            ok.then_some(())
        },
    )
    .await;
    let applied = agent
        .wait_applied(&format!("the route to v{version} alone"), |a| {
            a.running.values().all(|r| r.release == version)
                && route_of(a, app) == Some((version, ports_of(a, version)))
        })
        .await;
    // A replica a quick scale removed and added again shows its predecessor's address until
    // the fake's next report (every 100 ms) arrives.
    let running = ports_of(&applied, version);
    eventually("the control plane to show the addresses the fake runs", Duration::from_secs(5), || async {
        let addresses: BTreeSet<String> =
            processes(&p.api, app).await.iter().filter_map(|i| i.address.clone()).collect();
        (addresses == running).then_some(())
    })
    .await;
}

/// No assignment ever routed to a container it did not also keep running: old replicas are
/// unassigned only after the route left them.
fn never_routed_to_a_stopped_container(agent: &FakeAgent, app: &str) {
    for a in agent.history() {
        let Some((release, backends)) = route_of(&a, app) else { continue };
        let running = ports_of(&a, release);
        assert!(backends.is_subset(&running), "index {} routes to {backends:?}, runs {running:?}", a.index);
    }
}

#[tokio::test]
async fn a_deploy_switches_once_its_replicas_are_healthy_then_retires_the_old_ones() {
    let dir = DataDir::new();
    let (p, agent) = serving_v1(&dir, "shop").await;

    // v2's replicas run but are not healthy yet: v1 keeps serving beside them.
    agent.script(|s| s.unhealthy.insert(2));
    let v2 = deploy(&p.api, "shop", IMAGE, &manifest("5s")).await;
    let applied = agent
        .wait_applied("v2's replicas", |a| a.running.values().filter(|r| r.release == 2).count() == 2)
        .await;
    assert_eq!(route_of(&applied, "shop").unwrap().0, 1, "the route stays on v1");
    assert_eq!(releases_in_use(&p.api, "shop").await, (Some(1), Some(2)));
    assert_eq!(ports_of(&applied, 1).len(), 2, "v1's replicas keep running");

    agent.script(|s| s.unhealthy.clear());
    assert_active(&p, "shop", v2).await;
    assert_eq!(release(&p, "shop", 1).await.status, ReleaseStatus::Superseded);
    serves_only(&p, &agent, "shop", 2, 2).await;
    never_routed_to_a_stopped_container(&agent, "shop");
    p.stop().await;
}

#[tokio::test]
async fn a_replica_that_never_gets_healthy_fails_the_deploy_and_the_old_release_stays() {
    let dir = DataDir::new();
    let (p, agent) = serving_v1(&dir, "shop").await;

    agent.script(|s| s.unhealthy.insert(2));
    let v2 = deploy(&p.api, "shop", IMAGE, &manifest("1s")).await;
    let r = settled(&p.api, "shop", v2).await;
    assert_eq!(r.status, ReleaseStatus::Failed);
    let why = r.error.unwrap();
    assert!(why.contains("health check"), "{why}");
    assert!(why.contains("fake agent: v2 never answers its health check"), "the replica's last lines: {why}");
    serves_only(&p, &agent, "shop", 1, 2).await;
    // v1's replicas ran throughout.
    let history = agent.history();
    let mut with_v1 = history.iter().skip_while(|a| ports_of(a, 1).is_empty());
    let v1_ports = ports_of(with_v1.next().unwrap(), 1);
    for a in with_v1 {
        assert_eq!(ports_of(a, 1), v1_ports, "v1's replicas were touched at index {}", a.index);
    }
    never_routed_to_a_stopped_container(&agent, "shop");

    next_deploy_goes_live(&p, &agent, 3).await;
    p.stop().await;
}

#[tokio::test]
async fn scaling_while_a_release_builds_or_rolls_out_leaves_a_consistent_environment() {
    let dir = DataDir::new();
    let (p, agent) = serving_v1(&dir, "shop").await;

    // While v2 builds, a scale changes the serving release and the formation v2 starts with.
    agent.script(|s| s.hold_builds = true);
    let v2 = deploy(&p.api, "shop", IMAGE, &manifest("5s")).await;
    agent.wait_applied("v2's build", |a| a.assignment.builds.iter().any(|b| b.release == v2)).await;
    let formation = p.api.scale("shop", ENV, "web", 3).await.expect("scaling while v2 builds");
    assert_eq!(formation.processes["web"], 3);
    agent.wait_applied("v1's third replica", |a| ports_of(a, 1).len() == 3).await;
    agent.script(|s| s.hold_builds = false);
    assert_active(&p, "shop", v2).await;
    serves_only(&p, &agent, "shop", 2, 3).await;

    // While v3 rolls out, a scale is refused and changes nothing.
    agent.script(|s| s.unhealthy.insert(3));
    let v3 = deploy(&p.api, "shop", IMAGE, &manifest("5s")).await;
    eventually("v3 to roll out", Duration::from_secs(5), || async {
        (releases_in_use(&p.api, "shop").await.1 == Some(v3)).then_some(())
    })
    .await;
    let refused = p.api.scale("shop", ENV, "web", 1).await.expect_err("a scale during a rollout");
    assert_eq!(refused.status, Some(409), "{}", refused.message);
    agent.script(|s| s.unhealthy.clear());
    assert_active(&p, "shop", v3).await;
    serves_only(&p, &agent, "shop", 3, 3).await;
    never_routed_to_a_stopped_container(&agent, "shop");

    // Scales fired all through a deploy: whichever land, the result is consistent.
    let v4 = deploy(&p.api, "shop", IMAGE, &manifest("5s")).await;
    let (mut last, began) = (3, std::time::Instant::now());
    for n in [2, 4, 1, 3, 2, 4, 3, 2].into_iter().cycle() {
        if p.api.scale("shop", ENV, "web", n).await.is_ok() {
            last = n;
        }
        if release(&p, "shop", v4).await.status.is_finished() || began.elapsed().as_secs() >= 5 {
            break;
        }
    }
    assert_active(&p, "shop", v4).await;
    // Not checked here: that no route ever named a stopped container. Reports name containers,
    // not their generations, so a replica removed and added again by two quick scales can be
    // credited with its predecessor's report (and port) until the agent's next one.
    serves_only(&p, &agent, "shop", 4, last).await;
    p.stop().await;
}

/// v1 serves and v2 rolls out (its replicas run, never healthy) when the control plane stops,
/// gracefully or `killed`; returns it started again on the same data directory, and v2.
async fn restarted_mid_rollout(dir: &DataDir, killed: bool) -> (Plane, FakeAgent, u32) {
    let (p, agent) = serving_v1(dir, "shop").await;
    agent.script(|s| s.unhealthy.insert(2));
    let v2 = deploy(&p.api, "shop", IMAGE, &manifest("60s")).await;
    agent.wait_applied("v2's replicas", |a| ports_of(a, 2).len() == 2).await;
    if killed {
        p.crash().await;
    } else {
        p.stop().await;
    }
    let p = Plane::start(dir).await;
    agent.reconnect(&p.agent_url);
    (p, agent, v2)
}

/// Release `version` of `app` as the API lists it.
async fn release(p: &Plane, app: &str, version: u32) -> Release {
    let releases = p.api.releases(app, ENV).await.expect("listing releases");
    releases.into_iter().find(|r| r.version == version).expect("the release exists")
}

#[tokio::test]
async fn a_control_plane_stopped_mid_rollout_fails_the_release_and_serves_the_old_one() {
    let dir = DataDir::new();
    let (p, agent, v2) = restarted_mid_rollout(&dir, false).await;
    let r = release(&p, "shop", v2).await;
    assert_eq!(r.status, ReleaseStatus::Failed, "settled at shutdown");
    assert!(r.error.unwrap().contains("shut down during this deploy"));
    serves_only(&p, &agent, "shop", 1, 2).await;

    next_deploy_goes_live(&p, &agent, 3).await;
    p.stop().await;
}

#[tokio::test]
async fn a_control_plane_killed_before_the_switch_fails_the_release_at_the_next_start() {
    let dir = DataDir::new();
    let (p, agent, v2) = restarted_mid_rollout(&dir, true).await;
    let r = release(&p, "shop", v2).await;
    assert_eq!(r.status, ReleaseStatus::Failed, "settled before serving");
    assert!(r.error.unwrap().contains("restarted during this deploy"));
    serves_only(&p, &agent, "shop", 1, 2).await;
    p.stop().await;
}

#[tokio::test]
async fn a_control_plane_killed_after_the_switch_finishes_the_release_at_the_next_start() {
    let dir = DataDir::new();
    let (p, agent) = serving_v1(&dir, "shop").await;

    // The ingress never confirms the switch, so the deploy waits after it.
    let v2 = deploy(&p.api, "shop", IMAGE, &manifest("5s")).await;
    agent.wait_applied("v2's replicas", |a| ports_of(a, 2).len() == 2).await;
    agent.script(|s| s.deaf = true);
    eventually("the switch to v2", Duration::from_secs(5), || async {
        (releases_in_use(&p.api, "shop").await == (Some(v2), None)).then_some(())
    })
    .await;
    let r = release(&p, "shop", v2).await;
    assert_eq!(r.status, ReleaseStatus::Deploying, "the deploy waits for the ingress");
    p.crash().await;

    let p = Plane::start(&dir).await;
    agent.reconnect(&p.agent_url);
    agent.script(|s| s.deaf = false);
    let r = release(&p, "shop", v2).await;
    assert_eq!((r.status, r.error), (ReleaseStatus::Active, None), "settled as served");
    serves_only(&p, &agent, "shop", 2, 2).await;
    never_routed_to_a_stopped_container(&agent, "shop");
    p.stop().await;
}

#[tokio::test]
async fn a_process_restart_replaces_each_replica_and_one_cut_short_is_ended_at_start() {
    let dir = DataDir::new();
    let (p, agent) = serving_v1(&dir, "shop").await;
    let before: BTreeSet<String> = processes(&p.api, "shop").await.into_iter().map(|i| i.name).collect();
    let done = p.api.restart_process("shop", ENV, "web").await.expect("restarting web");
    assert_eq!((done.release, done.replaced.len()), (1, 2));
    let after: BTreeSet<String> = processes(&p.api, "shop").await.into_iter().map(|i| i.name).collect();
    assert_eq!(after, done.replaced.iter().cloned().collect(), "the replacements alone are assigned");
    assert!(after.is_disjoint(&before));
    serves_only(&p, &agent, "shop", 1, 2).await;
    never_routed_to_a_stopped_container(&agent, "shop");

    // The fake stops applying: the first replacement never reports, and the plane dies while
    // it waits. Started again, it keeps one container per replica.
    agent.script(|s| s.deaf = true);
    let api = p.api.clone();
    let restart = tokio::spawn(async move { api.restart_process("shop", ENV, "web").await });
    eventually("the first replacement to be assigned", Duration::from_secs(5), || async {
        (processes(&p.api, "shop").await.len() == 3).then_some(())
    })
    .await;
    p.crash().await;
    let _ = restart.await;
    let p = Plane::start(&dir).await;
    agent.reconnect(&p.agent_url);
    agent.script(|s| s.deaf = false);
    serves_only(&p, &agent, "shop", 1, 2).await;
    let releases = p.api.releases("shop", ENV).await.expect("listing releases");
    assert_eq!(releases.len(), 1, "a process restart makes no release");
    p.stop().await;
}
