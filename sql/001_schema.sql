-- pg-sidekick's own schema. Everything pg-sidekick creates lives in it (triggers on application
-- tables excepted: `sidekick uninstall` drops those too). Application roles get no privilege on it.
-- Created only when missing: CREATE SCHEMA IF NOT EXISTS would need the database's CREATE privilege
-- even for a schema an administrator already made for (and gave to) the installing role.
DO $$ BEGIN
  IF to_regnamespace('sidekick') IS NULL THEN CREATE SCHEMA sidekick; END IF;
END $$;
REVOKE ALL ON SCHEMA sidekick FROM PUBLIC;
COMMENT ON SCHEMA sidekick IS 'pg-sidekick: outbox, dead letters, schedules. Managed by `sidekick install`.';
