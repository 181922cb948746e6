-- Streaming replicas: how many a database has and where the first one runs. Databases from
-- before this migration keep none (their primary has no replication role).
ALTER TABLE databases ADD COLUMN replicas INTEGER NOT NULL DEFAULT 0;
ALTER TABLE databases ADD COLUMN replica_node TEXT NOT NULL DEFAULT '';
