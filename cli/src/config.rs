//! The CLI config file (`$XDG_CONFIG_HOME/paas/config.toml`): server URL and token, written by
//! `paas up` and `paas login`, read by every other command.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CliConfig {
    pub server: Option<String>,
    pub token: Option<String>,
    /// The CA an https:// server's certificate chains to, when not a public one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// `$XDG_CONFIG_HOME/paas/config.toml`, falling back to `~/.config`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
        .context("cannot find a config directory: set XDG_CONFIG_HOME or HOME")?;
    Ok(base.join("paas").join("config.toml"))
}

/// `$XDG_DATA_HOME/<name>`, falling back to `~/.local/share/<name>`.
pub fn default_data_dir(name: &str) -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local").join("share")))
        .context("cannot find a data directory: set XDG_DATA_HOME, HOME or pass --data-dir")?;
    Ok(base.join(name))
}

pub fn load(path: &Path) -> anyhow::Result<CliConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .with_context(|| format!("the CLI config {} is not valid TOML", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CliConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading the CLI config {}", path.display())),
    }
}

/// Writes the config readable by its owner only: it holds a token.
pub fn save(path: &Path, config: &CliConfig) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = toml::to_string(config)?;
    protocol::files::write_private(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
