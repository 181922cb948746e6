-- Config vars: one sealed (encrypted) JSON map per environment, and a sealed snapshot per
-- release, so a rollback brings back the values it ran with. Releases also keep the raw
-- paas.toml, so a promotion can apply the target environment's overrides.
ALTER TABLE envs ADD COLUMN config BLOB NOT NULL DEFAULT x'';
ALTER TABLE releases ADD COLUMN config BLOB NOT NULL DEFAULT x'';
ALTER TABLE releases ADD COLUMN config_keys TEXT NOT NULL DEFAULT '[]';
ALTER TABLE releases ADD COLUMN manifest_text TEXT NOT NULL DEFAULT '';
