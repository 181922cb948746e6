//! Store tests: migrations (and upgrading a data directory of the release before sqlx's
//! migrator) on SQLite; strict decoding and the release transactions on in-memory SQLite and
//! on a throwaway PostgreSQL server alike.

use super::*;
use paas_tests::pg::PgServer;
use protocol::agent::{DbRole, DbTaskKind, DbTaskStatus};
use protocol::api::{BackupStatus, BackupTrigger, ReleaseStatus, Verification};

/// Runs store test `$name(store)` twice: on in-memory SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Store::open_in_memory().await.unwrap()).await
            }

            #[tokio::test]
            async fn postgres() {
                let pg = super::PgServer::start();
                let store = super::Store::open_postgres(&pg.url("postgres")).await.unwrap();
                super::$name(store.clone()).await;
                store.close().await;
            }
        }
    )*};
}

on_both!(
    rows_that_do_not_decode_are_errors,
    a_second_unfinished_release_is_a_conflict,
    rollout_switch_retire_and_abort_leave_consistent_state,
    reports_count_as_changes_only_when_they_change_something,
    a_deleted_apps_platform_events_go_with_it_and_its_audit_entries_stay,
    a_databases_timeline_and_failover_news_are_the_platforms_events,
);

/// Existing environments keep their Docker names on upgrade, except those whose old names
/// already collided with another environment's.
#[tokio::test]
async fn the_names_migration_keeps_old_names_unless_they_collided() {
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let migrations: Vec<&str> = MIGRATOR.iter().map(|m| &*m.sql).collect();
    let at = migrations.iter().position(|m| m.contains("ADD COLUMN legacy_names")).unwrap();
    for sql in &migrations[..at] {
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    }
    for (app, env) in [("shop", "eu-production"), ("shop-eu", "production"), ("notes", "production")] {
        sqlx::query("INSERT INTO apps (name, created_at) VALUES (?, '') ON CONFLICT DO NOTHING")
            .bind(app)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO envs (app, name, created_at) VALUES (?, ?, '')")
            .bind(app)
            .bind(env)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::raw_sql(migrations[at]).execute(&pool).await.unwrap();
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT app, legacy_names FROM envs ORDER BY app").fetch_all(&pool).await.unwrap();
    let expected = [("notes", true), ("shop", false), ("shop-eu", false)];
    assert_eq!(rows, expected.map(|(a, l)| (a.to_string(), l)).to_vec());
    // Environments made after the upgrade get the new names.
    sqlx::query("INSERT INTO envs (app, name, created_at) VALUES ('notes', 'staging', '')")
        .execute(&pool)
        .await
        .unwrap();
    let legacy: bool = sqlx::query_scalar("SELECT legacy_names FROM envs WHERE name = 'staging'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!legacy);
}

/// The migrations of the release before sqlx's migrator (0001-0011), applied the way it did:
/// each in a transaction, recorded in `schema_migrations` by position.
async fn apply_old_migrations(pool: &sqlx::SqlitePool) {
    sqlx::query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    for m in MIGRATOR.iter().filter(|m| m.version <= 11) {
        let mut tx = pool.begin().await.unwrap();
        sqlx::raw_sql(&m.sql).execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, '')")
            .bind(m.version)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
}

/// Rows as the release before wrote them: JSON columns as it serialized them, statuses as text,
/// and one release from before releases had manifests (an empty `manifest`).
const OLD_ROWS: &str = r#"
INSERT INTO tokens (hash, "user", kind, created_at) VALUES ('h-admin', 'admin', 'user', 't'), ('h-join', 'agent', 'join', 't');
INSERT INTO nodes (name, private_addr, ingress, last_seen) VALUES ('n1', '10.0.0.1', 1, 't');
INSERT INTO node_credentials (node, hash, created_at) VALUES ('n1', 'h-n1', 't');
INSERT INTO apps (name, created_at) VALUES ('shop', 't');
INSERT INTO envs (app, name, created_at, current_release, formation, config, legacy_names)
    VALUES ('shop', 'production', 't', 2, '{"web":3}', x'0102', 1);
INSERT INTO releases (app, env, version, status, source, image_id, build_node, created_at, created_by, manifest, description, config_keys)
    VALUES ('shop', 'production', 1, 'superseded', 'build', 'sha256:a', 'n1', 't', 'admin', '', 'Deploy', '[]'),
           ('shop', 'production', 2, 'active', 'build', 'sha256:b', 'n1', 't', 'admin', 'MANIFEST', 'Deploy', '["KEY"]');
INSERT INTO instances (name, app, env, process, release, replica, node, state, healthy, host_port, restarts, log_tail, updated_at)
    VALUES ('paas-shop-production-web-2-1', 'shop', 'production', 'web', 2, 1, 'n1', 'running', 1, 32768, 0, '["up"]', 't');
INSERT INTO deploy_events (app, env, version, seq, kind, text, at) VALUES ('shop', 'production', 2, 1, 'stage', 'switched', 't');
INSERT INTO jobs (id, app, env, release, node, kind, command, status, exit_code, created_at, created_by)
    VALUES ('release-shop-production-2', 'shop', 'production', 2, 'n1', 'release', '["migrate"]', 'done', 0, 't', 'admin');
INSERT INTO databases (app, env, version, node, password, max_connections, created_at, replicas, replica_node, host_port)
    VALUES ('shop', 'production', 16, 'n1', x'03', 100, 't', 1, 'n1', 5433);
INSERT INTO backups (id, app, env, trigger, source, node, status, size_bytes, sha256, tables, locations, started_at, finished_at, verify_status, verified_at, created_unix)
    VALUES ('20260101-030000-abcd', 'shop', 'production', 'scheduled', 'db-replica', 'n1', 'stored', 1234, 'ff', '{"public.t":3}', '["local:/b"]', '2026-01-01T03:00:00Z', 't', 'ok', 't', 1767236400);
INSERT INTO db_tasks (id, kind, app, env, node, role, backup, params, status, result, created_at, finished_at)
    VALUES ('verify-1', 'verify', 'shop', 'production', 'n1', 'db-replica', '20260101-030000-abcd',
            '{"target_database":"","create_target":false,"psql_args":[],"input":""}', 'done', '{"output":"","exit_code":null}', 't', 't');
INSERT INTO events (at, app, env, kind, severity, message) VALUES ('t', 'shop', 'production', 'db.backup.failed', 'critical', 'boom');
"#;

/// A data directory made by the release before this one (migrations in `schema_migrations`)
/// opens with the new store: its history moves to sqlx's table, the newer migrations apply,
/// and every kind of row reads back.
#[tokio::test]
async fn a_data_directory_of_the_previous_release_upgrades_in_place() {
    let dir = tempdir();
    let path = dir.0.join("state.db");
    let manifest = protocol::manifest::Manifest::default();
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        apply_old_migrations(&pool).await;
        let rows = OLD_ROWS.replace("MANIFEST", &serde_json::to_string(&manifest).unwrap());
        sqlx::raw_sql(&rows).execute(&pool).await.unwrap();
        pool.close().await;
    }
    for _ in 0..2 {
        let store = Store::open(&path).await.unwrap();
        let Pool::Sqlite(pool) = &store.pool else { unreachable!("a SQLite store") };
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await
            .unwrap();
        let expected: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(versions, expected, "every migration recorded once");
        let old: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'schema_migrations'")
                .fetch_optional(pool)
                .await
                .unwrap();
        assert_eq!(old, None, "the old history is imported once");

        let t = store.token("h-admin").await.unwrap().unwrap();
        assert_eq!((t.user.as_str(), t.kind), ("admin", TokenKind::User));
        // The long-lived join token and the bearer node credentials end with certificates: the
        // node is still there and joins again with a one-time token.
        assert!(store.token("h-join").await.unwrap().is_none());
        assert_eq!(store.cert_node("h-n1").await.unwrap(), None);
        assert!(store.list_nodes().await.unwrap()[0].ingress);
        let env = store.get_env("shop", "production").await.unwrap();
        assert_eq!((env.current_release, env.formation["web"], env.legacy_names), (Some(2), 3, true));
        assert_eq!(env.config, [1, 2]);
        let releases = store.list_releases("shop", "production").await.unwrap();
        assert_eq!(releases.len(), 2);
        assert_eq!(
            (releases[0].status, &releases[0].config_keys),
            (ReleaseStatus::Active, &vec!["KEY".into()])
        );
        assert_eq!(releases[0].manifest, manifest);
        // A release from before manifests ran the defaults, which the upgrade writes down.
        assert_eq!((releases[1].status, &releases[1].manifest), (ReleaseStatus::Superseded, &manifest));
        let instances = store.instances_for_env("shop", "production").await.unwrap();
        assert_eq!((instances[0].host_port, instances[0].healthy), (Some(32768), true));
        assert_eq!(instances[0].log_tail, ["up"]);
        assert_eq!(store.events_after("shop", "production", 2, 0).await.unwrap()[0].text, "switched");
        let job = store.get_job("release-shop-production-2").await.unwrap();
        assert_eq!(
            (job.kind, job.done(), job.command),
            (JobKind::Release, true, vec!["migrate".to_string()])
        );
        let db = store.get_database("shop", "production").await.unwrap();
        assert_eq!((db.version, db.replicas, db.host_port, db.keep_count), (16, 1, 5433, 7));
        assert!(db.superuser_password.is_empty() && db.legacy_names);
        let b = store.get_backup("20260101-030000-abcd").await.unwrap();
        assert_eq!(
            (b.trigger, b.source, b.status),
            (BackupTrigger::Scheduled, DbRole::Replica, BackupStatus::Stored)
        );
        assert_eq!((b.verification, b.size_bytes, b.tables["public.t"]), (Verification::Ok, Some(1234), 3));
        let task = store.get_db_task("verify-1").await.unwrap();
        assert_eq!(
            (task.kind, task.role, task.status),
            (DbTaskKind::Verify, DbRole::Replica, DbTaskStatus::Done)
        );
        assert_eq!(
            store
                .activity(&crate::store::ActivityFilter { limit: 1000, ..Default::default() })
                .await
                .unwrap()[0]
                .message,
            "boom"
        );
        store.close().await;
    }
}

/// A row the store cannot read is an error, never a default.
async fn rows_that_do_not_decode_are_errors(store: Store) {
    store.create_app("shop").await.unwrap();
    store.create_release("shop", "production", &new_release()).await.unwrap();
    let set = |sql: &'static str| async { exec!(store.pool, |ex| sqlx::query(sql).execute(ex).await) };
    set("UPDATE releases SET manifest = '{\"processes\": 1}'").await.unwrap();
    assert!(matches!(store.get_release("shop", "production", 1).await, Err(StoreError::Db(_))));
    let manifest = sqlx::types::Json(protocol::manifest::Manifest::default());
    exec!(store.pool, |ex| sqlx::query("UPDATE releases SET manifest = $1, status = 'paused'")
        .bind(&manifest)
        .execute(ex)
        .await)
    .unwrap();
    // sqlx 0.8's `try_from` loses the conversion's message, but names the column.
    let err = store.get_release("shop", "production", 1).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Db(sqlx::Error::ColumnDecode { index, .. }) if index.contains("status")),
        "{err:?}"
    );
    set("UPDATE envs SET formation = '\"web=2\"'").await.unwrap();
    assert!(store.get_env("shop", "production").await.is_err());
}

fn new_release() -> NewRelease {
    NewRelease {
        source: "build".into(),
        created_by: "admin".into(),
        build_node: "n1".into(),
        manifest: protocol::manifest::Manifest::default(),
        description: "Deploy".into(),
        image_id: None,
        config: Vec::new(),
        config_keys: Vec::new(),
        manifest_text: String::new(),
    }
}

fn instance(release: u32, replica: u32) -> InstanceRow {
    let names = protocol::DockerNames::new("shop", "production");
    InstanceRow::pending(&names, "web", release, replica, "n1".into(), Default::default())
}

/// (release, replica) of every placed instance.
async fn placed(store: &Store) -> Vec<(u32, u32)> {
    let all = store.instances_for_env("shop", "production").await.unwrap();
    all.iter().map(|i| (i.release, i.replica)).collect()
}

async fn status(store: &Store, version: u32) -> ReleaseStatus {
    store.get_release("shop", "production", version).await.unwrap().status
}

/// One unfinished release per environment: a second deploy is refused until the first ends.
async fn a_second_unfinished_release_is_a_conflict(store: Store) {
    store.create_app("shop").await.unwrap();
    store.create_env("shop", "staging").await.unwrap();
    let v1 = store.create_release("shop", "production", &new_release()).await.unwrap();
    assert_eq!((v1.version, v1.status), (1, ReleaseStatus::Building));
    let busy = store.create_release("shop", "production", &new_release()).await.unwrap_err();
    assert!(matches!(&busy, StoreError::Conflict(m) if m.contains("in progress (release v1)")), "{busy}");
    // Another environment is not held up, and a deploying release still counts as unfinished.
    assert_eq!(store.create_release("shop", "staging", &new_release()).await.unwrap().version, 1);
    store.start_rollout("shop", "production", 1, &Default::default(), &[instance(1, 1)]).await.unwrap();
    assert!(store.create_release("shop", "production", &new_release()).await.is_err());
    store.abort_rollout("shop", "production", 1, "unhealthy").await.unwrap();
    let v2 = store.create_release("shop", "production", &new_release()).await.unwrap();
    assert_eq!(v2.version, 2);
    assert!(store
        .unfinished_releases()
        .await
        .unwrap()
        .iter()
        .all(|r| r.version != 1 || r.env != "production"));
}

/// A deploy rolls out beside the served release, switches, retires the old containers; a failed
/// one leaves the served release and its containers as they were.
async fn rollout_switch_retire_and_abort_leave_consistent_state(store: Store) {
    store.create_app("shop").await.unwrap();
    let env = || store.get_env("shop", "production");

    store.create_release("shop", "production", &new_release()).await.unwrap();
    store
        .start_rollout("shop", "production", 1, &Default::default(), &[instance(1, 1), instance(1, 2)])
        .await
        .unwrap();
    assert_eq!(status(&store, 1).await, ReleaseStatus::Deploying);
    assert_eq!((env().await.unwrap().current_release, env().await.unwrap().target_release), (None, Some(1)));
    store.switch_release("shop", "production", 1).await.unwrap();
    store.set_release_status("shop", "production", 1, ReleaseStatus::Active, None).await.unwrap();
    assert_eq!((env().await.unwrap().current_release, env().await.unwrap().target_release), (Some(1), None));

    // v2 runs beside v1 until the switch; v1 is superseded at the switch and retired after it.
    store.create_release("shop", "production", &new_release()).await.unwrap();
    store.start_rollout("shop", "production", 2, &Default::default(), &[instance(2, 1)]).await.unwrap();
    assert_eq!(placed(&store).await, [(1, 1), (1, 2), (2, 1)]);
    store.switch_release("shop", "production", 2).await.unwrap();
    assert_eq!(status(&store, 1).await, ReleaseStatus::Superseded);
    assert_eq!(env().await.unwrap().current_release, Some(2));
    assert_eq!(placed(&store).await.len(), 3, "old containers stay until the ingress confirms");
    store.retire_others("shop", "production", 2).await.unwrap();
    store.set_release_status("shop", "production", 2, ReleaseStatus::Active, None).await.unwrap();
    assert_eq!(placed(&store).await, [(2, 1)]);

    // v3 fails: its containers go, v2 keeps serving.
    store.create_release("shop", "production", &new_release()).await.unwrap();
    store.start_rollout("shop", "production", 3, &Default::default(), &[instance(3, 1)]).await.unwrap();
    store.abort_rollout("shop", "production", 3, "replica web-1 never became healthy").await.unwrap();
    let v3 = store.get_release("shop", "production", 3).await.unwrap();
    assert_eq!(
        (v3.status, v3.error.as_deref()),
        (ReleaseStatus::Failed, Some("replica web-1 never became healthy"))
    );
    assert_eq!((env().await.unwrap().current_release, env().await.unwrap().target_release), (Some(2), None));
    assert_eq!(status(&store, 2).await, ReleaseStatus::Active);
    assert_eq!(placed(&store).await, [(2, 1)]);
    assert!(store.unfinished_releases().await.unwrap().is_empty());

    // Scaling the served release places and unassigns replicas in place.
    store.scale("shop", "production", "web", 3, &[instance(2, 2), instance(2, 3)]).await.unwrap();
    assert_eq!(placed(&store).await, [(2, 1), (2, 2), (2, 3)]);
    store.scale("shop", "production", "web", 1, &[]).await.unwrap();
    assert_eq!(placed(&store).await, [(2, 1)]);
    assert_eq!(env().await.unwrap().formation["web"], 1);

    // A prune keeps the current (v2), target (v4) and rollback target's (v1) images, not the
    // failed v3's.
    store.create_release("shop", "production", &new_release()).await.unwrap();
    let formation = env().await.unwrap().formation;
    assert!(store.start_rollout("shop", "production", 4, &formation, &[instance(4, 1)]).await.unwrap());
    exec!(store.pool, |ex| sqlx::query("UPDATE releases SET image_id = 'sha256:' || version")
        .execute(ex)
        .await)
    .unwrap();
    assert_eq!(store.kept_images().await.unwrap(), ["sha256:1", "sha256:2", "sha256:4"]);
}

/// A report changes the store only when something in it changed, a missing port included.
async fn reports_count_as_changes_only_when_they_change_something(store: Store) {
    store.create_app("shop").await.unwrap();
    store.create_release("shop", "production", &new_release()).await.unwrap();
    store.start_rollout("shop", "production", 1, &Default::default(), &[instance(1, 1)]).await.unwrap();
    let report = |host_port: Option<u16>, healthy: bool| protocol::agent::ContainerStatus {
        name: instance(1, 1).name,
        state: "running".into(),
        healthy,
        host_port,
        restarts: 0,
        log_tail: vec!["listening".into()],
        db: None,
        exit_code: None,
    };
    assert!(!store.apply_report("n1", &[report(None, false)]).await.unwrap().is_empty());
    assert!(store.apply_report("n1", &[report(None, false)]).await.unwrap().is_empty());
    assert!(!store.apply_report("n1", &[report(Some(32768), false)]).await.unwrap().is_empty());
    assert!(store.apply_report("n1", &[report(Some(32768), false)]).await.unwrap().is_empty());
    assert!(!store.apply_report("n1", &[report(Some(32768), true)]).await.unwrap().is_empty());
    assert!(
        store.apply_report("other-node", &[report(None, false)]).await.unwrap().is_empty(),
        "not its container"
    );
    let i = &store.instances_for_env("shop", "production").await.unwrap()[0];
    assert_eq!(
        (i.state.as_str(), i.healthy, i.host_port, &i.log_tail),
        ("running", true, Some(32768), &vec!["listening".to_string()])
    );
}

/// A temporary directory, removed when dropped.
struct TempDir(std::path::PathBuf);

fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("paas-store-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn a_deleted_apps_platform_events_go_with_it_and_its_audit_entries_stay(store: Store) {
    store.create_app("shop").await.unwrap();
    store.add_event("shop", "production", "deploy.live", "info", "Deploy v1 is live").await.unwrap();
    let audit = users::AuditRecord {
        user: "alice",
        action: "app.scale",
        app: "shop",
        env: "production",
        addr: "203.0.113.9",
        outcome: "ok",
        detail: "Scaled web to 2",
    };
    store.record_audit(&audit).await.unwrap();
    store.delete_app("shop").await.unwrap();
    store.create_app("shop").await.unwrap();
    let feed =
        store.activity(&crate::store::ActivityFilter { limit: 1000, ..Default::default() }).await.unwrap();
    let feed = Vec::from_iter(feed.iter().map(|e| e.kind.as_str()));
    assert_eq!(feed, ["app.created"], "a new app of the same name shows none of the old one's");
    let kept = store.audit(&users::AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(kept.len(), 1, "who did what stays in the audit log");
}

async fn a_databases_timeline_and_failover_news_are_the_platforms_events(store: Store) {
    store.create_app("shop").await.unwrap();
    store.add_event("shop", "production", "db.switchover", "info", "Switchover: one").await.unwrap();
    // A user's request audited under the same name is not the platform's news.
    let audit = users::AuditRecord {
        user: "alice",
        action: "db.failover",
        app: "shop",
        env: "production",
        addr: "203.0.113.9",
        outcome: "ok",
        detail: "",
    };
    store.record_audit(&audit).await.unwrap();
    store.add_event("shop", "production", "deploy.live", "info", "Deploy v1 is live").await.unwrap();
    store
        .add_event("shop", "production", "db.failover.refused", "critical", "NOT failed over")
        .await
        .unwrap();
    let kinds = ["db.switchover", "db.failover", "db.failover.refused"];
    let timeline = store.events_of_kinds("shop", "production", &kinds, 10).await.unwrap();
    let said = Vec::from_iter(timeline.iter().map(|e| e.message.as_str()));
    assert_eq!(said, ["Switchover: one", "NOT failed over"], "oldest first, platform events only");
    let newest = store.events_of_kinds("shop", "production", &kinds, 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].kind, "db.failover.refused");
    let news = store.newest_failovers().await.unwrap();
    assert_eq!(news.len(), 1);
    assert_eq!((news[0].0.as_str(), news[0].2.as_str()), ("shop", "db.failover.refused"));
    // A later switchover ends the news.
    store.add_event("shop", "production", "db.switchover", "info", "Switchover: two").await.unwrap();
    assert!(store.newest_failovers().await.unwrap().is_empty());
}
