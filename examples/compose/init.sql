-- Runs once, as the postgres superuser, when the compose stack's database is first created
-- (/docker-entrypoint-initdb.d). Three roles, least privilege:
--   app_owner  owns the application's tables; runs `sidekick install` and `sidekick triggers --apply`
--   app        the application: reads and writes its own tables, nothing in schema sidekick
--   sidekick   the bridge: DML on pg-sidekick's own tables only (see docs/operations.md)
-- Passwords are for this local demo only.
CREATE ROLE app_owner LOGIN PASSWORD 'app_owner';
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE ROLE sidekick LOGIN PASSWORD 'sidekick';

-- The database belongs to app_owner, so app_owner owns schema public (PostgreSQL 15) and may create
-- the sidekick schema.
ALTER DATABASE app OWNER TO app_owner;
REVOKE ALL ON DATABASE app FROM PUBLIC;
GRANT CONNECT ON DATABASE app TO app, sidekick;

SET ROLE app_owner;

CREATE TABLE public.orders (
  id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer   text NOT NULL,
  status     text NOT NULL DEFAULT 'new',
  total      numeric(12, 2) NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT USAGE ON SCHEMA public TO app;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.orders TO app;

-- The bridge's grants, given before `sidekick install` creates the tables: the schema is created
-- here, owned by app_owner (install reuses it), and default privileges cover every table and
-- sequence app_owner creates in it now and in later upgrades.
CREATE SCHEMA sidekick;
GRANT USAGE ON SCHEMA sidekick TO sidekick;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA sidekick
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sidekick;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA sidekick
  GRANT USAGE, SELECT ON SEQUENCES TO sidekick;

RESET ROLE;
