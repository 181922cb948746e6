//! Uploaded source bundles: where they are kept and what the control plane reads from them
//! (the `paas.toml` manifest), without unpacking anything to disk.

use protocol::manifest::{self, Manifest, ManifestError};
use std::io::Read;
use std::path::Path;

/// Largest `paas.toml` read; anything bigger is not a manifest.
const MAX_MANIFEST: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the upload is not a gzipped tar archive: {0}")]
    NotATar(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Reads `paas.toml` from the bundle's top level and parses it for `env`; defaults (and an empty
/// text) when the bundle has none.
pub fn manifest_from_bundle(path: &Path, env: &str) -> Result<(Manifest, String), SourceError> {
    let file = std::fs::File::open(path).map_err(|e| SourceError::NotATar(e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive.entries().map_err(|e| SourceError::NotATar(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| SourceError::NotATar(e.to_string()))?;
        let name =
            entry.path().map_err(|e| SourceError::NotATar(e.to_string()))?.to_string_lossy().into_owned();
        if name.trim_start_matches("./") == "paas.toml" {
            let mut text = String::new();
            entry
                .take(MAX_MANIFEST)
                .read_to_string(&mut text)
                .map_err(|_| ManifestError { line: None, message: "paas.toml is not UTF-8 text".into() })?;
            return Ok((manifest::parse(&text, env)?, text));
        }
    }
    Ok((Manifest::default(), String::new()))
}
