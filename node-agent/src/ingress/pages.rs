//! The small HTML pages the ingress answers with itself (unknown host, no healthy replica, backend
//! failure or timeout, malformed, stalled or too large request, rate limit, capacity, maintenance),
//! so a visitor sees why instead of an empty response; and its plain-text answers (ACME challenges).

use super::proxy::RespBody;
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// 404: no route matches the Host header.
pub(crate) fn not_found(host: &str) -> Response<RespBody> {
    page(StatusCode::NOT_FOUND, "No app here", &format!("No app is served at <code>{}</code>.", escape(host)))
}

/// 503: the route exists but no replica is healthy (deploying, crashed or scaled to zero).
pub(crate) fn no_replica(app: &str) -> Response<RespBody> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "No healthy replica",
        &format!("<code>{}</code> has no healthy replica right now. Try again in a moment.", escape(app)),
    )
}

/// 502: every backend we tried refused or broke the connection.
pub(crate) fn bad_gateway(app: &str) -> Response<RespBody> {
    page(
        StatusCode::BAD_GATEWAY,
        "Bad gateway",
        &format!("<code>{}</code> did not answer. Try again in a moment.", escape(app)),
    )
}

/// 504: the backend took the request but sent no response head in time.
pub(crate) fn gateway_timeout(app: &str) -> Response<RespBody> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        "Gateway timeout",
        &format!("<code>{}</code> did not answer in time. Try again in a moment.", escape(app)),
    )
}

/// 408: the client stopped sending its request body.
pub(crate) fn request_timeout() -> Response<RespBody> {
    let mut resp =
        page(StatusCode::REQUEST_TIMEOUT, "Request timeout", "The request body did not arrive in time.");
    // The unread rest of the body makes the connection unusable for another request.
    resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 413: the request body is larger than the app accepts (`ingress.max_body`).
pub(crate) fn too_large(limit: u64) -> Response<RespBody> {
    let mut resp = page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        &format!("The request body is larger than this app accepts ({}).", size(limit)),
    );
    // The client may still be sending the body nobody reads; the connection cannot carry another
    // request after it.
    resp.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 429: this client sent more requests than the app's rate limit allows.
pub(crate) fn rate_limited(app: &str, retry_after_secs: u64) -> Response<RespBody> {
    let mut resp = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        &format!(
            "You sent <code>{}</code> more requests than it accepts from one address. Try again in {retry_after_secs} s.",
            escape(app)
        ),
    );
    retry_after(&mut resp, retry_after_secs);
    resp
}

/// 503: the app has as many requests in flight as it may (`ingress.max_concurrent`).
pub(crate) fn at_capacity(app: &str) -> Response<RespBody> {
    let mut resp = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "At capacity",
        &format!("<code>{}</code> is at capacity right now. Try again in a moment.", escape(app)),
    );
    retry_after(&mut resp, 1);
    resp
}

/// How long a maintenance page asks clients (and crawlers) to stay away.
pub(crate) const MAINTENANCE_RETRY_SECS: u64 = 120;

/// 503: the environment is in maintenance mode (`paas maintenance on`).
pub(crate) fn maintenance(app: &str) -> Response<RespBody> {
    let mut resp = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Down for maintenance",
        &format!("<code>{}</code> is down for maintenance. Please come back soon.", escape(app)),
    );
    retry_after(&mut resp, MAINTENANCE_RETRY_SECS);
    resp
}

fn retry_after(resp: &mut Response<RespBody>, secs: u64) {
    resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
}

/// `100 MiB`, `512 KiB`, `1000 bytes`.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    match bytes {
        b if b >= KIB * KIB && b % (KIB * KIB) == 0 => format!("{} MiB", b / (KIB * KIB)),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

/// 400: the request cannot be routed at all (no Host).
pub(crate) fn bad_request(message: &str) -> Response<RespBody> {
    page(StatusCode::BAD_REQUEST, "Bad request", &escape(message))
}

/// 308 to `location` (plain HTTP to HTTPS): the method and body are kept.
pub(crate) fn redirect(location: &str) -> Response<RespBody> {
    let mut resp = page(
        StatusCode::PERMANENT_REDIRECT,
        "Moved to HTTPS",
        &format!("This app is served at <a href=\"{0}\">{0}</a>.", escape(location)),
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(http::header::LOCATION, value);
    }
    resp
}

/// A plain-text answer (an ACME challenge's key authorization).
pub(crate) fn text(status: StatusCode, text: String) -> Response<RespBody> {
    with_type(status, text, "text/plain")
}

/// `message_html` must already be escaped; everything else on the page is constant.
fn page(status: StatusCode, title: &str, message_html: &str) -> Response<RespBody> {
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\n\
         <body style=\"font-family: sans-serif; margin: 3em;\"><h1>{code} {title}</h1>\n<p>{message_html}</p>\n\
         </body></html>\n",
        code = status.as_u16(),
    );
    with_type(status, html, "text/html; charset=utf-8")
}

/// Marks the responses above (in their extensions): the ingress's own answers, which an app's
/// `[errors]` page may replace, unlike an app's response of the same status.
#[derive(Clone, Copy)]
struct OwnPage;

pub(crate) fn is_own(resp: &Response<RespBody>) -> bool {
    resp.extensions().get::<OwnPage>().is_some()
}

/// `resp` with `body` (of `content_type`) in place of its page; status and headers are kept.
pub(crate) fn replace_body(
    resp: Response<RespBody>,
    body: Bytes,
    content_type: &'static str,
) -> Response<RespBody> {
    let (mut parts, _) = resp.into_parts();
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(body).map_err(|never| match never {}).boxed_unsync())
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<RespBody> {
    let body = Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.extensions_mut().insert(OwnPage);
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // These answers describe a transient state of the cluster; a cached 503 would outlive it.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Escapes text for use in HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[tokio::test]
    async fn pages_are_html_and_uncached() {
        let resp = not_found("<evil>");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("&lt;evil&gt;") && !body.contains("<evil>"));
    }

    /// Every page the ingress answers with has a body that says what happened.
    #[tokio::test]
    async fn no_page_is_empty() {
        let pages = [
            (not_found("a.test"), "No app here"),
            (no_replica("shop"), "No healthy replica"),
            (bad_gateway("shop"), "Bad gateway"),
            (gateway_timeout("shop"), "Gateway timeout"),
            (request_timeout(), "Request timeout"),
            (bad_request("no Host"), "Bad request"),
            (too_large(10 << 20), "10 MiB"),
            (rate_limited("shop", 3), "Try again in 3 s"),
            (at_capacity("shop"), "at capacity"),
            (maintenance("shop"), "down for maintenance"),
        ];
        for (resp, says) in pages {
            let status = resp.status();
            assert!(status.is_client_error() || status.is_server_error(), "{status}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(body.contains(status.as_str()) && body.contains(says), "{status}: {body}");
        }
        assert_eq!(rate_limited("shop", 3).headers()[http::header::RETRY_AFTER], "3");
        assert_eq!(maintenance("shop").headers()[http::header::RETRY_AFTER], "120");
        assert_eq!(size(512 * 1024), "512 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
