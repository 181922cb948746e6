-- Maintenance mode per environment (`paas maintenance on|off`): while set, the ingress answers
-- every request for the environment's hostnames and custom domains with a 503 page itself.
ALTER TABLE envs ADD COLUMN maintenance INTEGER NOT NULL DEFAULT 0;
