-- Managed PostgreSQL per environment: where its primary runs and its generated credentials
-- (the password sealed like config vars).
CREATE TABLE databases (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    version INTEGER NOT NULL,
    node TEXT NOT NULL,
    password BLOB NOT NULL,
    max_connections INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (app, env),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
