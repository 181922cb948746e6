//! The `paas.toml` manifest: processes (command, port, replicas), health checks, deploy settings
//! and per-environment overrides. Parsing is here, with no IO, so the CLI (before upload) and the
//! control plane (from a pushed or uploaded source) report the same errors, naming line and key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[path = "manifest_cron.rs"]
mod cron;
pub use cron::CronJob;

/// What a release runs: every process and how to check and roll it out. Stored with the release
/// (the formation snapshot), so a rollback runs exactly what ran before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub processes: BTreeMap<String, ProcessSpec>,
    pub deploy: DeploySettings,
    /// Release phase: argv run once per release in a one-off container of the new image,
    /// before it takes traffic (database migrations, say). A failure stops the deploy.
    pub release_command: Option<Vec<String>>,
    /// Static files the ingress serves itself, with cache headers, from the release's image.
    pub static_files: Option<StaticFiles>,
    /// How the ingress protects the web process (releases stored before it get the defaults).
    #[serde(default)]
    pub ingress: IngressLimits,
    /// Scheduled one-off commands (`[cron.<name>]`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cron: BTreeMap<String, CronJob>,
}

/// What the ingress lets through to an environment's web process (`[ingress]`), so one client
/// or one traffic spike cannot take the app, or the memory of the ingress, down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IngressLimits {
    /// Largest request body; larger ones are answered 413.
    pub max_body_bytes: u64,
    /// Requests to the app in flight at once (across its hostnames); past it, 503 at once
    /// rather than a queue that grows while the app is stuck.
    pub max_concurrent: u32,
    /// Requests per second one client address may send; 0 means no rate limit.
    pub rate_per_sec: u32,
    /// Requests a client may send at once before the rate applies (at least 1 when limited).
    pub rate_burst: u32,
    /// Plain-HTTP requests are redirected (308) to HTTPS.
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=` on HTTPS responses; 0: none.
    pub hsts_max_age_secs: u64,
}

impl Default for IngressLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 100 * MIB,
            max_concurrent: 1000,
            rate_per_sec: 0,
            rate_burst: 0,
            https_redirect: false,
            hsts_max_age_secs: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticFiles {
    /// Absolute directory inside the image, e.g. `/app/public`.
    pub dir: String,
    /// URL path prefix, starting and ending with `/`, e.g. `/static/`.
    pub prefix: String,
    /// `Cache-Control: public, max-age=...`
    pub max_age_secs: u64,
    /// The app's own pages for answers the ingress gives itself (`[errors]`): a status
    /// (`"503"`) or class (`"5xx"`) to a file under `dir`.
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
}

/// The answers the ingress gives itself for an app that an `[errors]` page may replace (its
/// 404 is for hosts no app has, so no app's page could apply).
pub const ERROR_PAGE_STATUSES: [&str; 8] = ["408", "413", "429", "502", "503", "504", "4xx", "5xx"];

/// The `[errors]` page for `status`: its own, else its class's.
pub fn error_page(errors: &BTreeMap<String, String>, status: u16) -> Option<&str> {
    let class = format!("{}xx", status / 100);
    errors.get(&status.to_string()).or_else(|| errors.get(&class)).map(String::as_str)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv; `None` runs the image's own command.
    pub command: Option<Vec<String>>,
    /// Port the process listens on (`PORT`); only `web` is routed by the ingress.
    pub port: u16,
    pub replicas: u32,
    pub healthcheck: HealthCheck,
    /// Releases stored before limits existed get the defaults.
    #[serde(default)]
    pub limits: Limits,
    /// What the scheduler sets aside on a node for each replica (`reserve_cpus`,
    /// `reserve_memory`): small by default, so a node holds hundreds of small apps, and apart
    /// from the limits, which cap what a replica may use.
    #[serde(default = "default_reserve")]
    pub reserve: crate::agent::Capacity,
}

/// 5 thousandths of a CPU and 32 MiB a replica, unless `paas.toml` says otherwise.
pub fn default_reserve() -> crate::agent::Capacity {
    crate::agent::Capacity { millicpus: 5, memory_bytes: 32 * MIB }
}

/// What each container of a process may use. Docker enforces it, so a memory hog or a fork
/// bomb in one app is stopped inside that app's containers and never starves the node, the
/// platform or other apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (and, with no swap, memory plus swap); the kernel OOM-kills past it.
    pub memory_bytes: u64,
    /// CPU time in thousandths of a CPU (1000 = one core).
    pub millicpus: u32,
    /// Processes and threads.
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_bytes: 512 * MIB, millicpus: 1000, pids: 256 }
    }
}

const MIB: u64 = 1024 * 1024;

impl Limits {
    /// `512M, 1 CPU, 256 pids`, as `paas ps` shows it.
    pub fn describe(&self) -> String {
        let mem = if self.memory_bytes.is_multiple_of(1024 * MIB) {
            format!("{}G", self.memory_bytes / (1024 * MIB))
        } else {
            format!("{}M", self.memory_bytes / MIB)
        };
        let cpus = format!("{}", f64::from(self.millicpus) / 1000.0);
        format!("{mem}, {cpus} CPU, {} pids", self.pids)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Probe {
    /// The port accepts TCP connections.
    Tcp,
    /// `GET path` answers `expect_status` (any 2xx/3xx when `None`).
    Http { path: String, expect_status: Option<u16> },
    /// The command, run inside the container, exits 0.
    Command { command: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive passes before a replica counts as healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures before a healthy replica is taken out of rotation.
    pub unhealthy_threshold: u32,
    /// Failures in this window after a start do not count against the replica.
    pub start_period_ms: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            probe: Probe::Tcp,
            interval_ms: 2_000,
            timeout_ms: 2_000,
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            start_period_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySettings {
    /// How long new replicas may take to become healthy.
    pub timeout_ms: u64,
    /// After all new replicas are healthy, they must stay up this long before the switch.
    pub stability_window_ms: u64,
    /// How long retired replicas get to finish in-flight requests before SIGTERM.
    pub drain_timeout_ms: u64,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace_ms: u64,
}

impl Default for DeploySettings {
    fn default() -> Self {
        Self {
            timeout_ms: 120_000,
            stability_window_ms: 3_000,
            drain_timeout_ms: 30_000,
            stop_grace_ms: 10_000,
        }
    }
}

impl Default for Manifest {
    fn default() -> Self {
        let web = ProcessSpec {
            command: None,
            port: crate::DEFAULT_PORT,
            replicas: 1,
            healthcheck: HealthCheck::default(),
            limits: Limits::default(),
            reserve: default_reserve(),
        };
        Self {
            processes: BTreeMap::from([("web".to_string(), web)]),
            deploy: DeploySettings::default(),
            release_command: None,
            static_files: None,
            ingress: IngressLimits::default(),
            cron: BTreeMap::new(),
        }
    }
}

impl Manifest {
    pub fn web(&self) -> Option<&ProcessSpec> {
        self.processes.get("web")
    }
}

/// Why a manifest was refused: says where, when the TOML parser knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("paas.toml{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ManifestError {
    pub line: Option<usize>,
    pub message: String,
}

// --- the file format (what users write) ---

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    /// The app the directory is linked to (`paas link`): read by the CLI only.
    #[serde(default)]
    #[allow(dead_code)]
    app: Option<String>,
    #[serde(default)]
    processes: BTreeMap<String, FileProcess>,
    #[serde(default)]
    deploy: FileDeploy,
    /// Per-environment overrides, same shape as the top level.
    #[serde(default)]
    env: BTreeMap<String, FileOverride>,
    release: Option<FileRelease>,
    #[serde(default, rename = "static")]
    static_files: Option<FileStatic>,
    #[serde(default)]
    ingress: FileIngress,
    /// Status (or class) to a page in the static directory.
    #[serde(default)]
    errors: BTreeMap<String, String>,
    #[serde(default)]
    cron: BTreeMap<String, cron::FileCron>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileIngress {
    /// `"10M"`, `"512k"` or a number of bytes.
    max_body: Option<SizeValue>,
    max_concurrent: Option<u32>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    https_redirect: Option<bool>,
    /// `"365d"`, `"1y"`: how long browsers keep to HTTPS.
    hsts: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileStatic {
    dir: String,
    prefix: Option<String>,
    max_age: Option<DurationValue>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileRelease {
    command: Vec<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileOverride {
    #[serde(default)]
    processes: BTreeMap<String, FileProcess>,
    #[serde(default)]
    deploy: FileDeploy,
    #[serde(default)]
    ingress: FileIngress,
    #[serde(default)]
    cron: BTreeMap<String, cron::FileCron>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileProcess {
    command: Option<Vec<String>>,
    port: Option<u16>,
    replicas: Option<u32>,
    healthcheck: Option<FileHealth>,
    /// `"512M"`, `"1G"`, `"256MiB"`.
    memory: Option<String>,
    cpus: Option<Number>,
    pids: Option<u32>,
    reserve_memory: Option<String>,
    reserve_cpus: Option<Number>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Float(f64),
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<String>,
    expect_status: Option<u16>,
    command: Option<Vec<String>>,
    interval: Option<DurationValue>,
    timeout: Option<DurationValue>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
    start_period: Option<DurationValue>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct FileDeploy {
    timeout: Option<DurationValue>,
    stability_window: Option<DurationValue>,
    drain_timeout: Option<DurationValue>,
    stop_grace: Option<DurationValue>,
}

/// `"500ms"`, `"2s"`, `"1m"`, `"1h 30m"` (humantime's syntax), or a number of seconds.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum DurationValue {
    Seconds(u64),
    Text(String),
}

/// A duration in milliseconds; one too long to count in milliseconds is refused, not wrapped.
fn parse_duration(key: &str, v: &DurationValue) -> Result<u64, ManifestError> {
    let bad = |why: String| ManifestError {
        line: None,
        message: format!("{key} must be a duration like \"500ms\", \"2s\" or \"1m\": {why}"),
    };
    let ms = match v {
        DurationValue::Seconds(s) => s.checked_mul(1000),
        // Spaces are dropped first: `2 s` has always been accepted, and humantime wants `2s`.
        DurationValue::Text(t) => {
            let t: String = t.split_whitespace().collect();
            let d = humantime::parse_duration(&t).map_err(|e| bad(e.to_string()))?;
            u64::try_from(d.as_millis()).ok()
        }
    };
    ms.ok_or_else(|| bad("it is too long".into()))
}

/// Parses `paas.toml` for environment `env`: the top level, then `[env.<env>]` on top.
pub fn parse(text: &str, env: &str) -> Result<Manifest, ManifestError> {
    let file: File = toml::from_str(text).map_err(|e| ManifestError {
        line: e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: in_words(e.message().trim()),
    })?;
    let mut m = Manifest::default();
    if let Some(r) = &file.release {
        if r.command.is_empty() {
            return Err(ManifestError { line: None, message: "release.command must not be empty".into() });
        }
        m.release_command = Some(r.command.clone());
    }
    if let Some(st) = &file.static_files {
        let err = |message: String| ManifestError { line: None, message };
        if !st.dir.starts_with('/') || st.dir.split('/').any(|c| c == "..") {
            return Err(err("static.dir must be an absolute path inside the image, without '..'".into()));
        }
        let prefix = st.prefix.clone().unwrap_or_else(|| "/static/".into());
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix == "/" {
            return Err(err(
                "static.prefix must start and end with '/' and not be \"/\", e.g. \"/static/\"".into()
            ));
        }
        let max_age_ms = match &st.max_age {
            Some(v) => parse_duration("static.max_age", v)?,
            None => 3_600_000,
        };
        m.static_files = Some(StaticFiles {
            dir: st.dir.trim_end_matches('/').to_string(),
            prefix,
            max_age_secs: max_age_ms / 1000,
            errors: error_pages(&file.errors)?,
        });
    } else if !file.errors.is_empty() {
        return Err(ManifestError {
            line: None,
            message: "[errors] pages are files of the static directory: add [static] with its dir".into(),
        });
    }
    apply(&mut m, &file.processes, &file.deploy, "")?;
    apply_ingress(&mut m.ingress, &file.ingress, "")?;
    if let Some(o) = file.env.get(env) {
        apply(&mut m, &o.processes, &o.deploy, &format!("env.{env}."))?;
        apply_ingress(&mut m.ingress, &o.ingress, &format!("env.{env}."))?;
    }
    m.cron = cron::jobs(&file.cron, file.env.get(env).map(|o| &o.cron), env)?;
    validate(&m)?;
    Ok(m)
}

/// The TOML parser's type names in the words of `paas.toml`'s keys (only `port` is a u16).
fn in_words(message: &str) -> String {
    [
        ("expected u16", "expected a port number (1 to 65535)"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list, e.g. [\"python3\", \"app.py\"]"),
    ]
    .iter()
    .fold(message.to_string(), |m, (rust, words)| m.replace(rust, words))
}

/// Checks `[errors]`: known statuses, and clean paths relative to the static directory.
fn error_pages(pages: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ManifestError> {
    let err = |message: String| ManifestError { line: None, message };
    for (status, path) in pages {
        if !ERROR_PAGE_STATUSES.contains(&status.as_str()) {
            return Err(err(format!(
                "errors.{status}: the ingress answers only {} itself, so only those can have a page",
                ERROR_PAGE_STATUSES.join(", ")
            )));
        }
        let clean = |p: &str| !p.is_empty() && p != "." && p != "..";
        if path.starts_with('/') || path.contains('\\') || !path.split('/').all(clean) {
            return Err(err(format!(
                "errors.{status} must be a path inside the static directory, e.g. \"errors/{status}.html\""
            )));
        }
    }
    Ok(pages.clone())
}

fn apply(
    m: &mut Manifest,
    processes: &BTreeMap<String, FileProcess>,
    deploy: &FileDeploy,
    prefix: &str,
) -> Result<(), ManifestError> {
    for (name, p) in processes {
        crate::names::check_process(name)
            .map_err(|e| ManifestError { line: None, message: e.to_string() })?;
        let key = format!("{prefix}processes.{name}");
        let entry = m.processes.entry(name.clone()).or_insert_with(|| ProcessSpec {
            command: None,
            port: crate::DEFAULT_PORT,
            replicas: 1,
            healthcheck: HealthCheck::default(),
            limits: Limits::default(),
            reserve: default_reserve(),
        });
        if let Some(c) = &p.command {
            if c.is_empty() {
                return Err(ManifestError {
                    line: None,
                    message: format!("{key}.command must not be empty"),
                });
            }
            entry.command = Some(c.clone());
        }
        if let Some(port) = p.port {
            entry.port = port;
        }
        if let Some(r) = p.replicas {
            entry.replicas = r;
        }
        if let Some(h) = &p.healthcheck {
            apply_health(&mut entry.healthcheck, h, &format!("{key}.healthcheck"))?;
        }
        apply_limits(&mut entry.limits, p, &key)?;
        apply_reserve(entry, p, &key)?;
    }
    let d = &mut m.deploy;
    let k = |s: &str| format!("{prefix}deploy.{s}");
    if let Some(v) = &deploy.timeout {
        d.timeout_ms = parse_duration(&k("timeout"), v)?;
    }
    if let Some(v) = &deploy.stability_window {
        d.stability_window_ms = parse_duration(&k("stability_window"), v)?;
    }
    if let Some(v) = &deploy.drain_timeout {
        d.drain_timeout_ms = parse_duration(&k("drain_timeout"), v)?;
    }
    if let Some(v) = &deploy.stop_grace {
        d.stop_grace_ms = parse_duration(&k("stop_grace"), v)?;
    }
    Ok(())
}

fn apply_limits(l: &mut Limits, p: &FileProcess, key: &str) -> Result<(), ManifestError> {
    let err = |message: String| ManifestError { line: None, message };
    if let Some(m) = &p.memory {
        l.memory_bytes = parse_memory(m).filter(|b| *b >= 16 * MIB).ok_or_else(|| {
            err(format!("{key}.memory must be a size of at least 16M, like \"512M\" or \"2G\""))
        })?;
    }
    if let Some(c) = p.cpus {
        let cpus = match c {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        };
        if !(0.01..=256.0).contains(&cpus) {
            return Err(err(format!(
                "{key}.cpus must be a number of CPUs between 0.01 and 256, like 0.5 or 2"
            )));
        }
        l.millicpus = (cpus * 1000.0).round() as u32;
    }
    if let Some(n) = p.pids {
        if !(16..=1_000_000).contains(&n) {
            return Err(err(format!("{key}.pids must be between 16 and 1000000")));
        }
        l.pids = n;
    }
    Ok(())
}

/// `reserve_memory` and `reserve_cpus`: at most the limits, since a replica can never use more.
fn apply_reserve(entry: &mut ProcessSpec, p: &FileProcess, key: &str) -> Result<(), ManifestError> {
    let err = |message: String| ManifestError { line: None, message };
    if let Some(m) = &p.reserve_memory {
        entry.reserve.memory_bytes = parse_memory(m)
            .ok_or_else(|| err(format!("{key}.reserve_memory must be a size, like \"64M\" or \"1G\"")))?;
    }
    if let Some(c) = p.reserve_cpus {
        let cpus = match c {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        };
        if !(0.0..=256.0).contains(&cpus) {
            return Err(err(format!("{key}.reserve_cpus must be a number of CPUs from 0 to 256, like 0.25")));
        }
        entry.reserve.millicpus = (cpus * 1000.0).round() as u64;
    }
    // A default reservation never exceeds the limits a user lowered.
    if p.reserve_memory.is_none() {
        entry.reserve.memory_bytes = entry.reserve.memory_bytes.min(entry.limits.memory_bytes);
    }
    if p.reserve_cpus.is_none() {
        entry.reserve.millicpus = entry.reserve.millicpus.min(u64::from(entry.limits.millicpus));
    }
    if entry.reserve.memory_bytes > entry.limits.memory_bytes {
        return Err(err(format!(
            "{key}.reserve_memory is more than its memory limit ({}M); a replica can never use it",
            entry.limits.memory_bytes / MIB
        )));
    }
    if entry.reserve.millicpus > u64::from(entry.limits.millicpus) {
        return Err(err(format!(
            "{key}.reserve_cpus is more than its cpus limit ({}); a replica can never use it",
            f64::from(entry.limits.millicpus) / 1000.0
        )));
    }
    Ok(())
}

/// Most requests in flight to one app that `ingress.max_concurrent` may allow.
const MAX_CONCURRENT: u32 = 100_000;
/// Highest `ingress.rate_limit` and `ingress.rate_burst`.
const MAX_RATE: u32 = 1_000_000;

fn apply_ingress(l: &mut IngressLimits, f: &FileIngress, prefix: &str) -> Result<(), ManifestError> {
    let err = |message: String| Err(ManifestError { line: None, message });
    let key = |s: &str| format!("{prefix}ingress.{s}");
    if let Some(v) = &f.max_body {
        let bytes = match v {
            SizeValue::Bytes(b) => Some(*b),
            SizeValue::Text(t) => parse_memory(t),
        };
        match bytes {
            Some(b) if (1024..=64 * 1024 * MIB).contains(&b) => l.max_body_bytes = b,
            _ => return err(format!("{} must be a size between 1k and 64G, like \"10M\"", key("max_body"))),
        }
    }
    if let Some(n) = f.max_concurrent {
        if !(1..=MAX_CONCURRENT).contains(&n) {
            return err(format!("{} must be between 1 and {MAX_CONCURRENT}", key("max_concurrent")));
        }
        l.max_concurrent = n;
    }
    if let Some(n) = f.rate_limit {
        // 0 turns a limit set at the top level off for this environment.
        if n > MAX_RATE {
            return err(format!("{} must be at most {MAX_RATE} requests per second", key("rate_limit")));
        }
        l.rate_per_sec = n;
        // The burst follows the rate unless given: a client may send one second's worth at once.
        l.rate_burst = n;
    }
    if let Some(n) = f.rate_burst {
        if !(1..=MAX_RATE).contains(&n) {
            return err(format!("{} must be between 1 and {MAX_RATE}", key("rate_burst")));
        }
        if l.rate_per_sec == 0 {
            return err(format!("{} needs {} to be set too", key("rate_burst"), key("rate_limit")));
        }
        l.rate_burst = n;
    }
    if let Some(on) = f.https_redirect {
        l.https_redirect = on;
    }
    if let Some(text) = &f.hsts {
        match humantime::parse_duration(text) {
            Ok(d) if d.as_secs() <= 2 * 366 * 24 * 3600 => l.hsts_max_age_secs = d.as_secs(),
            _ => {
                return err(format!(
                    "{} must be a duration of at most 2 years, like \"365d\" (\"0s\" turns it off)",
                    key("hsts")
                ))
            }
        }
    }
    Ok(())
}

/// `"512M"`, `"512MB"`, `"512MiB"`, `"1G"`, `"64k"` or a number of bytes, in powers of 1024.
pub fn parse_memory(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn apply_health(h: &mut HealthCheck, f: &FileHealth, key: &str) -> Result<(), ManifestError> {
    let err = |message: String| ManifestError { line: None, message };
    let kind = f.kind.as_deref().unwrap_or(match (&f.path, &f.command) {
        (Some(_), _) => "http",
        (None, Some(_)) => "command",
        _ => "tcp",
    });
    h.probe = match kind {
        "tcp" => Probe::Tcp,
        "http" => {
            let path = f.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err(err(format!("{key}.path must start with '/'")));
            }
            Probe::Http { path, expect_status: f.expect_status }
        }
        "command" => match &f.command {
            Some(c) if !c.is_empty() => Probe::Command { command: c.clone() },
            _ => return Err(err(format!("{key}.command is required for a command health check"))),
        },
        other => {
            return Err(err(format!("{key}.type {other:?} is not one of \"http\", \"tcp\", \"command\"")))
        }
    };
    if let Some(v) = &f.interval {
        h.interval_ms = parse_duration(&format!("{key}.interval"), v)?;
    }
    if let Some(v) = &f.timeout {
        h.timeout_ms = parse_duration(&format!("{key}.timeout"), v)?;
    }
    if let Some(v) = &f.start_period {
        h.start_period_ms = parse_duration(&format!("{key}.start_period"), v)?;
    }
    if let Some(n) = f.healthy_threshold {
        h.healthy_threshold = n;
    }
    if let Some(n) = f.unhealthy_threshold {
        h.unhealthy_threshold = n;
    }
    Ok(())
}

/// Checks what the types alone cannot; also run on manifests that arrive as JSON.
pub fn validate(m: &Manifest) -> Result<(), ManifestError> {
    let err = |message: String| Err(ManifestError { line: None, message });
    if m.web().is_none() {
        return err("a `web` process is required".into());
    }
    for (name, p) in &m.processes {
        if p.port == 0 {
            return err(format!("processes.{name}.port must be between 1 and 65535"));
        }
        if p.replicas > 100 {
            return err(format!("processes.{name}.replicas must be at most 100"));
        }
        let h = &p.healthcheck;
        if h.interval_ms < 100 || h.timeout_ms < 100 {
            return err(format!("processes.{name}.healthcheck interval and timeout must be at least 100ms"));
        }
        if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
            return err(format!("processes.{name}.healthcheck thresholds must be at least 1"));
        }
    }
    if m.deploy.timeout_ms < 1000 {
        return err("deploy.timeout must be at least 1s".into());
    }
    Ok(())
}

impl DeploySettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
    pub fn stability_window(&self) -> Duration {
        Duration::from_millis(self.stability_window_ms)
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
