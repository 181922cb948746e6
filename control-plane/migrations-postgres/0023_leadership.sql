-- Which control plane leads: runs the loops that must run once (deploy recovery, schedules,
-- node-loss detection, alerts, drains, certificates). One row; `term` rises at each election and
-- the leader's writes check it, so a server that lost the lead writes nothing more. The leader
-- also holds a session advisory lock (see store/leader.rs): its connection's end frees it.
CREATE TABLE leadership (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    term BIGINT NOT NULL,
    holder TEXT NOT NULL,
    api_url TEXT NOT NULL,
    elected_at TEXT NOT NULL
);

-- Keys and tokens every control plane sharing the database must hold alike (the agents' CA, the
-- key sealing config, the local CA, the bootstrap tokens): copied between here and each server's
-- data directory at start. Only PostgreSQL stores use it.
CREATE TABLE shared_files (
    name TEXT PRIMARY KEY,
    content BYTEA NOT NULL,
    created_at TEXT NOT NULL
);
