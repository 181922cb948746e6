-- Docker names: environments created from now on name their Docker objects with `--` between
-- app, environment and process (`paas-<app>--<env>--web-1-1`), which no two environments can
-- share. Environments that already exist keep the old names (`paas-<app>-<env>-web-1-1`) so
-- their running containers and database volumes carry on, unless another environment's old
-- names are the same (app `shop` env `eu-production` and app `shop-eu`): those already
-- collided, and switch to the new names.
ALTER TABLE envs ADD COLUMN legacy_names INTEGER NOT NULL DEFAULT 0;
UPDATE envs SET legacy_names = 1
WHERE NOT EXISTS (
    SELECT 1 FROM envs AS other
    WHERE other.app || '-' || other.name = envs.app || '-' || envs.name
      AND NOT (other.app = envs.app AND other.name = envs.name)
);
