//! Images travel between nodes through an external registry (`paas server --registry`): a
//! real one, Debian's docker-registry on loopback with a login. As in `nodes_images`, the
//! agents are node-scoped (`--node-scoped-images`) on the one engine the tests share: each
//! counts only images under its own tag as its own, so a node that did not build the image
//! must get it. Here it pulls it from the registry: the control plane keeps no tarball, and
//! once the builder is lost a node that joined later still gets the image from there.

use paas_tests::registry::Registry;
use paas_tests::{docker, paas_bin, Platform};
use std::time::Instant;

#[test]
fn a_registry_carries_images_between_nodes_and_outlives_their_builder() {
    let registry = Registry::start();
    let path = format!("paas-{}", paas_tests::rand_suffix());
    let repo = format!("{}/{path}", registry.addr);
    let flags = ["--node-lost-after", "6s", "--registry", &repo, "--registry-user", &registry.user];
    let mut p = Platform::start_with_env(&flags, &[("PAAS_REGISTRY_PASSWORD", &registry.password)]);
    let b = p.join_agent_with("127.0.0.2", &["--node-scoped-images"]);
    let c = p.join_agent_with("127.0.0.3", &["--node-scoped-images"]);
    // The build goes to b, once the `paas up` node takes nothing new.
    p.paas(&["nodes", "drain", &p.node.clone()]).expect_ok();

    let app = p.app_name("regtravel");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), paas_tests::replicas_manifest(2, "5s")).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    let started = Instant::now();
    let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let deploy_secs = started.elapsed().as_secs_f64();
    let progress = format!("{}{}", out.stdout, out.stderr);
    assert!(progress.contains(&format!("Node {b} pushed image")), "the deploy shows the push:\n{progress}");
    let mut want = vec![b.clone(), c.clone()];
    want.sort();
    assert_eq!(p.placement(&app), want);

    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    let id = releases[0]["image_id"].as_str().expect("the release has its image").to_string();
    let hex = id.strip_prefix("sha256:").unwrap().to_string();
    assert_eq!(registry.tags(&path), Some(vec![hex.clone()]), "the registry holds the image under its id");
    assert!(p.agent_log(&c).contains("image pulled from the registry"), "c pulled:\n{}", p.agent_log(&c));
    let images = p.data_dir().join("images");
    assert!(!images.join(format!("{hex}.tar")).exists(), "the control plane keeps no tarball");
    assert!(images.join(format!("{hex}.pushed")).is_file(), "the control plane knows the image is pushed");
    // The registry's tag is removed again on every node: only a node's own tag holds the image,
    // so its prune can remove it.
    assert_eq!(docker(&["images", "-q", &repo]).trim(), "", "no registry tag is left in the engine");

    // The builder is lost; a node that joined since gets its replica and the image from the
    // registry, which the control plane never had.
    let d = p.join_agent_with("127.0.0.4", &["--node-scoped-images"]);
    let killed = Instant::now();
    p.kill_node(&b);
    let back = paas_tests::wait_for(90, "a replica on the new node", || {
        let placed = p.placement(&app);
        (placed.len() == 2 && placed.contains(&d)).then(|| killed.elapsed())
    });
    assert!(p.agent_log(&d).contains("image pulled from the registry"), "d pulled:\n{}", p.agent_log(&d));
    assert!(p.get(&p.host(&app), "/").status == 200);
    println!(
        "registry: deploy over two nodes {deploy_secs:.1}s, {} bytes in the registry; builder lost, back at 2 \
         replicas {:.1}s after the kill",
        registry.stored_bytes(),
        back.as_secs_f64()
    );
    let files = std::fs::read_dir(&images).unwrap().count();
    assert_eq!(files, 1, "only the mark, no tarball or partial upload");
}

#[test]
fn a_registry_that_is_no_repository_is_refused_in_the_users_words() {
    for (value, says) in [
        ("registry.example.com/paas:v1", "must not name a tag"),
        ("registry.example.com/Paas", "lower-case letters and digits"),
    ] {
        let out = std::process::Command::new(paas_bin())
            .args(["server", "--registry", value])
            .output()
            .expect("running paas");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{value}: {stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(paas_bin())
        .args(["server", "--registry", "registry.example.com/paas", "--registry-user", "u", "--data-dir"])
        .arg(dir.path())
        .env_remove("PAAS_REGISTRY_PASSWORD")
        .output()
        .expect("running paas");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("PAAS_REGISTRY_PASSWORD"), "{stderr}");
    let out = std::process::Command::new(paas_bin())
        .args(["server", "--registry", "registry.example.com/paas", "--data-dir"])
        .arg(dir.path())
        .env("PAAS_REGISTRY_PASSWORD", "secret")
        .env_remove("PAAS_REGISTRY_USER")
        .output()
        .expect("running paas");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("add --registry-user"), "{stderr}");
    assert!(!stderr.contains("secret"), "the password is not shown: {stderr}");
}
