-- A failover is news a person must hear about, and a refused one (the primary's node is lost and
-- its replica could not safely take over) means the database is down until someone acts.
INSERT INTO alert_rules (id, kind, metric, op, threshold, for_secs, description, builtin) VALUES
    ('db-failover', 'event', 'db_failover', '>', 0, 0, 'a database failed over within the hour, or its primary is lost and it was not failed over', 1);
