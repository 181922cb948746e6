//! The ingress's access log and request ids. Every request gets an `X-Request-Id` (sent
//! upstream and back to the client); every request answered for an app (by a replica, by the
//! ingress's static files, or by the ingress itself when no replica could) gets one Heroku-style
//! `key=value` line, source `router`, in the central log. The line is written when the response
//! body is done (or the client went away), so it knows the bytes sent and the whole duration.
//! Logging never holds a request up: [`LogHandle::push`] drops and counts rather than waits.

use super::proxy::{BoxError, RespBody};
use super::RouteEntry;
use crate::logs::LogHandle;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use protocol::logs::{LogSource, LogStream, ShippedLine};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id taken from a trusted proxy.
const MAX_REQUEST_ID: usize = 200;
/// Longest path (with query) a line shows; the rest is cut and marked `...`.
const MAX_PATH: usize = 1024;
/// Longest of any other value a client or proxy chose (host, client address, method).
const MAX_VALUE: usize = 256;

/// The request id to send upstream: a trusted proxy's own when it sent exactly one that is
/// 1-200 visible ASCII characters, otherwise a fresh random one, so that a client cannot choose
/// the id its request is logged and traced under.
pub(crate) fn request_id(headers: &HeaderMap, trusted: bool) -> HeaderValue {
    if trusted {
        let mut given = headers.get_all(&REQUEST_ID).iter();
        if let (Some(id), None) = (given.next(), given.next()) {
            let bytes = id.as_bytes();
            if (1..=MAX_REQUEST_ID).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
            {
                return id.clone();
            }
        }
    }
    HeaderValue::from_bytes(&fresh_id()).expect("hex digits and dashes are a valid header value")
}

/// 128 random bits in the layout of a version 4 UUID, which log tools recognise; written into
/// one buffer, as every request needs one.
fn fresh_id() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(x >> 4)];
        out[at + 1] = HEX[usize::from(x & 0x0f)];
        at += 2;
    }
    out
}

/// Who answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dyno {
    /// The ingress itself (an error page).
    Ingress,
    /// The ingress's copy of the release's static files.
    Static,
    /// A web replica (0 when the route table does not say which, as older ones did not).
    Web(u32),
}

/// One request's access line, filled in while the request is handled.
pub(crate) struct Access {
    started: Instant,
    method: String,
    path: String,
    request_id: String,
    client: String,
    /// The app's route and host: a request for no app gets no line.
    route: Option<(Arc<RouteEntry>, String)>,
    dyno: Dyno,
    /// When the request went to the replica that answered.
    sent_at: Option<Instant>,
    /// Why the ingress answered itself (`at=error`).
    error: Option<&'static str>,
}

impl Access {
    pub(crate) fn new(
        started: Instant,
        method: &http::Method,
        path: &str,
        id: &HeaderValue,
        client: String,
    ) -> Self {
        Self {
            started,
            method: method.as_str().to_string(),
            path: path.to_string(),
            request_id: String::from_utf8_lossy(id.as_bytes()).into_owned(),
            client,
            route: None,
            dyno: Dyno::Ingress,
            sent_at: None,
            error: None,
        }
    }

    /// The request is for this route's app (`host` normalised).
    pub(crate) fn route(&mut self, entry: &Arc<RouteEntry>, host: &str) {
        self.route = Some((entry.clone(), host.to_string()));
    }

    /// The request goes to (another) replica now: backend `index` of the route.
    pub(crate) fn attempt(&mut self, index: usize) {
        let replica = self.route.as_ref().and_then(|(e, _)| e.route.replicas.get(index).copied());
        self.dyno = Dyno::Web(replica.unwrap_or(0));
        self.sent_at = Some(Instant::now());
    }

    pub(crate) fn dyno(&self) -> Dyno {
        self.dyno
    }

    pub(crate) fn answered_by(&mut self, dyno: Dyno) {
        self.dyno = dyno;
    }

    /// The ingress answers itself, for this reason (a short phrase).
    pub(crate) fn error(&mut self, desc: &'static str, dyno: Dyno) {
        self.error = Some(desc);
        self.dyno = dyno;
    }

    /// Wraps the response's body so the line is written when it is done; a request for no app
    /// is returned as it is.
    pub(crate) fn finish(self, resp: Response<RespBody>, logs: &LogHandle) -> Response<RespBody> {
        if self.route.is_none() {
            return resp;
        }
        let status = resp.status().as_u16();
        let logs = logs.clone();
        resp.map(|inner| Logged { inner, bytes: 0, pending: Some((self, status, logs)) }.boxed_unsync())
    }

    /// The line for a response of `status` that sent `bytes` of body and ended at `end`.
    fn line(&self, status: u16, bytes: u64, end: Instant) -> Option<ShippedLine> {
        let (entry, host) = self.route.as_ref()?;
        let route = &entry.route;
        let connect = self.sent_at.map_or(Duration::ZERO, |at| at - self.started);
        let service = end - self.sent_at.unwrap_or(self.started);
        let (process, replica) = match self.dyno {
            Dyno::Web(n) => ("web", n),
            Dyno::Ingress | Dyno::Static => ("router", 0),
        };
        Some(ShippedLine {
            seq: 0,
            at: crate::logs::now(),
            app: route.app.clone(),
            env: route.env.clone(),
            source: LogSource::Router,
            process: process.to_string(),
            replica,
            release: route.release,
            stream: LogStream::Stdout,
            text: self.text(host, status, bytes, connect, service),
        })
    }

    /// `at=info method=GET path="/x" host=a.example request_id=... fwd="203.0.113.9" dyno=web.2
    /// connect=1ms service=12ms status=200 bytes=1534 protocol=http`; with `at=error desc="..."`
    /// when the ingress answered itself. Every value a client chose is a bare word only when it
    /// holds nothing but harmless characters, else quoted and escaped, so it can neither add
    /// fields nor break the line.
    fn text(&self, host: &str, status: u16, bytes: u64, connect: Duration, service: Duration) -> String {
        let at = match self.error {
            Some(desc) => format!("at=error desc={}", quoted(desc, MAX_VALUE)),
            None => "at=info".to_string(),
        };
        let dyno = match self.dyno {
            Dyno::Ingress => "none".to_string(),
            Dyno::Static => "static".to_string(),
            Dyno::Web(0) => "web".to_string(),
            Dyno::Web(n) => format!("web.{n}"),
        };
        format!(
            "{at} method={} path={} host={} request_id={} fwd={} dyno={dyno} connect={}ms service={}ms status={status} bytes={bytes} protocol=http",
            word(&self.method),
            quoted(&self.path, MAX_PATH),
            word(host),
            word(&self.request_id),
            quoted(&self.client, MAX_VALUE),
            connect.as_millis(),
            service.as_millis(),
        )
    }
}

/// `s` as is when it is made of letters, digits and `-._:/@[]` only (and short), else quoted.
fn word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._:/@[]".contains(c);
    if !s.is_empty() && s.len() <= MAX_VALUE && s.chars().all(plain) {
        s.to_string()
    } else {
        quoted(s, MAX_VALUE)
    }
}

/// `s` in double quotes, at most `max` characters of it (then `...`): `"` and `\` escaped with
/// a backslash, and anything but printable ASCII (line breaks, control and non-ASCII
/// characters) as `\u{hex}`.
fn quoted(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 2);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A response body that counts the bytes sent and writes the access line once it is done: at
/// its end, at an error, or when it is dropped unfinished (the client went away).
struct Logged {
    inner: RespBody,
    bytes: u64,
    pending: Option<(Access, u16, LogHandle)>,
}

impl Logged {
    fn emit(&mut self) {
        if let Some((access, status, logs)) = self.pending.take() {
            let end = Instant::now();
            if let Some((entry, _)) = &access.route {
                entry.guards.traffic.record(status, self.bytes, end - access.started);
            }
            if let Some(line) = access.line(status, self.bytes, end) {
                logs.push(line);
            }
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.emit();
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.emit(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::agent::Route;

    fn route() -> Route {
        Route {
            host: "notes.localhost".into(),
            app: "notes".into(),
            env: "production".into(),
            release: 7,
            backends: vec!["10.0.0.1:5000".into(), "10.0.0.2:5000".into()],
            replicas: vec![1, 2],
            static_files: None,
            limits: Default::default(),
            maintenance: false,
        }
    }

    fn access(path: &str, client: &str) -> Access {
        let id = HeaderValue::from_static("4f2c-id");
        let mut a = Access::new(Instant::now(), &http::Method::GET, path, &id, client.to_string());
        let entry = RouteEntry { route: route(), next: Default::default(), guards: Default::default() };
        a.route(&Arc::new(entry), "notes.localhost");
        a
    }

    #[test]
    fn an_answered_request_reads_like_herokus_router() {
        let mut a = access("/x?y=1", "203.0.113.9");
        a.attempt(1);
        let text = a.text("notes.localhost", 200, 1534, Duration::from_millis(1), Duration::from_millis(12));
        assert_eq!(
            text,
            "at=info method=GET path=\"/x?y=1\" host=notes.localhost request_id=4f2c-id fwd=\"203.0.113.9\" \
             dyno=web.2 connect=1ms service=12ms status=200 bytes=1534 protocol=http"
        );
        let line = a.line(200, 1534, Instant::now()).unwrap();
        assert_eq!((line.app.as_str(), line.env.as_str(), line.release), ("notes", "production", 7));
        assert_eq!((line.source, line.process.as_str(), line.replica), (LogSource::Router, "web", 2));
    }

    #[test]
    fn ingress_answers_are_errors_and_static_files_say_so() {
        let mut a = access("/", "203.0.113.9");
        a.error("No healthy replica", Dyno::Ingress);
        let text = a.text("notes.localhost", 503, 0, Duration::ZERO, Duration::from_millis(3));
        assert!(text.starts_with("at=error desc=\"No healthy replica\" method=GET "), "{text}");
        assert!(text.contains(" dyno=none ") && text.contains(" status=503 "), "{text}");
        let line = a.line(503, 0, Instant::now()).unwrap();
        assert_eq!((line.process.as_str(), line.replica), ("router", 0));
        let mut a = access("/static/app.css", "203.0.113.9");
        a.answered_by(Dyno::Static);
        assert!(a.text("notes.localhost", 200, 9, Duration::ZERO, Duration::ZERO).contains(" dyno=static "));
        // A route table without replica numbers still names the process.
        let mut a = access("/", "203.0.113.9");
        let mut bare = route();
        bare.replicas.clear();
        a.route(
            &Arc::new(RouteEntry { route: bare, next: Default::default(), guards: Default::default() }),
            "notes.localhost",
        );
        a.attempt(0);
        assert!(a.text("notes.localhost", 200, 9, Duration::ZERO, Duration::ZERO).contains(" dyno=web "));
    }

    #[test]
    fn no_route_no_line() {
        let id = HeaderValue::from_static("x");
        let a = Access::new(Instant::now(), &http::Method::GET, "/", &id, "1.2.3.4".into());
        assert!(a.line(404, 10, Instant::now()).is_none());
    }

    #[test]
    fn hostile_values_cannot_forge_fields_or_lines() {
        let path = "/a\" status=200 dyno=web.9\nat=info method=GET path=\"/b\\";
        let mut a = access(path, "1.2.3.4\" fwd=\"5.6.7.8");
        a.request_id = "id status=500".into();
        a.attempt(0);
        let text = a.text("evil.host status=1", 404, 5, Duration::ZERO, Duration::ZERO);
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(
            text.contains(r#"path="/a\" status=200 dyno=web.9\u{a}at=info method=GET path=\"/b\\""#),
            "{text}"
        );
        assert!(text.contains(r#"fwd="1.2.3.4\" fwd=\"5.6.7.8""#), "{text}");
        assert!(text.contains(r#"host="evil.host status=1""#), "{text}");
        assert!(text.contains(r#"request_id="id status=500""#), "{text}");
        // Outside quoted values, each field appears once.
        let bare = unquoted(&text);
        for key in ["at=", " method=", " path=", " host=", " dyno=", " status=", " fwd=", " bytes="] {
            assert_eq!(bare.matches(key).count(), 1, "{key} in {bare}");
        }
        assert!(bare.contains(" status=404 "), "{bare}");
        // Other control and non-ASCII characters are escaped too.
        assert_eq!(quoted("a\r\u{2028}é\u{7f}", 100), r#""a\u{d}\u{2028}\u{e9}\u{7f}""#);
    }

    /// `text` with every quoted value emptied.
    fn unquoted(text: &str) -> String {
        let (mut out, mut inside, mut escaped) = (String::new(), false, false);
        for c in text.chars() {
            match (inside, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (_, false, '"') => inside = !inside,
                (false, _, c) => out.push(c),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn long_paths_are_cut() {
        let a = access(&format!("/{}", "a".repeat(5000)), "1.2.3.4");
        let text = a.text("notes.localhost", 200, 0, Duration::ZERO, Duration::ZERO);
        assert!(text.contains(&format!("path=\"/{}...\"", "a".repeat(MAX_PATH - 1))), "{text}");
        assert!(text.len() < MAX_PATH + 400);
    }

    #[test]
    fn request_ids_are_kept_only_from_trusted_proxies_and_only_when_sane() {
        let with = |values: &[&[u8]]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(&REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
            }
            headers
        };
        let given = with(&[b"abc-123"]);
        assert_eq!(request_id(&given, true), "abc-123");
        let fresh = request_id(&given, false);
        assert_ne!(fresh, "abc-123");
        assert_eq!(fresh.len(), 36);
        assert_ne!(request_id(&HeaderMap::new(), false), fresh, "ids are random");
        for bad in
            [&with(&[b"has space"]), &with(&[&[b'x'; 201]]), &with(&[b"a", b"b"]), &with(&[b"\xe9t\xe9"])]
        {
            let id = request_id(bad, true);
            assert_eq!(id.len(), 36, "{bad:?} gave {id:?}");
        }
        assert_eq!(request_id(&with(&[&[b'x'; 200]]), true).len(), 200);
    }
}
