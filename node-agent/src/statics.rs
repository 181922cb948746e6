//! Extraction of routes' static directories from their release images into the agent's state
//! directory, for the ingress to serve. Each image+directory is extracted once (marked complete
//! only after a full unpack) and kept across agent restarts.

use crate::docker::DockerClient;
use crate::ingress::IngressHandle;
use protocol::agent::{Route, StaticRoute};
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Statics {
    docker: DockerClient,
    ingress: IngressHandle,
    root: PathBuf,
    busy: Arc<Mutex<HashSet<String>>>,
    ready: Arc<Mutex<BTreeSet<String>>>,
    /// Wakes the reporter when a directory became ready, so a waiting deploy learns at once.
    pub changed: Arc<tokio::sync::Notify>,
}

impl Statics {
    pub fn new(docker: DockerClient, ingress: IngressHandle, root: PathBuf) -> Self {
        Self { docker, ingress, root, busy: Arc::default(), ready: Arc::default(), changed: Arc::default() }
    }

    /// Keys of the directories the ingress can serve.
    pub fn ready_keys(&self) -> Vec<String> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    fn mark_ready(&self, key: &str, dir: PathBuf) {
        self.ingress.set_static_root(key, dir);
        if self.ready.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string()) {
            self.changed.notify_one();
        }
    }

    /// Makes sure the static files of every route (and of releases about to take over) are,
    /// or are being, extracted.
    pub fn ensure(&self, routes: &[Route], prefetch: &[StaticRoute]) {
        let wanted = routes.iter().filter_map(|r| r.static_files.clone()).chain(prefetch.iter().cloned());
        for st in wanted {
            let key = st.key();
            let dir = self.root.join(&key);
            if dir.join(".complete").exists() {
                self.mark_ready(&key, dir.join("files"));
                continue;
            }
            if !self.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                match this.extract(&st, &dir).await {
                    Ok(()) => {
                        tracing::info!(image = %st.image, dir = %st.dir, "static files ready");
                        this.mark_ready(&key, dir.join("files"));
                    }
                    Err(e) => {
                        tracing::warn!(image = %st.image, dir = %st.dir, error = %format!("{e:#}"), "extracting static files failed")
                    }
                }
                this.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            });
        }
    }

    async fn extract(&self, st: &StaticRoute, dir: &std::path::Path) -> anyhow::Result<()> {
        let tar = self.docker.copy_out(&st.image, &st.dir).await?;
        let (dir, base) = (dir.to_path_buf(), st.dir.rsplit('/').next().unwrap_or("").to_string());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let tmp = dir.with_extension("tmp");
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)?;
            // Docker's archive holds the directory itself (`public/...`); unpack refuses `..`.
            tar::Archive::new(&tar[..]).unpack(&tmp)?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            std::fs::rename(tmp.join(&base), dir.join("files"))?;
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::write(dir.join(".complete"), b"")?;
            Ok(())
        })
        .await?
    }
}
