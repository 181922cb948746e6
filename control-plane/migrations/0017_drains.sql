-- Log drains: an app's (or one environment's) central log lines sent on to a syslog server or
-- an HTTPS endpoint. The URL may hold credentials, so it is sealed like config values. A drain
-- goes with its app or environment. `position` is the highest logs.db line id delivered (or
-- skipped).
CREATE TABLE drains (
    id TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    env TEXT,                       -- NULL: every environment of the app
    url TEXT NOT NULL,              -- sealed (hex)
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    position INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at TEXT,
    last_success_at TEXT,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX drains_by_app ON drains (app);
