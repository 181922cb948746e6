//! Packs an app directory into the gzipped tar the build uses, honouring `.dockerignore`.

use crate::dockerignore::DockerIgnore;
use anyhow::Context;
use flate2::write::GzEncoder;
use std::path::Path;

/// Files the build always needs, even when `.dockerignore` lists them (Docker does the same).
const ALWAYS: &[&str] = &["Dockerfile", ".dockerignore"];

pub struct Bundle {
    pub bytes: Vec<u8>,
    pub files: usize,
}

/// Packs `dir`; `manifest`, when given, replaces the directory's `paas.toml` in the bundle
/// (used when flags override it).
pub fn pack(dir: &Path, manifest: Option<&str>) -> anyhow::Result<Bundle> {
    let meta =
        std::fs::metadata(dir).with_context(|| format!("cannot read the directory {}", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a directory", dir.display());
    anyhow::ensure!(
        dir.join("Dockerfile").is_file(),
        "{} has no Dockerfile; add one, or deploy an existing image with --image",
        dir.display()
    );
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => DockerIgnore::parse(&text),
        Err(_) => DockerIgnore::parse(""),
    };
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    tar.follow_symlinks(false);
    let mut files = 0;
    let skip = if manifest.is_some() { Some("paas.toml") } else { None };
    add_dir(&mut tar, dir, "", &ignore, skip, &mut files)?;
    if let Some(text) = manifest {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "paas.toml", text.as_bytes())?;
        files += 1;
    }
    let bytes = tar.into_inner()?.finish()?;
    Ok(Bundle { bytes, files })
}

fn add_dir(
    tar: &mut tar::Builder<GzEncoder<Vec<u8>>>,
    root: &Path,
    rel: &str,
    ignore: &DockerIgnore,
    skip: Option<&str>,
    files: &mut usize,
) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let kind = entry.file_type()?;
        if skip == Some(path.as_str()) {
            continue;
        }
        if ignore.excluded(&path) && !(rel.is_empty() && ALWAYS.contains(&name.as_str())) {
            // A later `!pattern` may re-include something inside an excluded directory.
            if !(kind.is_dir() && might_reinclude(ignore, &path)) {
                continue;
            }
        }
        if kind.is_dir() {
            add_dir(tar, root, &path, ignore, None, files)?;
        } else if kind.is_file() || kind.is_symlink() {
            tar.append_path_with_name(entry.path(), &path).with_context(|| format!("adding {path}"))?;
            *files += 1;
        }
    }
    Ok(())
}

fn might_reinclude(ignore: &DockerIgnore, dir: &str) -> bool {
    ignore.has_exceptions_under(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn packs_what_dockerignore_allows() {
        let dir = std::env::temp_dir().join(format!("paas-bundle-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.join(".dockerignore"), "logs\n*.secret\n.dockerignore\n").unwrap();
        std::fs::write(dir.join("app.py"), "print()\n").unwrap();
        std::fs::write(dir.join("db.secret"), "x").unwrap();
        std::fs::write(dir.join("logs/a.log"), "x").unwrap();
        let bundle = pack(&dir, None).unwrap();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bundle.bytes[..]));
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
        }
        names.sort();
        assert_eq!(names, vec![".dockerignore", "Dockerfile", "app.py"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_dockerfile_is_refused() {
        let dir = std::env::temp_dir().join(format!("paas-bundle-nodf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = pack(&dir, None).err().unwrap().to_string();
        assert!(err.contains("no Dockerfile"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
