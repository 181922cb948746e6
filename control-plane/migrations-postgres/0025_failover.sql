-- Failover: the volume each server runs on (empty: the one named after its container, as
-- before), so the replica's volume can become the primary's; and `fenced`, set while a
-- switchover has stopped the primary and its replica has not yet taken over.
ALTER TABLE databases ADD COLUMN primary_volume TEXT NOT NULL DEFAULT '';
ALTER TABLE databases ADD COLUMN replica_volume TEXT NOT NULL DEFAULT '';
ALTER TABLE databases ADD COLUMN fenced BOOLEAN NOT NULL DEFAULT FALSE;
