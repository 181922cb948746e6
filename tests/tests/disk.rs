//! Disk hygiene end to end: a prune keeps each environment's newest release images and the
//! ones the control plane names (current, rollback), waits for a build that shares layers with
//! what it removes, and `paas nodes list` shows the disk the platform's objects take.

use paas_tests::{docker, tiny_app, Platform};
use std::time::{Duration, Instant};

fn deploy_version(p: &Platform, app: &str, src: &tempfile::TempDir, n: u32) {
    std::fs::write(src.path().join("v.txt"), format!("{n}\n")).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", app]).expect_ok();
}

fn image_exists(app: &str, n: u32) -> bool {
    !docker(&["images", "-q", &format!("paas/{app}--production:v{n}")]).trim().is_empty()
}

#[test]
fn prune_keeps_the_newest_images_and_the_current_and_rollback_images() {
    // --keep-images 2 instead of the default 5: the same rules with fewer builds.
    let mut p = Platform::start_with(&["--prune-every-secs", "0", "--keep-images", "2"]);
    let app = p.app_name("prune");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = tiny_app(&app, "");
    for n in 1..=4 {
        deploy_version(&p, &app, &src, n);
    }
    // v5 serves v1's image: older than the newest two, kept because it is current; v4 is the
    // rollback release.
    p.paas(&["rollback", "--app", &app, "--to", "1"]).expect_ok();
    let out = p.paas(&["nodes", "prune", &p.node.clone(), "-o", "json"]).expect_ok().json();
    let removed = out[&p.node]["images"].as_array().cloned().unwrap_or_default();
    assert_eq!(removed.len(), 1, "only v2 goes: {out}");
    assert!(!image_exists(&app, 2), "v2 is older than the newest two and serves nothing");
    for n in [1, 3, 4] {
        assert!(image_exists(&app, n), "v{n} is kept");
    }
    // A kept release can still be rolled back to.
    p.paas(&["rollback", "--app", &app, "--to", "3"]).expect_ok();
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    let v6 = releases.as_array().unwrap().iter().find(|r| r["version"] == 6).cloned();
    assert_eq!(v6.as_ref().map(|r| r["status"].clone()), Some("active".into()), "{releases}");

    // The prune measured the disk again; the list shows what the images take.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = p.paas(&["nodes", "list", "-o", "json"]).expect_ok().json();
        let mine = nodes.as_array().unwrap().iter().find(|n| n["name"] == p.node.as_str()).cloned().unwrap();
        if mine["disk"]["images"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no image disk use reported: {mine}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = p.paas(&["nodes", "list"]).expect_ok().stdout;
    // Human units: the engine is shared with other tests, so the size itself may be any.
    let row = text.lines().find(|l| l.starts_with(p.node.as_str()));
    assert!(text.contains("IMAGES") && row.is_some_and(|r| r.contains("iB")), "{text}");
}

#[test]
fn a_prune_waits_for_a_build_that_shares_layers() {
    let mut p = Platform::start_with(&["--prune-every-secs", "0", "--keep-images", "1"]);
    let old = p.app_name("old");
    p.paas(&["apps", "create", &old]).expect_ok();
    // v1's image is the only one made of its layers: v2 and v3 start with another first step.
    deploy_version(&p, &old, &tiny_app(&old, ""), 1);
    let other = tiny_app(&format!("{old}-2"), "");
    deploy_version(&p, &old, &other, 2);
    deploy_version(&p, &old, &other, 3);

    // A build that reuses v1's first layer from the cache, then takes its time.
    let slow = p.app_name("slow");
    p.paas(&["apps", "create", &slow]).expect_ok();
    let marker = format!("sleep 6 # {slow}");
    let src = tiny_app(&old, &format!("RUN {marker}\n"));
    std::fs::write(src.path().join("v.txt"), "1\n").unwrap();
    let node = p.node.clone();
    std::thread::scope(|scope| {
        let dir = src.path().to_str().unwrap();
        let building = scope.spawn(|| p.paas(&["deploy", dir, "--app", &slow]));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !docker(&["ps", "--no-trunc", "--format", "{{.Command}}"]).contains(&marker) {
            assert!(Instant::now() < deadline, "the slow build never reached its slow step");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = p.paas(&["nodes", "prune", &node, "-o", "json"]).expect_ok().json();
        // The prune held off until the build was done: its image is there when the prune answers.
        assert!(image_exists(&slow, 1), "the prune ran while the build was still running");
        assert!(!image_exists(&old, 1), "v1 is neither among the newest one nor current nor rollback: {out}");
        building.join().unwrap().expect_ok();
    });
    assert!(image_exists(&old, 2) && image_exists(&old, 3), "the rollback target and the current stay");
}
