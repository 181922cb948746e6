-- The schema SQLite's migrations 0001-0022 make, for a control plane whose state lives in
-- PostgreSQL (`paas server --database-url`). Later migrations get a file of the same number
-- here and in ../migrations. Flags are BOOLEAN and numbers BIGINT (SQLite's INTEGER), JSON
-- columns JSONB, sealed bytes BYTEA; timestamps stay RFC 3339 text as on SQLite.

CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    "user" TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    id TEXT,
    name TEXT,
    expires_at TEXT
);
CREATE UNIQUE INDEX tokens_id ON tokens (id);
CREATE UNIQUE INDEX tokens_user_name ON tokens ("user", name) WHERE kind = 'user';

CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE envs (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    replicas BIGINT NOT NULL DEFAULT 1,
    port BIGINT NOT NULL DEFAULT 8080,
    current_release BIGINT,
    target_release BIGINT,
    created_at TEXT NOT NULL,
    formation JSONB NOT NULL DEFAULT '{}',
    config BYTEA NOT NULL DEFAULT '',
    legacy_names BOOLEAN NOT NULL DEFAULT FALSE,
    host_env TEXT,
    maintenance BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (app, name)
);

CREATE TABLE releases (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    image_id TEXT,
    build_node TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    error TEXT,
    manifest JSONB NOT NULL DEFAULT 'null',
    description TEXT NOT NULL DEFAULT '',
    config BYTEA NOT NULL DEFAULT '',
    config_keys JSONB NOT NULL DEFAULT '[]',
    manifest_text TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, env, version),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);

CREATE TABLE instances (
    name TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    process TEXT NOT NULL,
    release BIGINT NOT NULL,
    replica BIGINT NOT NULL,
    node TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    healthy BOOLEAN NOT NULL DEFAULT FALSE,
    host_port BIGINT,
    restarts BIGINT NOT NULL DEFAULT 0,
    log_tail JSONB NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL,
    reserve_millicpus BIGINT NOT NULL DEFAULT 0,
    reserve_memory_bytes BIGINT NOT NULL DEFAULT 0,
    unrouted BOOLEAN NOT NULL DEFAULT FALSE,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX instances_node ON instances(node);
CREATE INDEX instances_env ON instances(app, env);

CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    private_addr TEXT NOT NULL,
    ingress BOOLEAN NOT NULL,
    last_seen TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready',
    generation BIGINT NOT NULL DEFAULT 1,
    millicpus BIGINT NOT NULL DEFAULT 0,
    memory_bytes BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE deploy_events (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    version BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, env, version, seq),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    release BIGINT NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    command JSONB NOT NULL,
    status TEXT NOT NULL,
    exit_code BIGINT,
    error TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    attach_tty BOOLEAN,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX jobs_pending ON jobs(node, status);

CREATE TABLE job_output (
    id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (id, seq)
);

CREATE TABLE databases (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    version BIGINT NOT NULL,
    node TEXT NOT NULL,
    password BYTEA NOT NULL,
    max_connections BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    replicas BIGINT NOT NULL DEFAULT 0,
    replica_node TEXT NOT NULL DEFAULT '',
    backup_schedule TEXT NOT NULL DEFAULT '0 3 * * *',
    keep_count BIGINT NOT NULL DEFAULT 7,
    keep_days BIGINT NOT NULL DEFAULT 30,
    last_scheduled_at BIGINT NOT NULL DEFAULT 0,
    host_port BIGINT NOT NULL DEFAULT 0,
    superuser_password BYTEA NOT NULL DEFAULT '',
    replication_password BYTEA NOT NULL DEFAULT '',
    PRIMARY KEY (app, env),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);

CREATE TABLE backups (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    trigger TEXT NOT NULL,
    source TEXT NOT NULL,
    node TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    size_bytes BIGINT,
    sha256 TEXT,
    tables JSONB NOT NULL DEFAULT '{}',
    locations JSONB NOT NULL DEFAULT '[]',
    started_at TEXT NOT NULL,
    finished_at TEXT,
    verify_status TEXT NOT NULL DEFAULT 'pending',
    verify_error TEXT,
    verified_at TEXT,
    created_unix BIGINT NOT NULL
);
CREATE INDEX backups_env ON backups (app, env, created_unix);

CREATE TABLE db_tasks (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    node TEXT NOT NULL,
    role TEXT NOT NULL,
    backup TEXT NOT NULL DEFAULT '',
    params JSONB NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    error TEXT,
    result JSONB NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX db_tasks_node ON db_tasks (node, status);

CREATE TABLE events (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at TEXT NOT NULL,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    actor TEXT,
    addr TEXT,
    outcome TEXT,
    process TEXT,
    replica BIGINT,
    release BIGINT
);
CREATE INDEX events_actor ON events (actor, id);
CREATE INDEX events_replica ON events (app, env, process, replica, release, id);

CREATE TABLE env_subnets (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    subnet TEXT NOT NULL UNIQUE,
    PRIMARY KEY (app, env),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    totp_secret TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE grants (
    "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    app TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY ("user", app)
);

CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    addr TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE TABLE join_tokens (
    hash TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at TEXT,
    used_by TEXT
);

CREATE TABLE node_certs (
    fingerprint TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX node_certs_node ON node_certs(node);

CREATE TABLE drains (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    env TEXT,
    url TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    position BIGINT NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    dropped BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at TEXT,
    last_success_at TEXT,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX drains_by_app ON drains (app);

CREATE TABLE domains (
    domain TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    env TEXT NOT NULL,
    tls TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    cert_error TEXT,
    cert_error_at TEXT,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX domains_by_env ON domains (app, env);

CREATE TABLE certificates (
    host TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    chain_pem TEXT NOT NULL,
    key_sealed TEXT NOT NULL,
    not_after BIGINT NOT NULL,
    issuer TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE alert_rules (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    metric TEXT NOT NULL,
    op TEXT NOT NULL,
    threshold DOUBLE PRECISION NOT NULL,
    for_secs BIGINT NOT NULL,
    app TEXT,
    env TEXT,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    silenced_until TEXT,
    description TEXT NOT NULL,
    builtin BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE alerts (
    rule TEXT NOT NULL REFERENCES alert_rules(id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    app TEXT,
    env TEXT,
    state TEXT NOT NULL,
    since TEXT NOT NULL,
    resolved_at TEXT,
    value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (rule, subject)
);

CREATE TABLE notify_targets (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    secret TEXT,
    app TEXT REFERENCES apps(name) ON DELETE CASCADE,
    deploys BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL
);

-- The built-in alert rules (0021): edited, never removed.
INSERT INTO alert_rules (id, kind, metric, op, threshold, for_secs, description, builtin) VALUES
    ('node-cpu', 'metric', 'node_cpu_percent', '>', 80, 300, 'a node''s CPU is busy', TRUE),
    ('node-memory', 'metric', 'node_memory_percent', '>', 80, 300, 'a node''s memory is nearly all in use', TRUE),
    ('node-disk', 'metric', 'node_disk_percent', '>', 80, 300, 'a node''s disk is filling up', TRUE),
    ('node-silent', 'silent', 'node_last_sample_seconds', '>', 60, 0, 'a node stopped reporting', TRUE),
    ('app-5xx', 'metric', 'http_5xx_percent', '>', 5, 300, 'an app answers with server errors', TRUE),
    ('crash-loop', 'increase', 'container_restarts', '>', 1, 600, 'a process keeps crashing', TRUE),
    ('replica-lag', 'metric', 'db_replica_lag_bytes', '>', 16777216, 300, 'a database replica falls behind', TRUE),
    ('db-connections', 'metric', 'db_connections_percent', '>', 80, 300, 'a database is running out of connections', TRUE),
    ('deploy-failed', 'event', 'deploy_failed', '>', 0, 0, 'the newest deploy of an environment failed', TRUE),
    ('restore-failed', 'event', 'restore_drill_failed', '>', 0, 0, 'the newest restore drill of a backup failed', TRUE),
    ('backup-overdue', 'state', 'backup_overdue_hours', '>', 1, 0, 'a database has no backup as new as its schedule asks', TRUE),
    ('cert-expiring', 'state', 'certificate_days_left', '<', 14, 0, 'a certificate ends soon and was not renewed', TRUE);
