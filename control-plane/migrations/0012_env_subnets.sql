-- Each environment's Docker network gets a small subnet from the platform's pool
-- (`--network-pool`), allocated here so it survives restarts and is the same on every node, and
-- freed (the row goes, by cascade) with its environment. Docker's default address pools hold
-- only ~30 networks per engine. Environments made before this have no row: their networks keep
-- whatever Docker gave them.
CREATE TABLE IF NOT EXISTS env_subnets (
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    subnet TEXT NOT NULL UNIQUE,    -- CIDR, e.g. 10.123.0.64/26
    PRIMARY KEY (app, env),
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
