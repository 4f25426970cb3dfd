-- The scheduler: durable schedules (one-shot, interval, cron) and their run history.
--
-- Rows come from `sidekick schedule add`, from the `later` sink (pglater-style notifications, one-shot
-- rows), from the pgcron compatibility view, or from plain SQL inserts: the defaults, check constraints
-- and the planning trigger below make a bare insert a complete schedule. The bridge's scheduler loop
-- claims due rows with FOR UPDATE SKIP LOCKED and runs each occurrence in the same transaction that
-- records it, so several bridges never run one occurrence twice.

CREATE TABLE sidekick.schedules (
  id                bigserial PRIMARY KEY,
  -- Optional; the CLI addresses schedules by name (or id). One-shot jobs usually have none.
  name              text UNIQUE CHECK (name <> ''),
  -- Exactly one of: a one-shot time, a fixed interval (first run at starts_at, default now), a cron
  -- expression (5 fields, or 6 with seconds first) read in time_zone.
  run_at            timestamptz,
  every             interval CHECK (every > interval '0'),
  cron              text CHECK (btrim(cron) <> ''),
  time_zone         text NOT NULL DEFAULT 'UTC',
  starts_at         timestamptz,
  -- Exactly one action: SQL run as the bridge's role, or an event published to a channel with
  -- sidekick.publish(channel, payload, key) (default payload: {"schedule": name or id, "due_at": …}).
  sql               text CHECK (btrim(sql) <> ''),
  channel           text CHECK (channel <> ''),
  payload           jsonb,
  key               text,
  -- Run the SQL with the extended protocol, which refuses several statements in one string (set for
  -- jobs that passed an allow-list, so "select allowed(); drop table t" cannot ride along).
  single_statement  boolean NOT NULL DEFAULT false,
  -- Occurrences that could not run on time (no scheduler was up, or it was far behind): skip them,
  -- run once for all of them, or run all of them (at most missed_cap, the most recent ones).
  missed            text NOT NULL DEFAULT 'once' CHECK (missed IN ('skip', 'once', 'all')),
  missed_cap        integer NOT NULL DEFAULT 100 CHECK (missed_cap >= 1),
  -- Occurrences that came due while the previous run was still going: skip them, or run them after.
  overlap           text NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'queue')),
  statement_timeout interval CHECK (statement_timeout > interval '0'),
  -- Runs per occurrence before it counts as failed; a failed attempt is retried after retry_delay.
  max_attempts      integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
  retry_delay       interval NOT NULL DEFAULT '10 seconds' CHECK (retry_delay >= interval '0'),
  enabled           boolean NOT NULL DEFAULT true,
  -- Who made it: sql | cli | later | pgcron | run-now.
  origin            text NOT NULL DEFAULT 'sql',
  -- For run-now copies: the schedule whose history the run belongs to.
  parent_id         bigint,
  -- The plan, kept by the scheduler: the occurrence to run next (with id, the occurrence key) and
  -- when to run it (later than due_at while retrying). NULL next_run_at on an enabled cron row means
  -- "not planned yet": the scheduler computes it (PostgreSQL cannot parse cron).
  due_at            timestamptz,
  next_run_at       timestamptz,
  attempt           integer NOT NULL DEFAULT 0,
  last_run_at       timestamptz,
  last_outcome      text,
  last_error        text,
  created_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT schedules_one_timing CHECK (num_nonnulls(run_at, every, cron) = 1),
  CONSTRAINT schedules_one_action CHECK (num_nonnulls(sql, channel) = 1),
  CONSTRAINT schedules_event_fields CHECK (channel IS NOT NULL OR (payload IS NULL AND key IS NULL)),
  CONSTRAINT schedules_starts_at CHECK (starts_at IS NULL OR run_at IS NULL)
);
COMMENT ON TABLE sidekick.schedules IS 'pg-sidekick schedules: one-shot (run_at), interval (every) or cron; action sql or channel (event). See docs/scheduling.md.';

-- The claim ("due now, nearest first") and the loop's "when is the next one due" read this index.
CREATE INDEX schedules_next_run ON sidekick.schedules (next_run_at, id) WHERE enabled;
CREATE INDEX schedules_unplanned ON sidekick.schedules (id) WHERE enabled AND next_run_at IS NULL;

-- Fills the plan of a new row (and of a row whose timing changed): one-shot → run_at, interval →
-- starts_at or now. Times are kept to the millisecond so that the occurrence key survives a round
-- trip through the scheduler.
CREATE FUNCTION sidekick.schedules_plan() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF (NEW.run_at, NEW.every, NEW.cron, NEW.time_zone, NEW.starts_at)
       IS NOT DISTINCT FROM (OLD.run_at, OLD.every, OLD.cron, OLD.time_zone, OLD.starts_at) THEN
      RETURN NEW;
    END IF;
    NEW.due_at := NULL;
    NEW.next_run_at := NULL;
    NEW.attempt := 0;
  END IF;
  IF TG_OP = 'INSERT' OR NEW.time_zone IS DISTINCT FROM OLD.time_zone THEN
    -- Raises "time zone ... not recognized" for a bad name.
    PERFORM now() AT TIME ZONE NEW.time_zone;
  END IF;
  IF NEW.due_at IS NULL THEN
    IF NEW.run_at IS NOT NULL THEN
      NEW.due_at := NEW.run_at;
    ELSIF NEW.every IS NOT NULL THEN
      NEW.due_at := coalesce(NEW.starts_at, now());
    END IF;
  END IF;
  NEW.due_at := date_trunc('milliseconds', NEW.due_at);
  NEW.next_run_at := date_trunc('milliseconds', coalesce(NEW.next_run_at, NEW.due_at));
  RETURN NEW;
END
$$;
CREATE TRIGGER schedules_plan BEFORE INSERT OR UPDATE ON sidekick.schedules
  FOR EACH ROW EXECUTE FUNCTION sidekick.schedules_plan();

-- Wakes sleeping schedulers early (a constant payload: NOTIFY merges duplicates, and it is only a
-- hint; schedulers also poll). The scheduler's own bookkeeping sets sidekick.scheduler=on to stay quiet.
CREATE FUNCTION sidekick.schedules_wake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('sidekick.scheduler', true), '') <> 'on' THEN
    PERFORM pg_notify('sidekick_schedules', '');
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER schedules_wake AFTER INSERT OR UPDATE ON sidekick.schedules
  FOR EACH STATEMENT EXECUTE FUNCTION sidekick.schedules_wake();

-- One row per occurrence run (or skipped). (schedule_id, due_at) is the occurrence key: a second
-- attempt to record the same occurrence as run fails, and rolls back that run's effects with it.
CREATE TABLE sidekick.schedule_runs (
  id          bigserial PRIMARY KEY,
  schedule_id bigint NOT NULL,
  name        text,
  due_at      timestamptz NOT NULL,
  started_at  timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  duration    interval GENERATED ALWAYS AS (finished_at - started_at) STORED,
  outcome     text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'skipped', 'running')),
  attempts    integer NOT NULL DEFAULT 1,
  error       text,
  CONSTRAINT schedule_runs_occurrence UNIQUE (schedule_id, due_at)
);
COMMENT ON TABLE sidekick.schedule_runs IS 'pg-sidekick run history (kept for scheduler.history.retention).';
CREATE INDEX schedule_runs_started ON sidekick.schedule_runs (started_at);
