-- Alert rules, alerts and notification targets (the metrics issue). Rules: a metric, a
-- comparison and a threshold held for a duration, over a scope (an app, one of its
-- environments, or everything); the built-in ones are made here and can be edited, disabled
-- and silenced, not removed. `kind` says how the condition is read: `metric` (the newest
-- samples), `increase` (how much a counter grew in `for_secs`), `silent` (seconds since a node
-- sent a sample), `event` (the newest deploy or restore drill failed), `state` (hours a
-- scheduled backup is overdue, days a certificate has left).
CREATE TABLE alert_rules (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    metric TEXT NOT NULL,
    op TEXT NOT NULL,               -- '>' or '<'
    threshold REAL NOT NULL,
    for_secs INTEGER NOT NULL,
    app TEXT,                       -- NULL: every app (and the nodes)
    env TEXT,                       -- NULL: every environment
    enabled INTEGER NOT NULL DEFAULT 1,
    silenced_until TEXT,            -- RFC 3339; notifications are held back until then
    description TEXT NOT NULL,
    builtin INTEGER NOT NULL DEFAULT 0  -- made here: edited, not removed
);
INSERT INTO alert_rules (id, kind, metric, op, threshold, for_secs, description) VALUES
    ('node-cpu', 'metric', 'node_cpu_percent', '>', 80, 300, 'a node''s CPU is busy'),
    ('node-memory', 'metric', 'node_memory_percent', '>', 80, 300, 'a node''s memory is nearly all in use'),
    ('node-disk', 'metric', 'node_disk_percent', '>', 80, 300, 'a node''s disk is filling up'),
    ('node-silent', 'silent', 'node_last_sample_seconds', '>', 60, 0, 'a node stopped reporting'),
    ('app-5xx', 'metric', 'http_5xx_percent', '>', 5, 300, 'an app answers with server errors'),
    ('crash-loop', 'increase', 'container_restarts', '>', 1, 600, 'a process keeps crashing'),
    ('replica-lag', 'metric', 'db_replica_lag_bytes', '>', 16777216, 300, 'a database replica falls behind'),
    ('db-connections', 'metric', 'db_connections_percent', '>', 80, 300, 'a database is running out of connections'),
    ('deploy-failed', 'event', 'deploy_failed', '>', 0, 0, 'the newest deploy of an environment failed'),
    ('restore-failed', 'event', 'restore_drill_failed', '>', 0, 0, 'the newest restore drill of a backup failed'),
    ('backup-overdue', 'state', 'backup_overdue_hours', '>', 1, 0, 'a database has no backup as new as its schedule asks'),
    ('cert-expiring', 'state', 'certificate_days_left', '<', 14, 0, 'a certificate ends soon and was not renewed');
UPDATE alert_rules SET builtin = 1;

-- One alert per rule and subject (`node=n1 path=/`, `app=shop env=production`), firing or
-- resolved; kept so a restart neither forgets what fires nor notifies it twice.
CREATE TABLE alerts (
    rule TEXT NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    app TEXT,
    env TEXT,
    state TEXT NOT NULL,            -- 'firing' or 'resolved'
    since TEXT NOT NULL,            -- when it started firing
    resolved_at TEXT,
    value REAL NOT NULL,            -- the newest value seen
    PRIMARY KEY (rule, subject)
);

-- Where alert (and, when asked, deploy) notifications go: an email address or a webhook URL,
-- sealed like config values; a webhook's signing key too.
CREATE TABLE notify_targets (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,             -- 'email' or 'webhook'
    target TEXT NOT NULL,           -- sealed (hex)
    secret TEXT,                    -- sealed (hex): HMAC key of a webhook
    app TEXT REFERENCES apps(name) ON DELETE CASCADE,   -- NULL: every app and the nodes
    deploys INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);
