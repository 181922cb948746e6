//! `/git/{app}.git/...`: a git smart-HTTP server per app, by running real `git http-backend` as
//! a CGI program. HTTP basic auth, with an API token as the password (any user name), so git's
//! credential helpers work. Each repository's pre-receive hook runs `paas git-hook`, which
//! deploys pushed branches and streams the output back as `remote:` lines; a failed deploy
//! rejects the push. A push is bounded in size (`Config::git_max_push_bytes`, also enforced by
//! git itself as `receive.maxInputSize`, so the pusher reads git's own sentence) and in time
//! (`Config::git_push_timeout`, build and deploy included).

use super::error::ApiError;
use super::routes::ClientAddr;
use crate::access;
use crate::error::DomainError;
use crate::state::AppState;
use anyhow::Context;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use futures_util::StreamExt;
use protocol::access::Role;
use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

/// A push that sends nothing for this long is given up.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Room above the pack limit for the ref update commands that precede the pack.
const COMMANDS_SLACK: u64 = 1 << 20;
/// How long the rest of a refused push is read, so the pusher gets to read the refusal.
const LINGER: Duration = Duration::from_secs(30);

/// The pre-receive hook, the same for every repository and every version of paas, so it is
/// written once. It names no path: the server passes the binary to run on every push (see
/// [`hook_exe`]).
const HOOK: &str = "#!/bin/sh
# Written by paas: deploys pushed branches. The paas server passes its binary in PAAS_HOOK_EXE.
exec \"${PAAS_HOOK_EXE:?pushes deploy only through the paas git server}\" git-hook
";

pub fn routes() -> Router<AppState> {
    Router::new().route("/git/{repo}/{*rest}", any(serve))
}

fn challenge(message: &str) -> Response {
    let mut resp = (StatusCode::UNAUTHORIZED, format!("{message}\n")).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"paas\""));
    resp
}

/// The password of an HTTP basic `Authorization` header.
fn basic_password(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_string())
}

pub fn repo_dir(state: &AppState, app: &str) -> PathBuf {
    state.config.data_dir.join("git").join(format!("{app}.git"))
}

/// Creates the bare repository on first use, and its hook when it is missing or differs
/// (a repository from an older paas).
async fn ensure_repo(state: &AppState, app: &str) -> anyhow::Result<PathBuf> {
    let dir = repo_dir(state, app);
    if !dir.join("HEAD").exists() {
        tokio::fs::create_dir_all(&dir).await?;
        let out = tokio::process::Command::new("git")
            .args(["init", "--bare", "--quiet", "--initial-branch=main"])
            .arg(&dir)
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "git init failed: {}", String::from_utf8_lossy(&out.stderr));
        let out = tokio::process::Command::new("git")
            .arg("--git-dir")
            .arg(&dir)
            .args(["config", "http.receivepack", "true"])
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "git config failed");
    }
    let hook = dir.join("hooks").join("pre-receive");
    if tokio::fs::read_to_string(&hook).await.ok().as_deref() != Some(HOOK) {
        write_hook(&hook).await?;
    }
    Ok(dir)
}

/// Writes the hook beside its place and renames it there, so a concurrent push runs either
/// no hook file yet or the whole one, never a half-written one.
async fn write_hook(hook: &FsPath) -> anyhow::Result<()> {
    let dir = hook.parent().expect("the hook is inside hooks/");
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".pre-receive.{:016x}", rand::random::<u64>()));
    tokio::fs::write(&tmp, HOOK).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).await?;
    }
    if let Err(e) = tokio::fs::rename(&tmp, hook).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e.into());
    }
    Ok(())
}

/// The program the hook runs: this server's own binary, named anew for every push.
///
/// Not the path it was started from: a package upgrade renames a new binary over that path
/// while the platform runs, after which `current_exe()` names "<path> (deleted)", and a new
/// binary could disagree with the server it talks to. `/proc/<our pid>/exe` opens the running
/// binary's file whatever happened to its path, and, being computed per push, always belongs
/// to the server running now (a pid written into the hook would be wrong after a restart).
/// Without procfs, the path the binary was started from is the best there is.
fn hook_exe() -> PathBuf {
    let running = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if running.exists() {
        return running;
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("paas"));
    match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(p) => PathBuf::from(p),
        None => exe,
    }
}

fn too_large(what: &str, limit: u64) -> Response {
    let text =
        format!("{what}; this paas server takes pushes up to {} MiB (--git-max-push-mib)\n", limit >> 20);
    (StatusCode::PAYLOAD_TOO_LARGE, text).into_response()
}

async fn serve(
    State(state): State<AppState>,
    Path((repo, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(token) = basic_password(&req) else {
        return challenge("git over HTTP needs your paas API token as the password");
    };
    let addr = ClientAddr::of(req.extensions()).ip();
    let caller = match access::authenticate(&state, Some(&token), &addr).await {
        Ok(c) => c,
        Err(DomainError::Unauthenticated(why)) => return challenge(&why),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(app) = repo.strip_suffix(".git") else {
        let why = format!("{repo:?} is not a repository; use <app>.git");
        return ApiError::from(DomainError::NotFound(why)).into_response();
    };
    // Before the app is looked up, so the answer is the same whether or not it exists.
    let service = req.uri().query().unwrap_or_default();
    let (need, what) = if rest.ends_with("git-receive-pack") || service.contains("service=git-receive-pack") {
        (Role::Deployer, "pushing")
    } else {
        (Role::Viewer, "fetching")
    };
    if let Err(e) = caller.require(app, need, what) {
        // git shows a text/plain body to the user as `remote:` lines.
        return (StatusCode::FORBIDDEN, format!("{e}\n")).into_response();
    }
    if let Err(e) = state.store.get_app(app).await {
        return ApiError::from(e).into_response();
    }
    let limit = state.config.git_max_push_bytes;
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > limit + COMMANDS_SLACK) {
        return too_large(&format!("the push is {} MiB", n >> 20), limit);
    }
    match cgi(&state, app, &rest, &token, req).await {
        Ok(resp) => resp,
        Err(e) => ApiError::from(e.context("running git http-backend")).into_response(),
    }
}

/// Runs `git http-backend` for one request: CGI variables in, request body on stdin, CGI
/// headers and the body streamed back from stdout.
async fn cgi(state: &AppState, app: &str, rest: &str, token: &str, req: Request) -> anyhow::Result<Response> {
    let dir = ensure_repo(state, app).await?;
    let root = dir.parent().expect("the repository has a parent").to_path_buf();
    let (parts, body) = req.into_parts();
    let header = |name: header::HeaderName| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
    };
    // The hook runs on this machine: a wildcard listen address is reached on loopback (which
    // the API's certificate names under --api-tls).
    let api = state.api_url().replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:");
    let hook_ca = if api.starts_with("https://") {
        state.ingress_ca.cert_path().as_os_str().to_owned()
    } else {
        Default::default()
    };
    let limit = state.config.git_max_push_bytes;
    let deadline = Instant::now() + state.config.git_push_timeout;
    let mut child = tokio::process::Command::new("git")
        // Git refuses a larger pack itself and tells the pusher so.
        .arg("-c")
        .arg(format!("receive.maxInputSize={limit}"))
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{app}.git/{rest}"))
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", header(header::CONTENT_LENGTH))
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING))
        .env("GIT_PROTOCOL", parts.headers.get("git-protocol").and_then(|v| v.to_str().ok()).unwrap_or(""))
        .env("REMOTE_USER", "paas")
        .env("REMOTE_ADDR", "127.0.0.1")
        // For the pre-receive hook: where to deploy, as whom, which app.
        .env("PAAS_HOOK_SERVER", api)
        .env("PAAS_HOOK_CA_FILE", hook_ca)
        .env("PAAS_HOOK_TOKEN", token)
        .env("PAAS_HOOK_APP", app)
        .env("PAAS_HOOK_EXE", hook_exe())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().expect("piped");
    tokio::spawn(feed(body, stdin, limit + COMMANDS_SLACK, deadline, app.to_string()));
    let stderr = child.stderr.take().expect("piped");
    let app_name = app.to_string();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!(app = %app_name, "git http-backend: {line}");
        }
    });

    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let mut builder = Response::builder();
    loop {
        let mut line = String::new();
        let read = tokio::time::timeout_at(deadline, (&mut out).take(8192).read_line(&mut line)).await;
        if read.context("git http-backend did not answer in time")?? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("status") {
                let code: u16 = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
                builder = builder.status(code);
            } else {
                builder = builder.header(name.trim(), value);
            }
        }
    }
    // Keep the child alive until its output is fully sent; it is reaped when the stream ends,
    // and killed (on drop) when the push runs out of time.
    let stream = tokio_util::io::ReaderStream::new(out);
    let guarded = futures_util::stream::unfold((stream, Some(child)), move |(mut s, child)| async move {
        let mut child = child?;
        match tokio::time::timeout_at(deadline, s.next()).await {
            Ok(Some(item)) => Some((item, (s, Some(child)))),
            Ok(None) => {
                let _ = child.wait().await;
                None
            }
            Err(_) => {
                tracing::warn!("a git push ran out of time; stopping it");
                let _ = child.kill().await;
                let err = std::io::Error::new(std::io::ErrorKind::TimedOut, "the push took too long");
                Some((Err(err), (s, None)))
            }
        }
    });
    Ok(builder.body(Body::from_stream(guarded))?)
}

/// Copies the request body to git's stdin, at most `max` bytes and only while it keeps coming
/// (within [`BODY_IDLE_TIMEOUT`] and before `deadline`). Past `max` git gets end of input and
/// fails the push; a pack over the limit is refused by git itself before that, with a message.
/// Once git stops taking input the rest of the body is read and discarded for a while (as
/// nginx's lingering close does): closing a connection with unread request bytes resets it, and
/// the pusher would see "broken pipe" instead of git's answer.
async fn feed(body: Body, stdin: tokio::process::ChildStdin, max: u64, deadline: Instant, app: String) {
    let mut stream = body.into_data_stream();
    let mut stdin = Some(stdin);
    let mut total = 0u64;
    let mut linger_until = deadline;
    loop {
        let wait = linger_until.min(Instant::now() + BODY_IDLE_TIMEOUT);
        let chunk = match tokio::time::timeout_at(wait, stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) | Ok(Some(Err(_))) => return,
            Err(_) if stdin.is_none() => return,
            Err(_) => {
                tracing::warn!(app = %app, received = total, "a git push stopped sending; giving it up");
                return;
            }
        };
        total += chunk.len() as u64;
        let Some(pipe) = stdin.as_mut() else { continue };
        let taken = if total > max {
            tracing::warn!(app = %app, limit = max, "a git push is larger than the limit; cutting it off");
            false
        } else {
            pipe.write_all(&chunk).await.is_ok()
        };
        if !taken {
            stdin = None;
            linger_until = deadline.min(Instant::now() + LINGER);
        }
    }
}
