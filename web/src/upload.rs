//! Deploying an uploaded archive from the console: a `multipart/form-data` post (so it works
//! without script) whose `archive` file, a gzipped tar of the app's directory as `paas deploy`
//! makes, is streamed on to the API chunk by chunk as it arrives, never held whole in memory.
//! The CSRF value must come before the file in the form, so nothing is forwarded unchecked.

use super::{back, env_path, Signed};
use axum::extract::{Multipart, Path};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;

/// Chunks in flight between the browser's upload and the API request.
const IN_FLIGHT: usize = 8;

pub(crate) async fn deploy_archive(
    me: Signed,
    Path((app, env)): Path<(String, String)>,
    mut form: Multipart,
) -> Response {
    let page = env_path(&app, &env);
    let mut csrf = String::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return back(me.config(), &page, false, &format!("The upload broke off: {}.", e.body_text()))
            }
        };
        match field.name() {
            Some("csrf") => csrf = field.text().await.unwrap_or_default(),
            Some("archive") => {
                if let Some(refused) = me.refused(&csrf) {
                    return refused;
                }
                if field.file_name().is_none_or(str::is_empty) {
                    break;
                }
                return forward(&me, &app, &env, field).await;
            }
            _ => {}
        }
    }
    back(me.config(), &page, false, "Choose a .tar.gz archive of the app's directory to deploy.")
}

/// Streams the file to `POST .../deploys` while it is still arriving.
async fn forward(
    me: &Signed,
    app: &str,
    env: &str,
    mut field: axum::extract::multipart::Field<'_>,
) -> Response {
    let page = env_path(app, env);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let (client, a, e) = (me.client.clone(), app.to_string(), env.to_string());
    let call =
        tokio::spawn(async move { client.deploy_source(&a, &e, reqwest::Body::wrap_stream(body)).await });
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                // The API stopped reading (it refused the upload): its answer says why.
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(err) => {
                let _ = tx.send(Err(std::io::Error::other(err.body_text()))).await;
                break;
            }
        }
    }
    drop(tx);
    match call.await {
        Ok(Ok(release)) => Redirect::to(&format!("{page}/releases/{}", release.version)).into_response(),
        Ok(Err(e)) => back(me.config(), &page, false, &e.message),
        Err(_) => back(me.config(), &page, false, "The upload could not be passed on; try again."),
    }
}
