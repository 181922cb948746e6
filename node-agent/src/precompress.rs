//! Compressed copies of a release's static files, made once when they are extracted (as
//! nginx's `gzip_static`/`brotli_static` expect them to be made at build time): brotli and gzip
//! copies of each text file, in trees beside the files (`br/`, `gz/`) that only the agent
//! writes, so a request never costs compression CPU and an image cannot plant its own
//! "compressed" copy of another file. Also says which file names are fingerprinted (and so may
//! be cached forever).

use anyhow::Context;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Files smaller than this are not worth a second request-time lookup.
const MIN_BYTES: u64 = 256;
/// Larger files are served as they are: compressing them would hold up the release's
/// extraction (brotli at a high quality runs at a few MiB/s).
const MAX_BYTES: u64 = 8 << 20;
/// Past this many bytes compressed in one directory, the rest is served as it is, so a large
/// directory does not hold up its release's switch for long.
const MAX_TOTAL: u64 = 64 << 20;
/// A copy is kept only when it is at most this share of the original (in percent).
const KEEP_PERCENT: u64 = 90;
/// Brotli quality 9 of 11: most of 11's gain at a fraction of its time.
const BROTLI_QUALITY: u32 = 9;
const BROTLI_WINDOW: u32 = 22;

/// An encoding the ingress can serve a copy in, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Br,
    Gzip,
}

impl Encoding {
    pub(crate) const ALL: [Encoding; 2] = [Encoding::Br, Encoding::Gzip];

    /// The `Content-Encoding` token, also the name of the tree the copies are in.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// The tree of copies beside `files` (the extracted root).
    pub(crate) fn root(self, files: &Path) -> PathBuf {
        files.with_file_name(match self {
            Encoding::Br => "br",
            Encoding::Gzip => "gz",
        })
    }

    fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoding::Br => {
                let mut out = Vec::with_capacity(data.len() / 3);
                let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, BROTLI_QUALITY, BROTLI_WINDOW);
                w.write_all(data)?;
                w.flush()?;
                drop(w);
                Ok(out)
            }
            Encoding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                w.write_all(data)?;
                w.finish()
            }
        }
    }
}

/// Whether a file of this name is text worth compressing (images, fonts and archives other
/// than SVG are compressed already).
pub(crate) fn compressible(name: &str) -> bool {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e).to_ascii_lowercase();
    matches!(
        ext.as_str(),
        "html"
            | "htm"
            | "css"
            | "js"
            | "mjs"
            | "json"
            | "map"
            | "txt"
            | "svg"
            | "xml"
            | "wasm"
            | "ico"
            | "csv"
            | "md"
    )
}

/// Whether the name carries a content hash (`app.3f2a9c1b.js`, `index-B1x9kQzA.css`,
/// `application-<64 hex>.css`): the part before the extension, after its last `.` or `-`, is 8
/// to 64 letters, digits or `_` with at least one digit. Such a file never changes under its
/// name, so clients may keep it for a year without asking again.
pub(crate) fn fingerprinted(name: &str) -> bool {
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    let Some(hash) = stem.rsplit(['.', '-']).next().filter(|h| h.len() < stem.len()) else {
        return false;
    };
    (8..=64).contains(&hash.len())
        && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && hash.bytes().any(|b| b.is_ascii_digit())
}

/// What [`precompress`] made.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Compressed {
    /// Files with at least one smaller copy.
    pub(crate) files: u64,
    /// Bytes of those files, and of their best copies.
    pub(crate) bytes_before: u64,
    pub(crate) bytes_after: u64,
}

/// Writes brotli and gzip copies of every compressible file under `files` into the trees
/// beside it. `files` holds only plain files and directories the agent wrote itself.
pub(crate) fn precompress(files: &Path) -> anyhow::Result<Compressed> {
    let mut made = Compressed::default();
    let mut read = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = files.join(&rel);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let rel = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(rel);
                continue;
            }
            let len = entry.metadata()?.len();
            if !kind.is_file() || !(MIN_BYTES..=MAX_BYTES).contains(&len) {
                continue;
            }
            if !compressible(&entry.file_name().to_string_lossy()) || read + len > MAX_TOTAL {
                continue;
            }
            read += len;
            let mut data = Vec::with_capacity(len as usize);
            std::fs::File::open(entry.path())?.take(MAX_BYTES).read_to_end(&mut data)?;
            let mut best = None::<u64>;
            for enc in Encoding::ALL {
                let copy = enc.compress(&data).with_context(|| format!("compressing {}", rel.display()))?;
                if (copy.len() as u64) * 100 > (data.len() as u64) * KEEP_PERCENT {
                    continue;
                }
                let path = enc.root(files).join(&rel);
                if let Some(parent) = path.parent() {
                    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent)?;
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&path)
                    .and_then(|mut f| f.write_all(&copy))
                    .with_context(|| format!("writing {}", path.display()))?;
                best = Some(best.map_or(copy.len() as u64, |b| b.min(copy.len() as u64)));
            }
            if let Some(best) = best {
                made.files += 1;
                made.bytes_before += data.len() as u64;
                made.bytes_after += best;
            }
        }
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_fingerprinted_names() {
        for yes in [
            "app.3f2a9c1b.js",
            "index-B1x9kQzA.css",
            "application-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.css",
            "chunk.2b7e1516_28ae.js",
            "logo.20260101.svg",
        ] {
            assert!(fingerprinted(yes), "{yes}");
        }
        for no in [
            "app.js",
            "style.css",
            "index-Dashboard.js",
            "jquery-3.7.1.min.js",
            "bundle-v2.js",
            "3f2a9c1b.js",
            "abcdefgh1.",
            "README",
            "app.3f2a9c1b0123456789abcdef0123456789abcdef0123456789abcdef0123456789.js",
        ] {
            assert!(!fingerprinted(no), "{no}");
        }
    }

    #[test]
    fn writes_smaller_copies_of_text_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let files = tmp.path().join("files");
        std::fs::create_dir_all(files.join("js")).unwrap();
        let text = "function hello() { return 'hello, world'; }\n".repeat(200);
        std::fs::write(files.join("js/app.js"), &text).unwrap();
        std::fs::write(files.join("tiny.css"), "a{}").unwrap();
        std::fs::write(files.join("photo.png"), text.as_bytes()).unwrap();
        // Random bytes do not shrink: no copy is kept.
        let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
        std::fs::write(files.join("noise.txt"), &noise).unwrap();
        let made = precompress(&files).unwrap();
        assert_eq!(made.files, 1, "{made:?}");
        assert_eq!(made.bytes_before, text.len() as u64);
        assert!(made.bytes_after * 10 < made.bytes_before, "{made:?}");

        let br = std::fs::read(tmp.path().join("br/js/app.js")).unwrap();
        let mut plain = Vec::new();
        brotli::Decompressor::new(&br[..], 4096).read_to_end(&mut plain).unwrap();
        assert_eq!(plain, text.as_bytes());
        let gz = std::fs::read(tmp.path().join("gz/js/app.js")).unwrap();
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut plain).unwrap();
        assert_eq!(plain, text);
        for absent in ["br/tiny.css", "br/photo.png", "gz/photo.png", "br/noise.txt", "gz/noise.txt"] {
            assert!(!tmp.path().join(absent).exists(), "{absent}");
        }
    }
}
