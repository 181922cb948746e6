-- Releases carry their manifest (processes, health checks, deploy settings) and a description
-- of what changed; environments keep their formation (replicas per process, set by `scale`);
-- deploy events get a timestamp for the deploy timeline.
ALTER TABLE releases ADD COLUMN manifest TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE envs ADD COLUMN formation TEXT NOT NULL DEFAULT '{}';
ALTER TABLE deploy_events ADD COLUMN at TEXT NOT NULL DEFAULT '';
