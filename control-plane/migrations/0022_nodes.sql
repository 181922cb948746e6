-- Several nodes: a node's state and assignment generation (fencing), what it offers to
-- reservations, and each replica's reservation and whether the ingresses still route to it.
ALTER TABLE nodes ADD COLUMN state TEXT NOT NULL DEFAULT 'ready'; -- ready | draining | lost
ALTER TABLE nodes ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;
ALTER TABLE nodes ADD COLUMN millicpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN reserve_millicpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN reserve_memory_bytes INTEGER NOT NULL DEFAULT 0;
-- Set on a replica being moved off a node once its replacement is healthy: it leaves the route
-- table (and the ingresses confirm that) before it is unassigned and drains.
ALTER TABLE instances ADD COLUMN unrouted INTEGER NOT NULL DEFAULT 0;
