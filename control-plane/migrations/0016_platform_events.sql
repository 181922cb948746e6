-- Platform events about one replica (a crash, a health change) or one release (a deploy) say
-- which: the central log shows them with their process, replica and release.
ALTER TABLE events ADD COLUMN process TEXT;
ALTER TABLE events ADD COLUMN replica INTEGER;
ALTER TABLE events ADD COLUMN release INTEGER;
-- A replica's latest crash or health event, looked up when the next one may be collapsed.
CREATE INDEX IF NOT EXISTS events_replica ON events (app, env, process, replica, release, id);
