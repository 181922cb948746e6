//! The app a directory belongs to, so `--app` can be left out inside it (as Heroku's CLI reads
//! the git remote): `app = "..."` at the top of its `paas.toml` (written by `paas link` and by
//! `paas apps create` in an app's directory), else the app of a git remote named `paas`
//! (`.../git/APP.git`). `main` puts it in `PAAS_APP`, which every `--app` falls back to.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The app `dir` is linked to, if any.
pub fn linked_app(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("paas.toml")) {
        let app = text.parse::<toml::Table>().ok().and_then(|t| t.get("app")?.as_str().map(str::to_string));
        if app.is_some() {
            return app;
        }
    }
    if !dir.join(".git").exists() {
        return None;
    }
    let out = Command::new("git")
        .args(["remote", "get-url", "paas"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    app_of_remote(String::from_utf8(out.stdout).ok()?.trim())
}

/// `APP` of `http://host:7070/git/APP.git`.
fn app_of_remote(url: &str) -> Option<String> {
    let last = url.trim_end_matches('/').rsplit('/').next()?;
    let app = last.strip_suffix(".git").unwrap_or(last);
    (!app.is_empty()).then(|| app.to_string())
}

/// Whether `dir` looks like an app's source (so `apps create` may link it).
pub fn is_app_dir(dir: &Path) -> bool {
    dir.join("paas.toml").is_file() || dir.join("Dockerfile").is_file()
}

/// Records `app` in `dir/paas.toml`: replaces a top-level `app = ...` line, or puts one first
/// (top-level keys must come before any table), keeping everything else as written.
pub fn link(dir: &Path, app: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("paas.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let line = format!("app = \"{app}\"");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let top_level = lines.iter().position(|l| l.trim_start().starts_with('[')).unwrap_or(lines.len());
    let existing = lines[..top_level].iter().position(|l| {
        l.trim_start().strip_prefix("app").is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    match existing {
        Some(i) => lines[i] = line,
        None => lines.insert(0, line),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_writes_the_app_first_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(linked_app(dir.path()), None);
        std::fs::write(dir.path().join("paas.toml"), "# my app\n[processes.web]\nport = 8080\n").unwrap();
        link(dir.path(), "shop").unwrap();
        let text = std::fs::read_to_string(dir.path().join("paas.toml")).unwrap();
        assert_eq!(text, "app = \"shop\"\n# my app\n[processes.web]\nport = 8080\n");
        assert_eq!(linked_app(dir.path()).as_deref(), Some("shop"));
        link(dir.path(), "shop-two").unwrap();
        let text = std::fs::read_to_string(dir.path().join("paas.toml")).unwrap();
        assert_eq!(text, "app = \"shop-two\"\n# my app\n[processes.web]\nport = 8080\n");
        protocol::manifest::parse(&text, "production").expect("the server takes a linked paas.toml");
    }

    #[test]
    fn reads_the_app_of_a_git_remote() {
        assert_eq!(app_of_remote("http://127.0.0.1:7070/git/hello.git").as_deref(), Some("hello"));
        assert_eq!(app_of_remote("https://paas.example.com/git/shop-eu.git/").as_deref(), Some("shop-eu"));
        assert_eq!(app_of_remote(""), None);
    }
}
