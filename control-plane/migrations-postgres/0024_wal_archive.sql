-- Point-in-time recovery: backups are logical dumps or physical base backups (which name the
-- WAL segment recovery starts at), and the WAL archive's segments, one row per stored file.
ALTER TABLE backups ADD COLUMN kind TEXT NOT NULL DEFAULT 'dump';
ALTER TABLE backups ADD COLUMN wal_start TEXT NOT NULL DEFAULT '';

CREATE TABLE wal_segments (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    name TEXT NOT NULL,             -- 000000010000000000000003.gz, 00000002.history.gz, ...
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    locations JSONB NOT NULL DEFAULT '[]',
    stored_at TEXT NOT NULL,
    stored_unix BIGINT NOT NULL,
    PRIMARY KEY (app, env, name)
);
