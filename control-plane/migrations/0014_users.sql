-- Users, their roles, named API tokens, console sessions and the audit log.
-- A user signs in with a password (argon2id hash; NULL for a user who uses tokens only) and an
-- optional second factor (TOTP secret, encrypted with the platform's secret key).
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    totp_secret TEXT,
    created_at TEXT NOT NULL
);
-- A role on one app, or on every app ('*'). 'admin' on '*' also manages users and nodes.
CREATE TABLE IF NOT EXISTS grants (
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    app TEXT NOT NULL,
    role TEXT NOT NULL,             -- viewer | deployer | admin
    PRIMARY KEY (user, app)
);
-- The bootstrap admin (the owner of the admin token made at first start) is made at every
-- start if missing, by `access::bootstrap`.

-- Tokens get a public id (to list and revoke them by), a name and an optional expiry.
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN name TEXT;
ALTER TABLE tokens ADD COLUMN expires_at TEXT;
-- Each user's newest token is the bootstrap one; older ones (an earlier release made a new admin
-- token whenever its file was missing, keeping the old) get names of their own.
UPDATE tokens SET id = substr(hash, 1, 12), name = 'legacy-' || substr(hash, 1, 12) WHERE kind = 'user';
UPDATE tokens SET name = 'bootstrap' WHERE kind = 'user' AND hash IN (
    SELECT hash FROM (SELECT hash, ROW_NUMBER() OVER (PARTITION BY user ORDER BY created_at DESC, hash) AS n
                      FROM tokens WHERE kind = 'user') WHERE n = 1);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_id ON tokens (id);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_user_name ON tokens (user, name) WHERE kind = 'user';

-- Console sessions: their own random ids (only the sha256 is kept), never an API token.
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    addr TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- One events table serves platform events, `paas events` and the audit log: a change made by a
-- user carries who (actor), from where (addr) and how it ended (outcome).
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN addr TEXT;
ALTER TABLE events ADD COLUMN outcome TEXT;
CREATE INDEX IF NOT EXISTS events_actor ON events (actor, id);
