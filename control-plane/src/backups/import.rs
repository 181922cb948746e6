//! `paas db import`: a pg_dump archive from elsewhere becomes a backup of the environment
//! (trigger `imported`), is proven by a restore drill in a throwaway server (whose row counts
//! become its manifest), and is then restored like any backup: into the environment's database
//! after a safety backup, or into a new database beside it. A file that is not a custom-format
//! archive, or that does not restore as the app's role, changes nothing.

use super::{alarm, new_backup, note, refuse_while_running, restores::start_restore, start_verify};
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::DbTaskRow;
use protocol::agent::DbRole;
use protocol::api::{BackupKind, BackupStatus, BackupTrigger};
use serde_json::json;

/// Stores the dump `body` streams as a backup of `app`/`env` and starts its drill and the
/// restore that waits for it; returns the restore task (its backup is the imported dump).
pub async fn import<E: std::fmt::Display>(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    to_new: bool,
    confirm: bool,
    body: impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
) -> Result<DbTaskRow> {
    let db = state.store.get_database(app, env).await?;
    if confirm == to_new {
        return Err(DomainError::Invalid(
            "importing into the environment's database replaces what the dump holds: pass --confirm (a safety backup is taken first), or --to-new to import into a new database".into(),
        ));
    }
    refuse_while_running(state, &db, "import once it has finished").await?;
    let mut b = new_backup(&db, BackupTrigger::Imported, DbRole::Primary, BackupKind::Dump);
    b.node = String::new();
    {
        // Busy while it arrives, so the sweep does not take it for abandoned work.
        let _busy = state.busy_wait(format!("backup:{}", b.id)).await;
        state.store.insert_backup(&b).await?;
        let stored = async {
            let (size, sha) = state.backup_storage.receive_import(&b, body).await?;
            b.size_bytes = Some(size);
            b.sha256 = Some(sha);
            let manifest = json!({
                "id": b.id, "app": b.app, "env": b.env, "trigger": b.trigger,
                "started_at": b.started_at, "finished_at": crate::store::now(),
                "format": "pg_dump custom format, imported by a user",
                "kind": b.kind, "size_bytes": b.size_bytes, "sha256": b.sha256,
            });
            state.backup_storage.finalize(&b, &manifest).await
        }
        .await;
        match stored {
            Ok(locations) => {
                b.status = BackupStatus::Stored;
                b.locations = locations;
                state.store.finish_backup(&b).await?;
            }
            Err(e) => {
                state.backup_storage.discard(&b).await;
                let why = format!("{e:#}");
                b.status = BackupStatus::Failed;
                b.error = Some(why.clone());
                state.store.finish_backup(&b).await?;
                let msg = format!("importing a dump into {app}/{env} failed, and nothing changed: {why}");
                alarm(state, app, env, "db.import.failed", &msg).await;
                return Err(DomainError::Invalid(format!("the dump was not imported: {why}")));
            }
        }
    }
    let size = protocol::bytes_human(b.size_bytes.unwrap_or(0));
    tracing::info!(app, env, backup = %b.id, size = b.size_bytes, user, to_new, "dump imported");
    let msg = format!("Imported a dump of {size} as backup {}; restoring it once a drill proves it", b.id);
    note(state, app, env, "db.import", &msg).await;
    let t = start_restore(state, &db, &b, to_new).await?;
    start_verify(state, &b).await?;
    Ok(t)
}
