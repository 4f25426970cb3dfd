-- pg-sidekick's own schema. Everything pg-sidekick creates lives in it (triggers on application
-- tables excepted: `sidekick uninstall` drops those too). Application roles get no privilege on it.
CREATE SCHEMA IF NOT EXISTS sidekick;
REVOKE ALL ON SCHEMA sidekick FROM PUBLIC;
COMMENT ON SCHEMA sidekick IS 'pg-sidekick: outbox, dead letters, schedules. Managed by `sidekick install`.';
