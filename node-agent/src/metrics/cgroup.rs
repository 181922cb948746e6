//! A container's CPU time and memory for metrics, read from its cgroup's files (v1 or v2,
//! Docker's cgroupfs or systemd driver): the same counters Docker's stats read, without a
//! request to dockerd per container. Where the files are not visible to the agent (it runs in
//! a container of its own, say), Docker's one-shot stats give the same figures.

use crate::docker::DockerClient;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// What a container has used: CPU time since it started, memory now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    /// Without the page cache the kernel can reclaim (inactive files), as `docker stats`.
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
}

/// Container `id`'s usage, from its cgroup or else from Docker.
pub async fn usage(docker: &DockerClient, id: &str) -> Option<Usage> {
    match from_files(Path::new(ROOT), id) {
        Some(u) => Some(u),
        None => docker.usage(id).await,
    }
}

/// Reads the cgroup files of container `id` under `root`.
pub fn from_files(root: &Path, id: &str) -> Option<Usage> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    let scope = format!("docker-{id}.scope");
    if root.join("cgroup.controllers").exists() {
        // v2: one directory per container.
        let dir = [root.join("system.slice").join(&scope), root.join("docker").join(id)]
            .into_iter()
            .find(|d| d.join("cpu.stat").exists())?;
        let cpu_usec = stat_field(&read(dir.join("cpu.stat"))?, "usage_usec")?;
        let current: u64 = read(dir.join("memory.current"))?.trim().parse().ok()?;
        let inactive =
            read(dir.join("memory.stat")).and_then(|s| stat_field(&s, "inactive_file")).unwrap_or(0);
        let limit = read(dir.join("memory.max")).and_then(|m| m.trim().parse::<u64>().ok());
        return Some(Usage {
            cpu_ns: cpu_usec * 1000,
            memory_bytes: current.saturating_sub(inactive),
            memory_limit_bytes: limit,
        });
    }
    // v1: one directory per controller.
    let find = |controllers: &[&str], file: &str| {
        controllers.iter().find_map(|c| {
            [root.join(c).join("docker").join(id), root.join(c).join("system.slice").join(&scope)]
                .into_iter()
                .map(|d| d.join(file))
                .find(|p| p.exists())
        })
    };
    let cpu = find(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"], "cpuacct.usage")?;
    let cpu_ns: u64 = read(cpu)?.trim().parse().ok()?;
    let usage = find(&["memory"], "memory.usage_in_bytes")?;
    let dir = usage.parent()?.to_path_buf();
    let current: u64 = read(usage)?.trim().parse().ok()?;
    let inactive =
        read(dir.join("memory.stat")).and_then(|s| stat_field(&s, "total_inactive_file")).unwrap_or(0);
    // v1 says "no limit" with a number near 2^63.
    let limit = read(dir.join("memory.limit_in_bytes"))
        .and_then(|m| m.trim().parse::<u64>().ok())
        .filter(|l| *l < 1 << 60);
    Some(Usage { cpu_ns, memory_bytes: current.saturating_sub(inactive), memory_limit_bytes: limit })
}

/// `name value` lines (`cpu.stat`, `memory.stat`).
fn stat_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: PathBuf, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn v2_and_v1_layouts_are_read() {
        let v2 = tempfile::tempdir().unwrap();
        let root = v2.path();
        write(root.join("cgroup.controllers"), "cpu memory\n");
        let dir = root.join("system.slice/docker-abc.scope");
        write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n");
        write(dir.join("memory.current"), "1000000\n");
        write(dir.join("memory.stat"), "anon 10\ninactive_file 200000\n");
        write(dir.join("memory.max"), "max\n");
        assert_eq!(
            from_files(root, "abc"),
            Some(Usage { cpu_ns: 1_500_000, memory_bytes: 800_000, memory_limit_bytes: None })
        );
        assert_eq!(from_files(root, "other"), None);

        let v1 = tempfile::tempdir().unwrap();
        let root = v1.path();
        write(root.join("cpuacct/docker/abc/cpuacct.usage"), "123456\n");
        write(root.join("memory/docker/abc/memory.usage_in_bytes"), "500\n");
        write(root.join("memory/docker/abc/memory.stat"), "cache 1\ntotal_inactive_file 100\n");
        write(root.join("memory/docker/abc/memory.limit_in_bytes"), "268435456\n");
        assert_eq!(
            from_files(root, "abc"),
            Some(Usage { cpu_ns: 123_456, memory_bytes: 400, memory_limit_bytes: Some(268_435_456) })
        );
        write(root.join("memory/docker/abc/memory.limit_in_bytes"), "9223372036854771712\n");
        assert_eq!(from_files(root, "abc").unwrap().memory_limit_bytes, None);
    }
}
