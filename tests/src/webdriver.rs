//! A tiny W3C WebDriver client for browser tests: starts chromedriver on a free loopback port with
//! headless Chromium and a throwaway profile, and speaks the WebDriver HTTP protocol over
//! std's TcpStream, so the tests need no browser-automation crate.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `wait_for*` keep polling before failing the test.
pub const WAIT: Duration = Duration::from_secs(15);

/// The key under which WebDriver returns an element reference (fixed by the W3C spec).
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver error answer: `error` is the spec's code (e.g. "no such element").
#[derive(Debug)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

/// One headless Chromium session behind its own chromedriver. Dropping it ends the session
/// (which closes Chromium) and kills chromedriver.
pub struct Browser {
    addr: String,
    session: String,
    child: Child,
    dir: tempfile::TempDir,
}

/// An element of the current page, valid until the page changes.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("local addr").port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Fails the test (not skips it) when
    /// either is missing: a browser test that silently does not run proves nothing.
    pub fn start() -> Self {
        let missing: Vec<&str> =
            ["chromedriver", "chromium"].into_iter().filter(|b| find_in_path(b).is_none()).collect();
        assert!(
            missing.is_empty(),
            "{} not found on PATH: the console test drives a real browser. Run .ci/run (it installs \
             the Debian packages chromium and chromium-driver) or `apt-get install -y chromium \
             chromium-driver`",
            missing.join(" and ")
        );
        let chromium = find_in_path("chromium").unwrap();
        let dir = tempfile::tempdir().expect("temp dir");
        // Another process can take the port between our probe and chromedriver's bind: retry.
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = dir.path().join("chromedriver.log");
            let mut child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver");
            let addr = format!("127.0.0.1:{port}");
            match wait_ready(&addr, &mut child) {
                Ok(()) => {
                    let mut b = Browser { addr, session: String::new(), child, dir };
                    b.session = b.new_session(&chromium);
                    return b;
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        }
        panic!("chromedriver did not become ready: {last}");
    }

    fn new_session(&self, chromium: &Path) -> String {
        let profile = self.dir.path().join("profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,800", format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = self
            .call("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("starting a Chromium session failed: {e:?}\n{}", self.driver_log()));
        v["sessionId"].as_str().expect("sessionId").to_string()
    }

    /// chromedriver's log, for failure messages.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// One WebDriver command; returns the answer's `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WdError> {
        let (status, text) = exchange(&self.addr, method, path, body.as_ref()).map_err(|e| WdError {
            status: 0,
            error: "io".into(),
            message: e.to_string(),
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| WdError {
            status,
            error: "bad answer".into(),
            message: format!("{e}: {text}"),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status == 200 {
            return Ok(value);
        }
        Err(WdError {
            status,
            error: value["error"].as_str().unwrap_or("unknown").to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// A command of this session that must succeed.
    #[track_caller]
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e:?}"))
    }

    /// Navigates and waits for the page load (WebDriver's default page-load strategy).
    /// Navigates to `url` (a GET), again when Chromium aborted it because the host's network
    /// changed: other tests add and remove Docker networks, and Chromium's network change
    /// notifier cancels what is in flight when interfaces come and go.
    pub fn goto(&self, url: &str) {
        for _ in 0..3 {
            self.cmd("POST", "/url", Some(json!({ "url": url })));
            if !self.network_changed() {
                return;
            }
        }
    }

    /// Whether the page is Chromium's own error page for a request cut by a network change.
    pub fn network_changed(&self) -> bool {
        self.page_source().contains("ERR_NETWORK_CHANGED")
    }

    pub fn current_url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None).as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, if the page has one now.
    pub fn find(&self, css: &str) -> Option<Element<'_>> {
        let path = format!("/session/{}/element", self.session);
        match self.call("POST", &path, Some(json!({"using": "css selector", "value": css}))) {
            Ok(v) => {
                let id = v[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element reference in {v}"));
                Some(Element { browser: self, id: id.to_string() })
            }
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("finding {css:?}: {e:?}"),
        }
    }

    /// Polls until an element matching `css` exists (pages load after clicks asynchronously).
    #[track_caller]
    pub fn wait_for(&self, css: &str) -> Element<'_> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} within {WAIT:?} at {}:\n{}",
                self.current_url(),
                self.page_source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls until the current URL equals `url`.
    #[track_caller]
    pub fn wait_for_url(&self, url: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.current_url();
            if now == url {
                return;
            }
            assert!(Instant::now() < deadline, "the browser is at {now}, not {url}:\n{}", self.page_source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn page_source(&self) -> String {
        self.cmd("GET", "/source", None).as_str().unwrap_or_default().to_string()
    }

    /// The value of a cookie of the current page's origin, HttpOnly ones included.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let path = format!("/session/{}/cookie/{name}", self.session);
        match self.call("GET", &path, None) {
            Ok(v) => v["value"].as_str().map(str::to_string),
            Err(e) if e.error == "no such cookie" => None,
            Err(e) => panic!("reading cookie {name}: {e:?}"),
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; its return value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Sizes the browser window (CSS pixels), as a phone's or a desktop's.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({ "width": width, "height": height })));
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        base64_decode(b64.as_str().expect("screenshot is a base64 string"))
    }
}

impl Element<'_> {
    fn path(&self, what: &str) -> String {
        format!("/element/{}/{what}", self.id)
    }

    pub fn text(&self) -> String {
        self.browser.cmd("GET", &self.path("text"), None).as_str().unwrap_or_default().to_string()
    }

    pub fn click(&self) {
        self.browser.cmd("POST", &self.path("click"), Some(json!({})));
    }

    pub fn send_keys(&self, text: &str) {
        self.browser.cmd("POST", &self.path("value"), Some(json!({ "text": text })));
    }

    pub fn clear(&self) {
        self.browser.cmd("POST", &self.path("clear"), Some(json!({})));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver close Chromium; killing chromedriver alone could
        // leave the browser processes behind.
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until chromedriver answers `/status` with `ready: true`, or reports why not.
fn wait_ready(addr: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("chromedriver exited with {status}"));
        }
        let r = exchange(addr, "GET", "/status", None);
        if matches!(&r, Ok((200, body)) if body.contains("\"ready\":true")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("chromedriver on {addr} not ready after 20s: {r:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request to chromedriver: (status, body). Unlike `http::request` it reads exactly
/// Content-Length bytes, because chromedriver keeps the connection open despite `Connection:
/// close`, so reading to EOF would wait for the socket timeout on every command.
fn exchange(addr: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, String)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut raw = Vec::new();
    match len {
        Some(n) => {
            raw.resize(n, 0);
            reader.read_exact(&mut raw)?;
        }
        None => {
            reader.read_to_end(&mut raw)?;
        }
    }
    Ok((status, String::from_utf8_lossy(&raw).into_owned()))
}

/// Standard base64 (RFC 4648, with padding), the encoding of WebDriver screenshots.
pub fn base64_decode(s: &str) -> Vec<u8> {
    fn sextet(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: byte {c:#x}"),
        }
    }
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().take_while(|&c| c != b'=').collect();
        let bits = data.iter().fold(0u32, |acc, &c| acc << 6 | sextet(c)) << (6 * (4 - data.len()));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..data.len().max(1)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_round_trips_known_vectors() {
        for (enc, dec) in [("", ""), ("Zg==", "f"), ("Zm8=", "fo"), ("Zm9v", "foo"), ("Zm9vYmFy", "foobar")] {
            assert_eq!(base64_decode(enc), dec.as_bytes(), "{enc}");
        }
        assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    }
}
