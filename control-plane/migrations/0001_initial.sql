-- Initial schema: apps and their environments, immutable releases, the containers the scheduler
-- placed on nodes (with what the agents last reported), nodes, API tokens, deploy progress.
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,          -- sha256 of the token; the token itself is never stored here
    user TEXT NOT NULL,
    kind TEXT NOT NULL,             -- 'user' or 'agent'
    created_at TEXT NOT NULL
);

CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE envs (
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    replicas INTEGER NOT NULL DEFAULT 1,
    port INTEGER NOT NULL DEFAULT 8080,
    current_release INTEGER,        -- intent: the release the ingress routes to
    target_release INTEGER,         -- intent: a release being rolled out
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, name)
);

CREATE TABLE releases (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,           -- 'build' or the image reference deployed
    image_id TEXT,
    build_node TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (app, env, version),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);

CREATE TABLE instances (
    name TEXT PRIMARY KEY,          -- container name
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    process TEXT NOT NULL,
    release INTEGER NOT NULL,
    replica INTEGER NOT NULL,
    node TEXT NOT NULL,
    -- observed, as last reported by the node's agent:
    state TEXT NOT NULL DEFAULT 'pending',
    healthy INTEGER NOT NULL DEFAULT 0,
    host_port INTEGER,
    restarts INTEGER NOT NULL DEFAULT 0,
    log_tail TEXT NOT NULL DEFAULT '[]',
    updated_at TEXT NOT NULL,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX instances_node ON instances(node);
CREATE INDEX instances_env ON instances(app, env);

CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    private_addr TEXT NOT NULL,
    ingress INTEGER NOT NULL,
    last_seen TEXT NOT NULL
);

CREATE TABLE deploy_events (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (app, env, version, seq),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
