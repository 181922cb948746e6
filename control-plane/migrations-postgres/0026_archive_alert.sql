-- WAL archiving that falls behind (files pile up in the primary's spool: the agent cannot ship
-- them, or the archiver fails) loses the point-in-time recovery it promises: alert on it.
INSERT INTO alert_rules (id, kind, metric, op, threshold, for_secs, description, builtin) VALUES
    ('wal-archive-behind', 'metric', 'db_wal_archive_backlog', '>', 8, 300, 'a database''s WAL archiving falls behind', TRUE);
