//! Static files the ingress serves itself (the manifest's `[static]` directory, extracted from
//! the release's image by the agent), with long-lived cache headers, ETags and single byte
//! ranges, streamed from disk, so assets never cost the app a request. Text files go out in the
//! brotli or gzip copy made at extraction (`crate::precompress`) when the client accepts it;
//! fingerprinted names are marked immutable.
//!
//! Files are opened one path component at a time relative to the directory opened before it,
//! each with `O_NOFOLLOW`: a symlink anywhere on the path (absolute, relative, to a directory)
//! fails the open, so nothing outside the extracted root is ever reached, even if the
//! extraction (which writes no links) were bypassed. A file with more than one hard link is
//! refused for the same reason.

use super::proxy::{BoxError, RespBody};
use crate::precompress::{compressible, fingerprinted, Encoding};
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use protocol::agent::StaticRoute;
use rustix::fs::{Mode, OFlags};
use std::io::{Read, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

/// Largest `[errors]` page served; a larger one is left for the platform's own.
const MAX_PAGE: u64 = 1 << 20;
/// Read size when streaming a file.
const CHUNK: usize = 64 * 1024;
/// A year: what `immutable` files may be kept for (RFC 8246 recommends it with a long max-age).
const IMMUTABLE_MAX_AGE: u64 = 365 * 24 * 3600;

/// The path components under `prefix` that `path` names, if the path is a clean relative path
/// (no `..`, `.`, empty parts, NULs or backslashes, also when percent-encoded).
pub(crate) fn components(prefix: &str, path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix(prefix)?;
    let decoded = percent_decode(rest)?;
    let mut parts = Vec::new();
    for part in decoded.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') || part.contains('\\') {
            return None;
        }
        parts.push(part.to_string());
    }
    Some(parts)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Opens the regular file `parts` names under `root` without following any symlink on the way
/// (see the module comment). `None` for anything else: missing, a link, a directory, a device,
/// a file with several hard links.
pub(crate) fn open_beneath(root: &Path, parts: &[String]) -> Option<std::fs::File> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (last, dirs) = parts.split_last()?;
    let mut dir =
        rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    for part in dirs {
        dir = rustix::fs::openat(&dir, part.as_str(), dir_flags, Mode::empty()).ok()?;
    }
    // NONBLOCK: opening a fifo must not wait for a writer (it is refused below anyway).
    let file_flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = std::fs::File::from(rustix::fs::openat(&dir, last.as_str(), file_flags, Mode::empty()).ok()?);
    let meta = file.metadata().ok()?;
    (meta.is_file() && meta.nlink() == 1).then_some(file)
}

/// What a `Range` header asks of a file of `len` bytes. Only single ranges are supported;
/// anything else (several ranges, other units, bad syntax) is ignored, which RFC 9110 allows,
/// and gets the whole file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ByteRange {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

pub(crate) fn parse_range(header: &str, len: u64) -> ByteRange {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return ByteRange::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let number = |s: &str| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (first, last) {
        ("", suffix) => match number(suffix) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if len == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part(len.saturating_sub(n), len - 1),
            None => ByteRange::Whole,
        },
        (first, "") => match number(first) {
            Some(a) if a >= len => ByteRange::Unsatisfiable,
            Some(a) => ByteRange::Part(a, len - 1),
            None => ByteRange::Whole,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(a), Some(b)) if b < a => ByteRange::Whole,
            (Some(a), Some(_)) if a >= len => ByteRange::Unsatisfiable,
            (Some(a), Some(b)) => ByteRange::Part(a, b.min(len - 1)),
            _ => ByteRange::Whole,
        },
    }
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e).to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Whether `Accept-Encoding` allows `enc` (RFC 9110 12.5.3): its own entry's weight decides,
/// else a `*` entry's; a weight of 0 refuses.
pub(crate) fn accepts(headers: &HeaderMap, enc: Encoding) -> bool {
    let (mut own, mut any) = (None, None);
    let items = headers
        .get_all(ACCEPT_ENCODING)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for item in items {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let weight = parts
            .find_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
            .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
        let allowed = weight.is_some_and(|w| w > 0.0);
        if name.eq_ignore_ascii_case(enc.token()) {
            own = Some(allowed);
        } else if name == "*" {
            any = Some(allowed);
        }
    }
    own.or(any).unwrap_or(false)
}

fn empty() -> RespBody {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
}

/// The `[errors]` page at `rel` (a manifest-checked relative path) under `root`, with its type;
/// `None` when it is missing, not a plain file, or larger than [`MAX_PAGE`].
pub(crate) async fn read_page(root: &Path, rel: &str) -> Option<(Bytes, &'static str)> {
    let parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let root = root.to_path_buf();
    let name = parts.last()?.clone();
    let body = tokio::task::spawn_blocking(move || {
        let file = open_beneath(&root, &parts)?;
        let mut body = Vec::new();
        file.take(MAX_PAGE + 1).read_to_end(&mut body).ok()?;
        (body.len() as u64 <= MAX_PAGE).then_some(body)
    })
    .await
    .ok()??;
    Some((Bytes::from(body), content_type(&name)))
}

/// Serves the file when the request is a GET/HEAD under the static prefix and the file exists;
/// `None` sends the request on to the app.
pub(crate) async fn serve(
    root: &Path,
    st: &StaticRoute,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response<RespBody>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let parts = components(&st.prefix, path)?;
    let header = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let name = parts.last()?.clone();
    let text = compressible(&name);
    // A range is of the file itself: a client resuming a download gets the plain bytes.
    let wanted: Vec<Encoding> = if text && header(RANGE).is_none() {
        Encoding::ALL.into_iter().filter(|e| accepts(headers, *e)).collect()
    } else {
        Vec::new()
    };
    let root = root.to_path_buf();
    let (plain, copy) = tokio::task::spawn_blocking(move || {
        // The plain file decides whether the path exists; a copy is used only beside it.
        let plain = open_beneath(&root, &parts)?;
        let copy = wanted.into_iter().find_map(|e| Some((open_beneath(&e.root(&root), &parts)?, e)));
        Some((plain, copy))
    })
    .await
    .ok()??;
    // The tag is the plain file's (the same on every node that extracted the release).
    let meta = plain.metadata().ok()?;
    let mut etag = format!("{:x}-{:x}", meta.len(), meta.mtime());
    let (file, encoding) = match copy {
        Some((file, e)) => {
            etag = format!("{etag}-{}", e.token());
            (file, Some(e))
        }
        None => (plain, None),
    };
    let etag = format!("\"{etag}\"");
    let len = file.metadata().ok()?.len();
    let cache = if fingerprinted(&name) {
        format!("public, max-age={IMMUTABLE_MAX_AGE}, immutable")
    } else {
        format!("public, max-age={}", st.max_age_secs)
    };
    let mut builder =
        Response::builder().header(CACHE_CONTROL, cache).header(ETAG, &etag).header(ACCEPT_RANGES, "bytes");
    if text {
        builder = builder.header(VARY, "Accept-Encoding");
    }
    if let Some(e) = encoding {
        builder = builder.header(CONTENT_ENCODING, e.token());
    }
    if header(IF_NONE_MATCH).is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return builder.status(StatusCode::NOT_MODIFIED).body(empty()).ok();
    }
    // A range is for the version the client already holds part of (If-Range), or any.
    let range = match header(RANGE) {
        Some(r) if header(IF_RANGE).is_none_or(|v| v.trim() == etag) => parse_range(r, len),
        _ => ByteRange::Whole,
    };
    let (status, start, count, builder) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, len, builder),
        ByteRange::Part(a, b) => (
            StatusCode::PARTIAL_CONTENT,
            a,
            b - a + 1,
            builder.header(CONTENT_RANGE, format!("bytes {a}-{b}/{len}")),
        ),
        ByteRange::Unsatisfiable => {
            let builder = builder.header(CONTENT_RANGE, format!("bytes */{len}"));
            return builder.status(StatusCode::RANGE_NOT_SATISFIABLE).body(empty()).ok();
        }
    };
    let builder = builder.header(CONTENT_TYPE, content_type(&name)).header(CONTENT_LENGTH, count);
    if method == Method::HEAD {
        return builder.status(status).body(empty()).ok();
    }
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await.ok()?;
    }
    let stream = ReaderStream::with_capacity(file.take(count), CHUNK)
        .map(|chunk| chunk.map(Frame::data).map_err(BoxError::from));
    builder.status(status).body(StreamBody::new(stream).boxed_unsync()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn takes_only_clean_paths_under_the_prefix() {
        let parts = |p| components("/static/", p);
        assert_eq!(parts("/static/css/a.css"), Some(vec!["css".into(), "a.css".into()]));
        assert_eq!(parts("/static/my%20file.txt"), Some(vec!["my file.txt".into()]));
        assert_eq!(parts("/static/a..b"), Some(vec!["a..b".into()]));
        for bad in [
            "/static/../etc/passwd",
            "/static/a/../../b",
            "/static/%2e%2e/x",
            "/static/..%2fx",
            "/static//x",
            "/static/a%00",
            "/static/a%5c..",
            "/other/a.css",
            "/static/",
        ] {
            assert_eq!(parts(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_single_byte_ranges() {
        use ByteRange::*;
        for (header, want) in [
            ("bytes=0-3", Part(0, 3)),
            ("bytes=2-", Part(2, 9)),
            ("bytes=-3", Part(7, 9)),
            ("bytes=-30", Part(0, 9)),
            ("bytes=5-100", Part(5, 9)),
            ("bytes=9-9", Part(9, 9)),
            ("bytes=10-", Unsatisfiable),
            ("bytes=10-20", Unsatisfiable),
            ("bytes=-0", Unsatisfiable),
            ("bytes=3-1", Whole),
            ("bytes=0-1,4-5", Whole),
            ("bytes=a-b", Whole),
            ("bytes=-", Whole),
            ("bytes=+1-2", Whole),
            ("items=0-1", Whole),
            ("", Whole),
        ] {
            assert_eq!(parse_range(header, 10), want, "{header}");
        }
        assert_eq!(parse_range("bytes=-5", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
    }

    #[test]
    fn opens_regular_files_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("files");
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::write(root.join("css/a.css"), "a").unwrap();
        std::fs::write(tmp.path().join("secret.key"), "secret").unwrap();
        symlink("/etc/passwd", root.join("passwd")).unwrap();
        symlink("/", root.join("root")).unwrap();
        symlink("../secret.key", root.join("key")).unwrap();
        symlink("css", root.join("dirlink")).unwrap();
        symlink("css/a.css", root.join("inside")).unwrap();
        std::fs::hard_link(tmp.path().join("secret.key"), root.join("hard")).unwrap();
        let open = |p: &str| open_beneath(&root, &p.split('/').map(String::from).collect::<Vec<_>>());
        assert!(open("css/a.css").is_some());
        for refused in ["passwd", "root/etc/passwd", "key", "dirlink/a.css", "inside", "hard", "css", "nope"]
        {
            assert!(open(refused).is_none(), "{refused}");
        }
    }
}
