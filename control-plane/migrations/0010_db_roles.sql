-- PostgreSQL roles of their own: the superuser's and the replicator's passwords (sealed like
-- the app's), no longer the app's. Empty for databases from before; the control plane fills
-- them at start and the agents move the running servers over.
ALTER TABLE databases ADD COLUMN superuser_password BLOB NOT NULL DEFAULT x'';
ALTER TABLE databases ADD COLUMN replication_password BLOB NOT NULL DEFAULT x'';
