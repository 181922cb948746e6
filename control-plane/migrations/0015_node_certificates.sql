-- Node identity by mutual TLS. Join tokens become one-time and short-lived: only the sha256 of
-- their secret is kept, with an expiry, and the join that uses one burns it. Nodes are known by
-- their certificates (the sha256 of each one's DER), which the control plane's CA signs for a
-- key the node made; a node may hold its current and its renewed certificate at once.
-- The long-lived join token and the bearer node credentials of 0011 end here: a node registered
-- before this has no certificate until its agent joins again with a fresh join token, which may
-- claim the name once (as 0011 allowed).
CREATE TABLE join_tokens (
    hash TEXT PRIMARY KEY,          -- sha256 of the token's secret
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL,    -- unix seconds
    used_at TEXT,
    used_by TEXT                    -- the node that joined with it
);
CREATE TABLE node_certs (
    fingerprint TEXT PRIMARY KEY,   -- sha256 of the certificate's DER
    node TEXT NOT NULL,
    not_after INTEGER NOT NULL,     -- unix seconds
    created_at TEXT NOT NULL
);
CREATE INDEX node_certs_node ON node_certs(node);
DELETE FROM tokens WHERE kind = 'join';
DROP TABLE node_credentials;
