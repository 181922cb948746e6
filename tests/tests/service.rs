//! paas as a system service: the Debian package (cargo-deb, from the binary under test) installs
//! with dpkg in a throwaway Debian container, making the `paas` user in the `docker` group and
//! shipping the units of cli/systemd; the units pass `systemd-analyze verify`; `paas install`
//! writes the same units, and as root in a container makes the user.
//!
//! This machine's PID 1 is not systemd, so no test starts the units. What `Restart=always` relies
//! on, that a platform killed with `kill -9` and started again adopts the app containers still
//! running, is shown by skeleton.rs
//! (`a_killed_container_is_restarted_and_a_restarted_platform_adopts_running_containers`).

use paas_tests::{paas_bin, rand_suffix, workspace_root, Run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const UNITS: [&str; 3] = ["paas.service", "paas-server.service", "paas-agent.service"];
const IMAGE: &str = "debian:bookworm-slim";

fn shipped_unit(name: &str) -> String {
    let path = workspace_root().join("cli/systemd").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The unit `paas install` writes for a binary at `bin`: the shipped one, started from `bin`.
fn unit_for(name: &str, bin: &Path) -> String {
    shipped_unit(name).replace("ExecStart=/usr/bin/paas ", &format!("ExecStart={} ", bin.display()))
}

fn run(cmd: &mut Command) -> Run {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}")).into()
}

/// The .deb of the binary under test, built once per test process into a temporary directory.
///
/// cargo-deb packs `target/release/paas`; the tests' binary is a debug build, so it is copied
/// into a target directory of its own as `release/paas` and packed with `--no-build` (building
/// a release binary would take many minutes here), unstripped and with fast compression.
fn deb() -> &'static Path {
    static DEB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DEB.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = dir.path().join("target");
        std::fs::create_dir_all(target.join("release")).unwrap();
        std::fs::copy(paas_bin(), target.join("release/paas")).expect("copying the paas binary");
        let out = dir.path().join("out");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = run(Command::new(cargo)
            .args(["deb", "-p", "paas-cli", "--no-build", "--no-strip", "--fast", "-Z", "gz", "--compress-system"])
            .arg("-o")
            .arg(&out)
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target));
        assert!(
            built.ok,
            "cargo deb failed (is cargo-deb installed? `cargo install cargo-deb --locked`, as .ci/run does):\n{}",
            built.stderr
        );
        let deb = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("cargo deb made no .deb");
        (dir, deb)
    })
    .1
}

/// A throwaway container of the base image, removed when dropped (a failed assertion included).
struct Container {
    name: String,
}

impl Container {
    /// Starts `IMAGE` idle, with `mounts` (`host:container:ro`).
    fn start(what: &str, mounts: &[String]) -> Self {
        let name = format!("paas-test-{what}-{}", rand_suffix());
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--rm", "--name", &name, "--network", "none", "--label", "paas-test=service"]);
        for m in mounts {
            cmd.args(["-v", m]);
        }
        cmd.args([IMAGE, "sleep", "infinity"]);
        let started = Container { name };
        run(&mut cmd).expect_ok();
        started
    }

    fn exec_as(&self, user: &str, argv: &[&str]) -> Run {
        run(Command::new("docker").args(["exec", "-u", user, &self.name]).args(argv))
    }

    fn exec(&self, argv: &[&str]) -> Run {
        self.exec_as("root", argv)
    }

    #[track_caller]
    fn stdout(&self, argv: &[&str]) -> String {
        self.exec(argv).expect_ok().stdout.trim().to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
    }
}

#[test]
fn the_deb_installs_with_dpkg_making_the_paas_user_in_the_docker_group_and_shipping_the_units() {
    let deb = deb();
    let dir = deb.parent().unwrap();
    let c = Container::start("deb", &[format!("{}:/deb:ro", dir.display())]);
    let file = format!("/deb/{}", deb.file_name().unwrap().to_string_lossy());
    // The base image has no docker group: the postinst makes it.
    assert!(!c.exec(&["getent", "group", "docker"]).ok);

    c.exec(&["dpkg", "-i", &file]).expect_ok();
    let groups = c.stdout(&["id", "-nG", "paas"]);
    assert!(groups.split_whitespace().any(|g| g == "docker"), "paas is not in docker: {groups}");
    let passwd = c.stdout(&["getent", "passwd", "paas"]);
    assert!(passwd.ends_with(":/var/lib/paas:/usr/sbin/nologin"), "{passwd}");
    assert_eq!(c.stdout(&["stat", "-c", "%U %a", "/var/lib/paas"]), "paas 750");
    // The settings may hold secrets (a join token, S3 keys).
    assert_eq!(c.stdout(&["stat", "-c", "%U %a", "/etc/paas"]), "root 700");
    for unit in UNITS {
        let installed = c.stdout(&["cat", &format!("/lib/systemd/system/{unit}")]);
        assert_eq!(installed, shipped_unit(unit).trim(), "{unit} differs from cli/systemd/{unit}");
    }
    assert_eq!(c.stdout(&["/usr/bin/paas", "--version"]), format!("paas {}", env!("CARGO_PKG_VERSION")));

    // An upgrade in place (the same version again) configures cleanly over an existing user.
    c.exec(&["dpkg", "-i", &file]).expect_ok();
    assert_eq!(c.stdout(&["grep", "-c", "^paas:", "/etc/passwd"]), "1");

    // Purge removes the settings but keeps the data and its owner, as the README says.
    c.exec(&["mkdir", "-p", "/var/lib/paas/repos"]).expect_ok();
    c.exec(&["dpkg", "--purge", "paas"]).expect_ok();
    assert!(!c.exec(&["test", "-e", "/usr/bin/paas"]).ok, "the binary is still there after purge");
    assert!(!c.exec(&["test", "-e", "/etc/paas"]).ok, "/etc/paas is still there after purge");
    assert!(c.exec(&["test", "-d", "/var/lib/paas/repos"]).ok, "purge removed the data");
    assert!(c.exec(&["getent", "passwd", "paas"]).ok, "purge removed the data's owner");
}

/// `systemd-analyze verify` exits 0 after mere warnings ("Unknown key ..., ignoring"), so a unit
/// passes only with no line about it on stderr.
fn verify(root: &Path, unit: &str) -> Result<(), String> {
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(format!("/lib/systemd/system/{unit}"))
        .env("SYSTEMD_LOG_COLOR", "0"));
    let stem = unit.trim_end_matches(".service");
    let about: Vec<&str> = out.stderr.lines().filter(|l| l.contains(stem)).collect();
    if out.ok && about.is_empty() {
        Ok(())
    } else {
        Err(out.stderr)
    }
}

#[test]
fn the_packaged_units_pass_systemd_analyze_verify() {
    // The package's files unpacked as a root file system, so ExecStart's /usr/bin/paas exists
    // there (verify checks it), with the host's own units for the targets ours name.
    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb()).arg(root.path())).expect_ok();
    let system = root.path().join("lib/systemd/system");
    run(Command::new("cp").arg("-a").arg("/lib/systemd/system/.").arg(&system)).expect_ok();
    for unit in UNITS {
        if let Err(stderr) = verify(root.path(), unit) {
            panic!("systemd-analyze verify {unit} found problems:\n{stderr}");
        }
    }

    // The check can fail: a misspelt value and a missing binary are both caught.
    let broken = shipped_unit("paas.service").replace("Restart=always", "Restart=alwayz");
    std::fs::write(system.join("paas-typo.service"), broken).unwrap();
    assert!(verify(root.path(), "paas-typo.service").is_err(), "a misspelt Restart= passed");
    std::fs::remove_file(root.path().join("usr/bin/paas")).unwrap();
    assert!(verify(root.path(), "paas.service").is_err(), "a unit without its binary passed");
}

#[test]
fn paas_install_writes_the_shipped_units_and_as_root_makes_the_user() {
    let bin = paas_bin();
    let exe = std::fs::canonicalize(bin).unwrap();

    // --dry-run says what it would write, and writes nothing.
    let root = tempfile::tempdir().unwrap();
    let planned = run(Command::new(bin).args(["install", "up", "--dry-run", "--root"]).arg(root.path()))
        .expect_ok()
        .stdout;
    let unit_path = root.path().join("etc/systemd/system/paas.service");
    assert!(planned.contains(&format!("would write {}", unit_path.display())), "{planned}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "--dry-run wrote files");

    // Each role's unit is the shipped file, started from this binary.
    for (role, unit) in [("up", UNITS[0]), ("server", UNITS[1]), ("agent", UNITS[2])] {
        run(Command::new(bin).args(["install", role, "--root"]).arg(root.path())).expect_ok();
        let written = std::fs::read_to_string(root.path().join("etc/systemd/system").join(unit)).unwrap();
        assert_eq!(written, unit_for(unit, &exe), "paas install {role} wrote another {unit}");
    }

    // As root on a machine without systemd (a container): the user, its group, its data dir,
    // and one sentence on how to start it by hand.
    let c = Container::start("install", &[format!("{}:/usr/local/bin/paas:ro", exe.display())]);
    let refused = c.exec_as("nobody", &["paas", "install", "up"]);
    assert!(!refused.ok && refused.stderr.contains("needs root"), "{refused:?}");
    assert!(!c.exec(&["getent", "passwd", "paas"]).ok);

    let first = c.exec(&["paas", "install", "up"]).expect_ok().stdout;
    assert!(first.contains("run useradd"), "{first}");
    assert!(first.contains("systemd is not running here"), "{first}");
    assert!(first.contains("runuser -u paas -- /usr/local/bin/paas up --data-dir /var/lib/paas"), "{first}");
    let groups = c.stdout(&["id", "-nG", "paas"]);
    assert!(groups.split_whitespace().any(|g| g == "docker"), "paas is not in docker: {groups}");
    assert_eq!(c.stdout(&["stat", "-c", "%U %a", "/var/lib/paas"]), "paas 750");
    let installed = c.stdout(&["cat", "/etc/systemd/system/paas.service"]);
    assert_eq!(installed, unit_for("paas.service", Path::new("/usr/local/bin/paas")).trim());

    // Again: nothing to make, the same unit.
    let again = c.exec(&["paas", "install", "up"]).expect_ok().stdout;
    assert!(!again.contains("useradd") && !again.contains("usermod"), "{again}");

    // A binary in a directory another user may write to is refused: they could swap it for
    // one that runs with the service's Docker access.
    c.exec(&["sh", "-c", "mkdir -m 775 /opt/shared && cp /usr/local/bin/paas /opt/shared/paas"]).expect_ok();
    let refused = c.exec(&["/opt/shared/paas", "install", "up"]);
    assert!(!refused.ok && refused.stderr.contains("/opt/shared must belong to root"), "{refused:?}");
}
