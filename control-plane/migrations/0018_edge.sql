-- The edge. Custom domains: each is served like its environment's generated hostname and goes
-- with it. Certificates: one per host name the ingress serves over HTTPS, made by the local CA
-- (`local`), uploaded with the domain (`uploaded`) or obtained over ACME (`acme`); the key is
-- sealed like config values. A certificate whose host is no longer served is deleted by the
-- certificate loop, whatever made it.
CREATE TABLE domains (
    domain TEXT PRIMARY KEY,
    app TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    env TEXT NOT NULL,
    tls TEXT NOT NULL,              -- local | uploaded | acme
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    cert_error TEXT,                -- why the last ACME attempt failed; NULL once one succeeds
    cert_error_at TEXT,
    FOREIGN KEY (app, env) REFERENCES envs(app, name) ON DELETE CASCADE
);
CREATE INDEX domains_by_env ON domains (app, env);

CREATE TABLE certificates (
    host TEXT PRIMARY KEY,
    source TEXT NOT NULL,           -- local | uploaded | acme
    chain_pem TEXT NOT NULL,
    key_sealed TEXT NOT NULL,       -- sealed (hex)
    not_after INTEGER NOT NULL,     -- unix seconds
    issuer TEXT NOT NULL,           -- sha256 of the local CA that made it; '' for the others
    updated_at TEXT NOT NULL
);

-- `paas envs swap`: an environment serves the generated hostname of `host_env` (NULL: its own).
-- Swapping two environments sets each to the other's and moves their custom domains along.
ALTER TABLE envs ADD COLUMN host_env TEXT;
