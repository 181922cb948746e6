//! Static files the ingress serves itself (the manifest's `[static]` directory, extracted from
//! the release's image by the agent), with long-lived cache headers and ETags, so assets never
//! cost the app a request.

use super::proxy::RespBody;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use protocol::agent::StaticRoute;
use std::path::{Path, PathBuf};

/// The file under `root` that `path` names inside `prefix`, if the path is a clean relative
/// path (no `..`, no empty or hidden traversal tricks).
pub(crate) fn resolve(root: &Path, prefix: &str, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix(prefix)?;
    let decoded = percent_decode(rest)?;
    let mut out = root.to_path_buf();
    for part in decoded.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') || part.contains('\\') {
            return None;
        }
        out.push(part);
    }
    Some(out)
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

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase().as_str() {
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
    let file = resolve(root, &st.prefix, path)?;
    let meta = tokio::fs::metadata(&file).await.ok().filter(|m| m.is_file())?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let etag = format!("\"{:x}-{:x}\"", meta.len(), mtime);
    let mut builder = Response::builder()
        .header(CACHE_CONTROL, format!("public, max-age={}", st.max_age_secs))
        .header(ETAG, &etag)
        .header(CONTENT_TYPE, content_type(&file));
    if headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        let body = Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        return builder.status(StatusCode::NOT_MODIFIED).body(body).ok();
    }
    builder = builder.header(CONTENT_LENGTH, HeaderValue::from(meta.len()));
    let body = if method == Method::HEAD {
        Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync()
    } else {
        let data = tokio::fs::read(&file).await.ok()?;
        Full::new(Bytes::from(data)).map_err(|never| match never {}).boxed_unsync()
    };
    builder.status(StatusCode::OK).body(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_only_clean_paths_under_the_prefix() {
        let root = Path::new("/srv/x");
        assert_eq!(resolve(root, "/static/", "/static/css/a.css"), Some(PathBuf::from("/srv/x/css/a.css")));
        assert_eq!(
            resolve(root, "/static/", "/static/my%20file.txt"),
            Some(PathBuf::from("/srv/x/my file.txt"))
        );
        for bad in [
            "/static/../etc/passwd",
            "/static/a/../../b",
            "/static/%2e%2e/x",
            "/static//x",
            "/other/a.css",
            "/static/",
        ] {
            assert_eq!(resolve(root, "/static/", bad), None, "{bad}");
        }
    }
}
