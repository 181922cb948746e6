//! `paas install`: installs the systemd unit of `paas up`, `paas server` or `paas agent` (the
//! files of cli/systemd, embedded: the Debian package ships the same text), makes the `paas`
//! user in the `docker` group and its data directory, and enables and starts the service.
//!
//! It plans first, as a list of steps, so `--dry-run` prints exactly what a real run does.

use crate::args::{Global, InstallArgs, InstallRole, Output};
use anyhow::{bail, Context};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The units, one source of truth with the Debian package (`[package.metadata.deb]` assets).
const UP_UNIT: &str = include_str!("../../systemd/paas.service");
const SERVER_UNIT: &str = include_str!("../../systemd/paas-server.service");
const AGENT_UNIT: &str = include_str!("../../systemd/paas-agent.service");

/// Where the units' ExecStart= says the binary is (the Debian package puts it there).
pub const PACKAGED_BIN: &str = "/usr/bin/paas";
const USER: &str = "paas";
const DOCKER_GROUP: &str = "docker";
/// The settings the units read (EnvironmentFile=); root only, as they may hold secrets.
const ENV_DIR: &str = "/etc/paas";

struct Unit {
    name: &'static str,
    text: &'static str,
    /// Its StateDirectory=, made here too so the user's home exists before the first start.
    data_dir: &'static str,
    /// An EnvironmentFile= it cannot start without.
    needs_env: Option<&'static str>,
}

fn unit(role: InstallRole) -> Unit {
    match role {
        InstallRole::Up => {
            Unit { name: "paas.service", text: UP_UNIT, data_dir: "/var/lib/paas", needs_env: None }
        }
        InstallRole::Server => Unit {
            name: "paas-server.service",
            text: SERVER_UNIT,
            data_dir: "/var/lib/paas",
            needs_env: None,
        },
        InstallRole::Agent => Unit {
            name: "paas-agent.service",
            text: AGENT_UNIT,
            data_dir: "/var/lib/paas-agent",
            needs_env: Some("/etc/paas/agent.env"),
        },
    }
}

/// The unit text for a binary at `bin`: the shipped file with its ExecStart= path replaced.
pub fn unit_text(role: InstallRole, bin: &Path) -> String {
    let text = unit(role).text;
    let bin = bin.to_string_lossy();
    if bin == PACKAGED_BIN {
        return text.to_string();
    }
    text.replace(&format!("ExecStart={PACKAGED_BIN} "), &format!("ExecStart={bin} "))
}

/// One thing a run does; `--dry-run` prints them instead.
enum Step {
    Write { path: PathBuf, text: String },
    Dir { path: PathBuf, mode: u32, owner: Option<&'static str> },
    Run(Vec<String>),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Write { path, .. } => write!(f, "write {}", path.display()),
            Step::Dir { path, mode, owner: Some(o) } => {
                write!(f, "create {} (mode {mode:04o}, owner {o})", path.display())
            }
            Step::Dir { path, mode, owner: None } => write!(f, "create {} (mode {mode:04o})", path.display()),
            Step::Run(argv) => write!(f, "run {}", argv.join(" ")),
        }
    }
}

fn run_step(argv: &[&str]) -> Step {
    Step::Run(argv.iter().map(|s| s.to_string()).collect())
}

/// Whether `getent DB KEY` finds an entry (a user or group, local or from NSS).
fn exists(db: &str, key: &str) -> anyhow::Result<bool> {
    let status = Command::new("getent")
        .args([db, key])
        .stdout(std::process::Stdio::null())
        .status()
        .context("cannot run getent to look the paas user up")?;
    Ok(status.success())
}

fn in_group(user: &str, group: &str) -> anyhow::Result<bool> {
    let out = Command::new("id").args(["-nG", user]).output().context("cannot run id")?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().any(|g| g == group))
}

/// The running binary, which the unit will start. On this host (no --root) it must be where the
/// service can see it.
fn this_binary(on_host: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot tell where the paas binary is")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    if !on_host {
        return Ok(exe);
    }
    // The units' ProtectHome= and PrivateTmp= hide these from the service.
    let hidden = ["/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/"];
    if let Some(dir) = hidden.iter().find(|d| exe.starts_with(d)) {
        bail!(
            "the service could not start {} because its unit hides {dir} from it: copy the binary to /usr/local/bin and run `paas install` from there",
            exe.display()
        );
    }
    // ExecStart= splits at whitespace and expands `%`.
    let text = exe.to_str().unwrap_or_default();
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '%' || c == '"' || c == '\'') {
        bail!(
            "the unit cannot name {} (spaces, quotes or `%` in its path): copy the binary to /usr/local/bin and run `paas install` from there",
            exe.display()
        );
    }
    // The service runs it in the docker group, root on this host in all but name: a binary, or
    // a directory above it, that another user can change would hand them that.
    for path in exe.ancestors() {
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
            bail!(
                "{} must belong to root and be writable by no one else, or whoever can change it gets the service's Docker access: copy the binary to /usr/local/bin and run `paas install` from there",
                path.display()
            );
        }
    }
    Ok(exe)
}

/// Whether systemd is the running service manager (sd_booted's test).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The effective user id: a /proc/<pid> directory belongs to its process's effective user.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

pub fn exec(g: &Global, args: InstallArgs) -> anyhow::Result<ExitCode> {
    let u = unit(args.role);
    let on_host = args.root.is_none();
    if on_host && !args.dry_run && !is_root() {
        bail!("paas install writes /etc/systemd/system and makes the paas user, so it needs root: run it with sudo");
    }
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let bin = this_binary(on_host)?;

    let mut steps = vec![
        Step::Dir { path: at("/etc/systemd/system"), mode: 0o755, owner: None },
        Step::Write {
            path: at(&format!("/etc/systemd/system/{}", u.name)),
            text: unit_text(args.role, &bin),
        },
        Step::Dir { path: at(ENV_DIR), mode: 0o700, owner: None },
    ];
    if on_host {
        if !exists("group", DOCKER_GROUP)? {
            // Docker's package owns its socket with this group; made first, it is reused.
            steps.push(run_step(&["groupadd", "--system", DOCKER_GROUP]));
        }
        let user_exists = exists("passwd", USER)?;
        if !user_exists {
            steps.push(run_step(&[
                "useradd",
                "--system",
                "--user-group",
                "--home-dir",
                "/var/lib/paas",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ]));
        }
        if !user_exists || !in_group(USER, DOCKER_GROUP)? {
            steps.push(run_step(&["usermod", "--append", "--groups", DOCKER_GROUP, USER]));
        }
    }
    let owner = on_host.then_some(USER);
    steps.push(Step::Dir { path: at(u.data_dir), mode: 0o750, owner });
    if u.data_dir != "/var/lib/paas" {
        // The user's home, even on a machine that only runs an agent.
        steps.push(Step::Dir { path: at("/var/lib/paas"), mode: 0o750, owner });
    }
    let env_missing = u.needs_env.filter(|e| !at(e).exists());
    let systemd = on_host && systemd_running();
    if systemd {
        steps.push(run_step(&["systemctl", "daemon-reload"]));
        if env_missing.is_some() {
            steps.push(run_step(&["systemctl", "enable", u.name]));
        } else {
            steps.push(run_step(&["systemctl", "enable", "--now", u.name]));
        }
    }
    let next = match (on_host, systemd, env_missing) {
        (_, _, Some(env)) => format!(
            "Write {env} (PAAS_JOIN=https://<control plane>:7071, PAAS_JOIN_TOKEN from `paas nodes token`, see the unit's comments), then start it with `systemctl start {}`.",
            u.name
        ),
        (false, _, None) => format!(
            "The files are under {}; run `systemctl enable {}` once that tree is the system's.",
            root.display(),
            u.name
        ),
        (true, false, None) => format!(
            "systemd is not running here (no /run/systemd/system), so nothing was started: run it by hand with `runuser -u paas -- {}` and the flags you would put in {ENV_DIR}.",
            exec_start(&unit_text(args.role, &bin))
        ),
        (true, true, None) => format!("{} is running and starts at boot; follow it with `journalctl -u {} -f`.", u.name, u.name),
    };

    if !args.dry_run {
        for step in &steps {
            apply(step)?;
        }
    }
    match g.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "unit": u.name,
                "dry_run": args.dry_run,
                "steps": steps.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "next": next,
            })
        ),
        Output::Text => {
            for step in &steps {
                if args.dry_run {
                    println!("would {step}");
                } else {
                    println!("{step}: done");
                }
            }
            println!("{next}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The unit's command line without the settings it takes from its EnvironmentFile= (`$VAR`).
fn exec_start(text: &str) -> String {
    let line = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap_or_default();
    line.split_whitespace().filter(|w| !w.starts_with('$')).collect::<Vec<_>>().join(" ")
}

fn apply(step: &Step) -> anyhow::Result<()> {
    match step {
        Step::Write { path, text } => {
            // Written aside and renamed: a reader never sees half a unit.
            let tmp = path.with_extension("service.tmp");
            std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Step::Dir { path, mode, owner } => {
            std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                .with_context(|| format!("cannot set the mode of {}", path.display()))?;
            if let Some(owner) = owner {
                let spec = format!("{owner}:{owner}");
                let argv = ["chown".to_string(), spec, path.to_string_lossy().into_owned()];
                run(&argv)?;
            }
        }
        Step::Run(argv) => run(argv)?,
    }
    Ok(())
}

fn run(argv: &[String]) -> anyhow::Result<()> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("`{}` failed: {}", argv.join(" "), stderr.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_path_keeps_the_shipped_text_and_another_path_changes_only_exec_start() {
        for role in [InstallRole::Up, InstallRole::Server, InstallRole::Agent] {
            let shipped = unit(role).text;
            assert_eq!(unit_text(role, Path::new(PACKAGED_BIN)), shipped);
            let other = unit_text(role, Path::new("/opt/paas/bin/paas"));
            let changed: Vec<_> =
                shipped.lines().zip(other.lines()).filter(|(a, b)| a != b).map(|(_, b)| b).collect();
            assert_eq!(changed.len(), 1, "{changed:?}");
            assert!(changed[0].starts_with("ExecStart=/opt/paas/bin/paas "), "{changed:?}");
        }
    }

    #[test]
    fn every_unit_runs_as_paas_restarts_always_and_keeps_its_data_in_its_state_directory() {
        for role in [InstallRole::Up, InstallRole::Server, InstallRole::Agent] {
            let u = unit(role);
            let line = |key: &str| u.text.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
            assert_eq!(line("User=").as_deref(), Some("paas"), "{}", u.name);
            assert_eq!(line("Restart=").as_deref(), Some("always"), "{}", u.name);
            let state = line("StateDirectory=").unwrap();
            assert_eq!(format!("/var/lib/{state}"), u.data_dir, "{}", u.name);
            assert!(exec_start(u.text).contains(u.data_dir), "{}: {}", u.name, exec_start(u.text));
        }
    }
}
