//! `git push` deploys end to end: the real `git` client against the control plane's
//! smart-HTTP server (`git http-backend`), with deploy output as `remote:` lines.

use paas_tests::{docker, git, Platform};
use std::time::Duration;

/// The app's push URL, and the same with the platform's token as the password.
fn remotes(p: &Platform, app: &str) -> (String, String) {
    let remote = p.paas(&["git-remote", "--app", app]).expect_ok().stdout.trim().to_string();
    let authed = remote.replacen("http://", &format!("http://anyone:{}@", p.token()), 1);
    (remote, authed)
}

/// A git repository of `examples/hello` with a quick deploy setting, committed once.
fn hello_repo() -> tempfile::TempDir {
    let repo = paas_tests::example_copy("hello");
    let dir = repo.path();
    std::fs::write(dir.join("paas.toml"), "[deploy]\nstability_window = \"0s\"\n").unwrap();
    git(dir, &["init", "-q"]).expect_ok();
    git(dir, &["add", "-A"]).expect_ok();
    git(dir, &["commit", "-qm", "first"]).expect_ok();
    repo
}

#[test]
fn pushing_branches_deploys_them_and_a_broken_build_rejects_the_push() {
    let mut p = Platform::start();
    let app = p.app_name("git");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["envs", "create", "--app", &app, "staging"]).expect_ok();
    let (remote, authed) = remotes(&p, &app);
    assert!(remote.ends_with(&format!("/git/{app}.git")), "{remote}");
    let repo = hello_repo();
    let dir = repo.path();

    let push = git(dir, &["push", &authed, "main"]);
    assert!(push.ok, "{push:?}");
    assert!(
        push.stderr.contains("remote: ") && push.stderr.contains("Step 1/"),
        "build output streams back: {}",
        push.stderr
    );
    assert!(push.stderr.contains("is live at"), "{}", push.stderr);
    p.wait_for_body(&p.host(&app), "Hello from paas!", Duration::from_secs(30));

    // A branch named like an environment deploys it; other branches are only stored.
    git(dir, &["checkout", "-qb", "staging"]).expect_ok();
    std::fs::write(dir.join("message.txt"), "staging build\n").unwrap();
    git(dir, &["commit", "-qam", "staging"]).expect_ok();
    let push = git(dir, &["push", &authed, "staging"]);
    assert!(push.ok, "{push:?}");
    p.wait_for_body(&format!("{app}-staging.localhost"), "staging build", Duration::from_secs(30));
    let push = git(dir, &["push", &authed, "staging:feature-x"]);
    assert!(push.ok && push.stderr.contains("stored"), "{push:?}");
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases.as_array().unwrap().len(), 1, "feature-x deployed nothing");

    // A broken Dockerfile on main: the push is rejected with the build error, v1 keeps serving.
    git(dir, &["checkout", "-q", "main"]).expect_ok();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:bookworm-slim\nRUN echo compile error here && exit 2\n",
    )
    .unwrap();
    git(dir, &["commit", "-qam", "broken"]).expect_ok();
    let push = git(dir, &["push", &authed, "main"]);
    assert!(!push.ok, "the push went through: {push:?}");
    assert!(
        push.stderr.contains("compile error here") && push.stderr.contains("rejected"),
        "{}",
        push.stderr
    );
    assert!(p.get(&p.host(&app), "/").body.contains("Hello from paas!"));
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases[0]["status"], "failed");
    assert_eq!(releases[1]["status"], "active");

    // Without a valid token nothing is readable or writable.
    let bad = remote.replacen("http://", "http://anyone:paas_wrong@", 1);
    let push = git(dir, &["push", &bad, "main"]);
    assert!(!push.ok && push.stderr.contains("Authentication failed"), "{push:?}");
    let clone_dir = tempfile::tempdir().unwrap();
    let clone = git(clone_dir.path(), &["clone", "-q", &remote, "x"]);
    assert!(!clone.ok, "cloned without a token: {clone:?}");
    let clone = git(clone_dir.path(), &["clone", "-q", &authed, "y"]);
    assert!(clone.ok, "{clone:?}");
    assert!(clone_dir.path().join("y/app.py").exists());
    assert!(!docker(&["ps", "-q", "--filter", &format!("label=paas.app={app}")]).trim().is_empty());
}

#[test]
fn pushes_deploy_after_the_binary_is_replaced_on_disk_and_oversized_pushes_are_refused() {
    // The platform runs from a copy that is then replaced the way a package upgrade does it.
    let bin_dir = tempfile::tempdir().unwrap();
    let bin = bin_dir.path().join("paas");
    std::fs::copy(paas_tests::paas_bin(), &bin).unwrap();
    let mut p = Platform::start_from(&bin, &["--git-max-push-mib", "1"], &[]);
    let app = p.app_name("upg");
    p.paas(&["apps", "create", &app]).expect_ok();
    let (_, authed) = remotes(&p, &app);
    let repo = hello_repo();
    let dir = repo.path();
    let push = git(dir, &["push", &authed, "main"]);
    assert!(push.ok && push.stderr.contains("is live at"), "{push:?}");
    let hook = p.dir.path().join(format!("data/git/{app}.git/hooks/pre-receive"));
    let written = std::fs::metadata(&hook).unwrap();

    let upgrade = bin_dir.path().join("paas.new");
    std::fs::copy(paas_tests::paas_bin(), &upgrade).unwrap();
    std::fs::rename(&upgrade, &bin).unwrap();
    let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid())).unwrap();
    assert!(exe.to_string_lossy().ends_with(" (deleted)"), "the running binary was replaced: {exe:?}");

    std::fs::write(dir.join("message.txt"), "after the upgrade\n").unwrap();
    git(dir, &["commit", "-qam", "second"]).expect_ok();
    let push = git(dir, &["push", &authed, "main"]);
    assert!(push.ok && push.stderr.contains("is live at"), "{push:?}\n{}", p.log());
    p.wait_for_body(&p.host(&app), "after the upgrade", Duration::from_secs(30));
    let again = std::fs::metadata(&hook).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (again.ino(), again.mtime_nsec()),
            (written.ino(), written.mtime_nsec()),
            "hook rewritten"
        );
    }

    // A push above --git-max-push-mib is refused with git's own sentence; nothing deploys.
    let noise: Vec<u8> = (0..3 << 20).map(|_| rand::random::<u8>()).collect();
    std::fs::write(dir.join("noise.bin"), noise).unwrap();
    git(dir, &["add", "noise.bin"]).expect_ok();
    git(dir, &["commit", "-qm", "big"]).expect_ok();
    let push = git(dir, &["push", &authed, "main"]);
    assert!(!push.ok, "the oversized push went through: {push:?}");
    assert!(push.stderr.contains("exceeds maximum allowed size"), "{}", push.stderr);
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases.as_array().unwrap().len(), 2, "the refused push deployed nothing");
    assert!(p.get(&p.host(&app), "/").body.contains("after the upgrade"));
}
