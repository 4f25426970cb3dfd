-- pgsidekick's pgcron.sql, on pg-sidekick's scheduler.
--
-- Provides the seed's table interface, `scheduled_events (id, run_at, period, run_action)`, in the
-- current schema (the first of search_path; `sidekick install --pgcron` uses public unless told
-- otherwise). Insert a row and run_action runs at about run_at, then every `period` if that is not
-- null; a row without a period is deleted once it ran, as in the seed:
--
--   insert into scheduled_events (run_at, period, run_action)
--       values (current_timestamp, '20 minutes',
--               $$delete from spool where expires < current_timestamp$$);
--
-- scheduled_events is a view on sidekick.schedules (origin 'pgcron'), so the bridge's scheduler runs
-- these events like any schedule: nearest first, durable across restarts, claimed once across several
-- bridges, with a backlog caught up by the missed-run policy 'all' (at most 1000 occurrences, the most
-- recent) in a loop rather than the seed's recursion. Unlike the seed, nothing runs inside the
-- inserting transaction: the bridge runs due events moments after the commit, as its own role.
-- Anyone who may insert into scheduled_events can run SQL as the bridge's role: grant it with care.
--
-- Applying this again is harmless. A scheduled_events *table* left by the seed is migrated: its
-- events move into sidekick.schedules, then the table and its trigger function are dropped.

SELECT pg_advisory_xact_lock(hashtext('pg-sidekick:migrate'));

DO $migrate$
DECLARE
  old regclass := to_regclass(format('%I.scheduled_events', current_schema()));
  moved bigint;
BEGIN
  IF old IS NOT NULL AND (SELECT relkind FROM pg_class WHERE oid = old) = 'r' THEN
    EXECUTE format($sql$
      INSERT INTO sidekick.schedules (run_at, every, starts_at, sql, origin, missed, missed_cap, time_zone)
      SELECT CASE WHEN period > interval '0' THEN NULL ELSE run_at END,
             CASE WHEN period > interval '0' THEN period END,
             CASE WHEN period > interval '0' THEN run_at END,
             run_action, 'pgcron', 'all', 1000, current_setting('TimeZone')
        FROM %s ORDER BY run_at$sql$, old);
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE format('DROP TABLE %s', old);
    EXECUTE format('DROP FUNCTION IF EXISTS %I.events_changed()', current_schema());
    RAISE NOTICE 'pgcron: moved % event(s) from the table %.scheduled_events into sidekick.schedules', moved, current_schema();
  END IF;
END
$migrate$;

CREATE OR REPLACE VIEW scheduled_events AS
  SELECT id, coalesce(due_at, run_at, starts_at) AS run_at, every AS period, sql AS run_action
    FROM sidekick.schedules
   WHERE origin = 'pgcron';
COMMENT ON VIEW scheduled_events IS 'pgcron.sql compatibility: insert (run_at, period, run_action); runs on pg-sidekick''s scheduler.';

-- Writes go to sidekick.schedules with the view owner's rights (application roles have none on the
-- sidekick schema); what may write here is decided by the grants on the view.
CREATE OR REPLACE FUNCTION scheduled_events_write() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  new_id bigint;
BEGIN
  IF TG_OP = 'DELETE' THEN
    DELETE FROM sidekick.schedules WHERE id = OLD.id AND origin = 'pgcron';
    RETURN OLD;
  END IF;
  IF NEW.run_at IS NULL THEN
    RAISE EXCEPTION 'null value in column "run_at" of relation "scheduled_events" violates not-null constraint'
      USING ERRCODE = 'not_null_violation';
  END IF;
  IF NEW.run_action IS NULL THEN
    RAISE EXCEPTION 'null value in column "run_action" of relation "scheduled_events" violates not-null constraint'
      USING ERRCODE = 'not_null_violation';
  END IF;
  IF TG_OP = 'INSERT' THEN
    -- Calendar periods ('1 day', '1 month') follow the inserting session's time zone, as they did
    -- when the seed added them in SQL.
    INSERT INTO sidekick.schedules (run_at, every, starts_at, sql, origin, missed, missed_cap, time_zone)
    VALUES (CASE WHEN NEW.period IS NULL THEN NEW.run_at END, NEW.period,
            CASE WHEN NEW.period IS NOT NULL THEN NEW.run_at END,
            NEW.run_action, 'pgcron', 'all', 1000, current_setting('TimeZone'))
    RETURNING id INTO new_id;
    NEW.id := new_id;
    RETURN NEW;
  END IF;
  UPDATE sidekick.schedules
     SET run_at = CASE WHEN NEW.period IS NULL THEN NEW.run_at END,
         every = NEW.period,
         starts_at = CASE WHEN NEW.period IS NOT NULL THEN NEW.run_at END,
         sql = NEW.run_action
   WHERE id = OLD.id AND origin = 'pgcron';
  RETURN NEW;
END
$fn$;

DROP TRIGGER IF EXISTS scheduled_events_write ON scheduled_events;
CREATE TRIGGER scheduled_events_write INSTEAD OF INSERT OR UPDATE OR DELETE ON scheduled_events
  FOR EACH ROW EXECUTE FUNCTION scheduled_events_write();

-- The seed's run_events() ran due events and returned the seconds until the next one. Events now run
-- in the bridge; this wakes its scheduler and returns the seconds until the nearest pgcron event.
CREATE OR REPLACE FUNCTION run_events() RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  delta integer;
BEGIN
  PERFORM pg_notify('sidekick_schedules', '');
  SELECT ceil(extract(epoch FROM min(next_run_at) - clock_timestamp()))::integer INTO delta
    FROM sidekick.schedules WHERE origin = 'pgcron' AND enabled;
  RETURN delta;
END
$fn$;
