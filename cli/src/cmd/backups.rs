//! `paas db backup|backups|verify|restore|import|psql`: backups that are proven by a restore,
//! restores, imports of dumps from elsewhere, and psql inside the database container. Long
//! work is followed until it ends.

use crate::args::{AppEnv, Global, Output};
use crate::output::{emit, table};
use anyhow::Context;
use protocol::agent::{DbRole, DbTaskStatus};
use protocol::api::{Backup, BackupKind, BackupStatus, DbTaskView, PsqlCommand, StartRestore, Verification};
use protocol::Client;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(300);

pub(crate) use protocol::bytes_human as human;

/// `2026-11-26T13:21:43.91586Z` as `2026-11-26 13:21:43`.
fn source_text(b: &Backup) -> &'static str {
    if b.source == DbRole::Replica {
        "the replica"
    } else {
        "the primary (no healthy replica)"
    }
}

/// Polls a backup until `done` says so.
async fn follow(
    client: &Client,
    t: &AppEnv,
    id: &str,
    done: impl Fn(&Backup) -> bool,
) -> anyhow::Result<Backup> {
    loop {
        let b = client.db_get_backup(&t.app, &t.env, id).await?;
        if done(&b) {
            return Ok(b);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for a verification and reports it; false when it failed.
async fn follow_verification(g: &Global, client: &Client, t: &AppEnv, id: &str) -> anyhow::Result<bool> {
    let started = Instant::now();
    let b =
        follow(client, t, id, |b| matches!(b.verification, Verification::Ok | Verification::Failed)).await?;
    let ok = b.verification == Verification::Ok;
    if g.output == Output::Text {
        let secs = started.elapsed().as_secs_f64();
        if ok && b.kind == BackupKind::Base {
            println!("Verified in {secs:.1}s: recovered with the WAL archive in a throwaway server");
        } else if ok {
            let rows: u64 = b.tables.values().sum();
            println!("Verified in {secs:.1}s: restored into a throwaway database, {} tables and {rows} rows match the manifest", b.tables.len());
        } else {
            eprintln!("Verification FAILED: {}", b.verification_error.as_deref().unwrap_or("unknown error"));
        }
    } else {
        emit(g.output, &b, |_| {})?;
    }
    Ok(ok)
}

pub async fn backup(g: &Global, t: AppEnv, no_wait: bool, base: bool) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    let started = Instant::now();
    let b = client.db_backup(&t.app, &t.env, base).await?;
    let what = if base { "Base backup" } else { "Backup" };
    if no_wait {
        emit(g.output, &b, |b| {
            println!("{what} {} of {}/{} started from {}", b.id, t.app, t.env, source_text(b))
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if g.output == Output::Text {
        let how = if base { "a base backup of the data directory" } else { "a dump" };
        eprintln!("Backing up {}/{} from {} as {} ({how})...", t.app, t.env, source_text(&b), b.id);
    }
    let b = follow(&client, &t, &b.id, |b| b.status != BackupStatus::Running).await?;
    if b.status == BackupStatus::Failed {
        anyhow::bail!("backup {} failed: {}", b.id, b.error.as_deref().unwrap_or("unknown error"));
    }
    if g.output == Output::Text {
        let rows: u64 = b.tables.values().sum();
        let rows = if base { String::new() } else { format!(", {} tables, {rows} rows", b.tables.len()) };
        println!(
            "{what} {} stored in {:.1}s: {}{rows}, sha256 {}",
            b.id,
            started.elapsed().as_secs_f64(),
            human(b.size_bytes.unwrap_or(0)),
            b.sha256.as_deref().map_or("-", |s| &s[..s.len().min(16)])
        );
        for l in &b.locations {
            println!("  copy: {l}");
        }
        if base {
            eprintln!("Verifying: recovering it with the WAL archive in a throwaway server...");
        } else {
            eprintln!("Verifying: restoring it into a throwaway database...");
        }
    }
    let ok = follow_verification(g, &client, &t, &b.id).await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn list(g: &Global, t: AppEnv) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    let backups = client.db_backups(&t.app, &t.env).await?;
    emit(g.output, &backups, |list| {
        if list.is_empty() {
            println!("{}/{} has no backups yet; `paas db backup` takes one", t.app, t.env);
            return;
        }
        table(&["ID", "STARTED (UTC)", "TRIGGER", "FROM", "STATUS", "SIZE", "ROWS", "VERIFIED"], list, |b| {
            let verification = match (b.verification, &b.verification_error) {
                (Verification::Failed, Some(e)) => format!("FAILED: {e}"),
                (v, _) => v.to_string(),
            };
            vec![
                b.id.clone(),
                crate::output::ago(&b.started_at),
                match b.kind {
                    BackupKind::Base => format!("{} (base)", b.trigger),
                    BackupKind::Dump => b.trigger.to_string(),
                },
                if b.trigger == protocol::api::BackupTrigger::Imported {
                    "upload".to_string()
                } else {
                    b.source.as_str().trim_start_matches("db-").to_string()
                },
                if b.status == BackupStatus::Failed {
                    format!("failed: {}", b.error.as_deref().unwrap_or(""))
                } else {
                    b.status.to_string()
                },
                b.size_bytes.map_or("-".into(), human),
                b.tables.values().sum::<u64>().to_string(),
                verification,
            ]
        });
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(g: &Global, t: AppEnv, id: String) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    client.db_verify(&t.app, &t.env, &id).await?;
    if g.output == Output::Text {
        eprintln!("Verifying backup {id}: checking its copies and restoring it into a throwaway database...");
    }
    let ok = follow_verification(g, &client, &t, &id).await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn follow_task(client: &Client, t: &AppEnv, id: &str) -> anyhow::Result<DbTaskView> {
    loop {
        let task = client.db_task(&t.app, &t.env, id).await?;
        if !task.status.is_open() {
            return Ok(task);
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn restore(g: &Global, t: AppEnv, req: StartRestore) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    let started = Instant::now();
    let task = client.db_restore(&t.app, &t.env, &req).await?;
    // What is restored: the backup, or the one recovered to the moment (the task's backup).
    let backup = task.backup.clone().unwrap_or_default();
    if g.output == Output::Text {
        if let Some(s) = &task.safety_backup {
            eprintln!("Taking safety backup {s} of {}/{} first...", t.app, t.env);
        }
        match &req.to_time {
            Some(at) => eprintln!(
                "Recovering {}/{} as it was at {at} from a base backup and the WAL archive (as backup {backup}), then restoring it...",
                t.app, t.env
            ),
            None => eprintln!("Restoring backup {backup}..."),
        }
    }
    finish_restore(g, &client, &t, &task.id, &backup, started).await
}

/// Follows a restore task to its end and says where the data went.
async fn finish_restore(
    g: &Global,
    client: &Client,
    t: &AppEnv,
    id: &str,
    backup: &str,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let task = follow_task(client, t, id).await?;
    if task.status == DbTaskStatus::Failed {
        anyhow::bail!(
            "restoring backup {backup} failed: {}",
            task.error.as_deref().unwrap_or("unknown error")
        );
    }
    emit(g.output, &task, |task| {
        let secs = started.elapsed().as_secs_f64();
        match (&task.target_url, &task.target_database) {
            (Some(url), Some(db)) => {
                println!("Restored backup {backup} into the new database {db} in {secs:.1}s: {url}")
            }
            _ => println!("Restored backup {backup} into {}/{}'s database in {secs:.1}s", t.app, t.env),
        }
        if let Some(s) = &task.safety_backup {
            println!("The data it replaced is in safety backup {s}.");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `paas db import`: uploads a dump (a file, standard input, or a URL this machine downloads,
/// so the platform never fetches addresses on a user's behalf), waits for its proof, then for
/// its restore.
pub async fn import(
    g: &Global,
    t: AppEnv,
    source: &str,
    confirm: bool,
    to_new: bool,
) -> anyhow::Result<ExitCode> {
    if confirm == to_new {
        anyhow::bail!(
            "importing into the environment's database replaces what the dump holds: pass --confirm (a safety backup is taken first), or --to-new to import into a new database"
        );
    }
    let client = super::client(g)?;
    let started = Instant::now();
    let body = super::backup_import::dump_body(source).await?;
    if g.output == Output::Text {
        eprintln!("Uploading {source} to {}/{}...", t.app, t.env);
    }
    let task = client.db_import(&t.app, &t.env, body, to_new, confirm).await?;
    let backup = task.backup.clone().unwrap_or_default();
    if g.output == Output::Text {
        eprintln!("Stored as backup {backup}; proving it by a restore into a throwaway database...");
    }
    let b =
        follow(&client, &t, &backup, |b| matches!(b.verification, Verification::Ok | Verification::Failed))
            .await?;
    if b.verification == Verification::Failed {
        anyhow::bail!(
            "the dump did not restore into a throwaway database, so nothing was imported: {}",
            b.verification_error.as_deref().unwrap_or("unknown error")
        );
    }
    if g.output == Output::Text {
        let rows: u64 = b.tables.values().sum();
        eprintln!("Proven: {} tables, {rows} rows", b.tables.len());
        if let Some(s) = &task.safety_backup {
            eprintln!("Taking safety backup {s} of {}/{} first, then restoring...", t.app, t.env);
        }
    }
    finish_restore(g, &client, &t, &task.id, &backup, started).await
}

async fn run_psql(
    client: &Client,
    t: &AppEnv,
    replica: bool,
    args: Vec<String>,
    input: String,
) -> anyhow::Result<DbTaskView> {
    let task = client.db_psql(&t.app, &t.env, &PsqlCommand { replica, args, input }).await?;
    let task = follow_task(client, t, &task.id).await?;
    if task.status == DbTaskStatus::Failed {
        anyhow::bail!("psql could not run: {}", task.error.as_deref().unwrap_or("unknown error"));
    }
    Ok(task)
}

/// psql in the container. A script on stdin, or arguments, run once; at a terminal without
/// arguments, one interactive psql on a TTY of its own (line editing, `\\q` to quit).
pub async fn psql(g: &Global, t: AppEnv, replica: bool, args: Vec<String>) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    let stdin = std::io::stdin();
    if !args.is_empty() || !stdin.is_terminal() {
        let mut input = String::new();
        if !stdin.is_terminal() {
            stdin.lock().read_to_string(&mut input)?;
        }
        let task = run_psql(&client, &t, replica, args, input).await?;
        print!("{}", task.output);
        let code = task.exit_code.unwrap_or(1);
        return Ok(if code == 0 { ExitCode::SUCCESS } else { ExitCode::from(code.clamp(1, 255) as u8) });
    }
    // At a terminal: one real psql session on a TTY of its own, joined like `paas run`.
    let started = client.db_psql_attached(&t.app, &t.env, replica).await?;
    let conn = client.attach_run(&t.app, &t.env, &started.id).await.context("joining psql")?;
    let code = super::run::session(conn, true).await?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
