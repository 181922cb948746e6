-- One-off containers: release phases and `paas run`. A job is assigned to a node while
-- pending; its output and exit code come back from the agent.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    release INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,             -- 'release' or 'run'
    command TEXT NOT NULL,          -- JSON argv
    status TEXT NOT NULL,           -- 'pending' or 'done'
    exit_code INTEGER,
    error TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX jobs_pending ON jobs(node, status);

CREATE TABLE job_output (
    id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (id, seq)
);
