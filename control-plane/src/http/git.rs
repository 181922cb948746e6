//! `/git/{app}.git/...`: a git smart-HTTP server per app, by running real `git http-backend` as
//! a CGI program. HTTP basic auth, with an API token as the password (any user name), so git's
//! credential helpers work. Each repository's pre-receive hook runs `paas git-hook`, which
//! deploys pushed branches and streams the output back as `remote:` lines; a failed deploy
//! rejects the push.

use super::error::ApiError;
use crate::state::AppState;
use crate::tokens;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

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

/// Creates the bare repository on first use and (re)writes its hook, so it always calls the
/// running `paas` binary.
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
    let exe = std::env::current_exe()?;
    let hook = dir.join("hooks").join("pre-receive");
    tokio::fs::create_dir_all(dir.join("hooks")).await?;
    // The binary's path is the only thing interpolated, and it is quoted for sh.
    let quoted = exe.display().to_string().replace('\'', "'\\''");
    tokio::fs::write(&hook, format!("#!/bin/sh\nexec '{quoted}' git-hook\n")).await?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).await?;
    }
    Ok(dir)
}

async fn serve(
    State(state): State<AppState>,
    Path((repo, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some(token) = basic_password(&req) else {
        return challenge("git over HTTP needs your paas API token as the password");
    };
    match state.store.token(&tokens::hash(&token)).await {
        Ok(Some((_, kind))) if kind == "user" => {}
        Ok(_) => return challenge("the API token is not valid"),
        Err(e) => return ApiError::from(e).into_response(),
    }
    let Some(app) = repo.strip_suffix(".git") else {
        return ApiError::NotFound(format!("{repo:?} is not a repository; use <app>.git")).into_response();
    };
    if let Err(e) = state.store.get_app(app).await {
        return ApiError::from(e).into_response();
    }
    match cgi(&state, app, &rest, &token, req).await {
        Ok(resp) => resp,
        Err(e) => ApiError::Internal(e.context("running git http-backend")).into_response(),
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
    let api = state.api_url();
    let mut child = tokio::process::Command::new("git")
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
        .env("PAAS_HOOK_TOKEN", token)
        .env("PAAS_HOOK_APP", app)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
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
        if out.read_line(&mut line).await? == 0 {
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
    // Keep the child alive until its output is fully sent; it is reaped when the stream ends.
    let stream = tokio_util::io::ReaderStream::new(out);
    let guarded = futures_util::stream::unfold((stream, Some(child)), |(mut s, child)| async move {
        match s.next().await {
            Some(item) => Some((item, (s, child))),
            None => {
                if let Some(mut c) = child {
                    let _ = c.wait().await;
                }
                None
            }
        }
    });
    Ok(builder.body(Body::from_stream(guarded))?)
}
