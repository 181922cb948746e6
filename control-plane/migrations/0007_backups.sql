-- Backups of managed databases: schedule and retention per database, one row per backup with
-- its manifest figures and verification, the database tasks agents run (backup, verify,
-- restore, psql), and platform events that alerting picks up.
ALTER TABLE databases ADD COLUMN backup_schedule TEXT NOT NULL DEFAULT '0 3 * * *';
ALTER TABLE databases ADD COLUMN keep_count INTEGER NOT NULL DEFAULT 7;
ALTER TABLE databases ADD COLUMN keep_days INTEGER NOT NULL DEFAULT 30;
-- Unix seconds of the last scheduled run (0: count from creation).
ALTER TABLE databases ADD COLUMN last_scheduled_at INTEGER NOT NULL DEFAULT 0;

CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    trigger TEXT NOT NULL,          -- manual | scheduled | safety
    source TEXT NOT NULL,           -- db-replica | db-primary
    node TEXT NOT NULL,
    status TEXT NOT NULL,           -- running | stored | failed
    error TEXT,
    size_bytes INTEGER,
    sha256 TEXT,
    tables TEXT NOT NULL DEFAULT '{}',
    locations TEXT NOT NULL DEFAULT '[]',
    started_at TEXT NOT NULL,
    finished_at TEXT,
    verify_status TEXT NOT NULL DEFAULT 'pending', -- pending | running | ok | failed
    verify_error TEXT,
    verified_at TEXT,
    created_unix INTEGER NOT NULL
);
CREATE INDEX backups_env ON backups (app, env, created_unix);

CREATE TABLE db_tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,             -- backup | verify | restore | psql
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    node TEXT NOT NULL,
    role TEXT NOT NULL,             -- the server it runs against
    backup TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,           -- pending | done | failed
    error TEXT,
    result TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX db_tasks_node ON db_tasks (node, status);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    kind TEXT NOT NULL,             -- e.g. db.backup.failed, db.verify.failed
    severity TEXT NOT NULL,         -- info | warning | critical
    message TEXT NOT NULL
);
