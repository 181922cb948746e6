-- Per-node agent credentials. The shared agent token becomes the join token: it only registers
-- new nodes, each of which gets its own credential; only its sha256 is kept, with the node it
-- belongs to. A node registered before this has no credential until its agent next registers
-- with the join token, which claims the name once.
UPDATE tokens SET kind = 'join' WHERE kind = 'agent';
CREATE TABLE IF NOT EXISTS node_credentials (
    node TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,      -- sha256 of the credential
    created_at TEXT NOT NULL
);
