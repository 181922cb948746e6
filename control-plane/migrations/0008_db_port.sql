-- The primary's published port on its node, kept once Docker first picked it, so a recreated
-- primary comes back on the same address and replicas on other nodes keep following it.
ALTER TABLE databases ADD COLUMN host_port INTEGER NOT NULL DEFAULT 0;
