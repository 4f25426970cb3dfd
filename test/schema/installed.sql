CREATE SCHEMA sidekick;

COMMENT ON SCHEMA sidekick IS 'pg-sidekick: outbox, dead letters, schedules. Managed by `sidekick install`.';

CREATE FUNCTION sidekick.arm_wakeup() RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
  LOCK TABLE sidekick.outbox, sidekick.row_changes IN SHARE MODE NOWAIT;
  PERFORM setval('sidekick.outbox_id_seq', (s.last_value / 1024 + 1) * 1024)
  FROM sidekick.outbox_id_seq AS s
  WHERE s.is_called AND s.last_value % 1024 <> 0;
  RETURN true;
EXCEPTION WHEN lock_not_available THEN
  RETURN false;
END
$$;

COMMENT ON FUNCTION sidekick.arm_wakeup() IS 'pg-sidekick: the drain sets the wake-up mark before it sleeps.';

CREATE FUNCTION sidekick.publish(channel text, payload jsonb, key text DEFAULT NULL::text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
  v_id bigint;
BEGIN
  IF publish.channel IS NULL OR publish.channel = '' THEN
    RAISE EXCEPTION 'sidekick.publish: channel must not be empty' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Take the transaction id before the outbox id (the drain's scan bound relies on it).
  PERFORM pg_current_xact_id();
  INSERT INTO sidekick.outbox (source, channel, key, payload)
  VALUES ('publish', publish.channel, publish.key, publish.payload)
  RETURNING id INTO v_id;
  IF v_id % 1024 < 8 THEN
    PERFORM pg_notify('sidekick', '');
  END IF;
  RETURN v_id;
END
$$;

COMMENT ON FUNCTION sidekick.publish(channel text, payload jsonb, key text) IS 'pg-sidekick: emit a durable event (delivered if the transaction commits). Needs USAGE on schema sidekick.';

CREATE FUNCTION sidekick.retry_dead_letters(ids bigint[]) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
  v_count bigint;
BEGIN
  PERFORM pg_current_xact_id();
  WITH gone AS (
    DELETE FROM sidekick.dead_letters d WHERE d.id = ANY (retry_dead_letters.ids) RETURNING d.*
  )
  INSERT INTO sidekick.outbox (xid, at, source, channel, op, schema_name, table_name, new, old, keys, key, payload, origin_id, origin_uid, target)
  SELECT coalesce(g.xid, pg_current_xact_id()), g.at, g.source, g.channel, g.op, g.schema_name, g.table_name, g.new, g.old,
         CASE WHEN g.source = 'table' THEN to_json(g.key) END,
         CASE WHEN g.source <> 'table' THEN g.key END, g.payload, g.event_id, g.event_uid, g.sink
  FROM gone g ORDER BY g.id;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  IF v_count > 0 THEN
    PERFORM pg_notify('sidekick', '');
  END IF;
  RETURN v_count;
END
$$;

CREATE FUNCTION sidekick.schedules_plan() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION sidekick.schedules_wake() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
  IF coalesce(current_setting('sidekick.scheduler', true), '') <> 'on' THEN
    PERFORM pg_notify('sidekick_schedules', '');
  END IF;
  RETURN NULL;
END
$$;

CREATE TABLE sidekick.backfills (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    where_sql text DEFAULT ''::text NOT NULL,
    key_columns text[] NOT NULL,
    last_key text[],
    rows_done bigint DEFAULT 0 NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    done_at timestamp with time zone
);

COMMENT ON TABLE sidekick.backfills IS 'pg-sidekick: progress of `sidekick backfill` per table (resumable).';

CREATE TABLE sidekick.dead_letters (
    id bigint NOT NULL,
    sink text NOT NULL,
    event_id bigint,
    event_uid text NOT NULL,
    failed_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer NOT NULL,
    error_code text NOT NULL,
    error text NOT NULL,
    xid xid8,
    at timestamp with time zone NOT NULL,
    source text NOT NULL,
    channel text NOT NULL,
    op text,
    schema_name text,
    table_name text,
    key text,
    new json,
    old json,
    payload json
);

COMMENT ON TABLE sidekick.dead_letters IS 'pg-sidekick: events a sink gave up on. See `sidekick dlq`.';

ALTER TABLE sidekick.dead_letters ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sidekick.dead_letters_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE sidekick.deliveries (
    seq bigint NOT NULL,
    sink text NOT NULL,
    part smallint NOT NULL,
    event_id bigint,
    event_uid text NOT NULL,
    queued_at timestamp with time zone DEFAULT now() NOT NULL,
    xid xid8 NOT NULL,
    at timestamp with time zone NOT NULL,
    source text NOT NULL,
    channel text NOT NULL,
    op text,
    schema_name text,
    table_name text,
    key text,
    new json,
    old json,
    payload json
)
WITH (autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='10000', autovacuum_vacuum_cost_delay='0');

COMMENT ON TABLE sidekick.deliveries IS 'pg-sidekick: per-sink backlog of events a sink has not acknowledged yet.';

ALTER TABLE sidekick.deliveries ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sidekick.deliveries_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE sidekick.outbox (
    id bigint NOT NULL,
    xid xid8 DEFAULT pg_current_xact_id() NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    source text DEFAULT 'table'::text NOT NULL,
    channel text,
    op text,
    schema_name text,
    table_name text,
    key_columns text[],
    event_ids bigint[],
    new json,
    old json,
    keys json,
    key text,
    payload json,
    origin_id bigint,
    target text,
    origin_uid text
)
WITH (autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='10000', autovacuum_vacuum_insert_scale_factor='0', autovacuum_vacuum_insert_threshold='100000', autovacuum_vacuum_cost_delay='0');

COMMENT ON TABLE sidekick.outbox IS 'pg-sidekick: events not yet handed to every sink: statements'' chunks, published events, dead-letter retries, backfills.';

CREATE TABLE sidekick.row_changes (
    id bigint NOT NULL,
    xid xid8 NOT NULL,
    at timestamp with time zone NOT NULL,
    capture text[] NOT NULL,
    new json,
    old json,
    keys json
)
WITH (autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='10000', autovacuum_vacuum_insert_scale_factor='0', autovacuum_vacuum_insert_threshold='100000', autovacuum_vacuum_cost_delay='0');

COMMENT ON TABLE sidekick.row_changes IS 'pg-sidekick: row changes not yet handed to every sink, one per row (capture triggers). The drain reads it with sidekick.outbox through sidekick.events.';

CREATE VIEW sidekick.events AS
 SELECT outbox.id,
    outbox.xid,
    outbox.at,
    outbox.source,
    outbox.channel,
    outbox.op,
    outbox.schema_name,
    outbox.table_name,
    outbox.key_columns,
    outbox.event_ids,
    outbox.new,
    outbox.old,
    outbox.keys,
    outbox.key,
    outbox.payload,
    outbox.origin_id,
    outbox.target,
    outbox.origin_uid
   FROM sidekick.outbox
UNION ALL
 SELECT row_changes.id,
    row_changes.xid,
    row_changes.at,
    'table'::text AS source,
    NULL::text AS channel,
    row_changes.capture[1] AS op,
    row_changes.capture[2] AS schema_name,
    row_changes.capture[3] AS table_name,
    row_changes.capture[4:] AS key_columns,
    NULL::bigint[] AS event_ids,
    row_changes.new,
    row_changes.old,
    row_changes.keys,
    NULL::text AS key,
    NULL::json AS payload,
    NULL::bigint AS origin_id,
    NULL::text AS target,
    NULL::text AS origin_uid
   FROM sidekick.row_changes;

COMMENT ON VIEW sidekick.events IS 'pg-sidekick: every event not yet handed to every sink (sidekick.outbox and sidekick.row_changes), in id order by the drain.';

CREATE TABLE sidekick.installation (
    singleton boolean DEFAULT true NOT NULL,
    id text DEFAULT substr(replace((gen_random_uuid())::text, '-'::text, ''::text), 1, 16) NOT NULL,
    created timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT installation_singleton_check CHECK (singleton)
);

COMMENT ON TABLE sidekick.installation IS 'pg-sidekick: this installation''s name, the first part of every durable event id.';

CREATE TABLE sidekick.migrations (
    id integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE sidekick.outbox ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME sidekick.outbox_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);

CREATE TABLE sidekick.schedule_runs (
    id bigint NOT NULL,
    schedule_id bigint NOT NULL,
    name text,
    due_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    duration interval GENERATED ALWAYS AS ((finished_at - started_at)) STORED,
    outcome text NOT NULL,
    attempts integer DEFAULT 1 NOT NULL,
    error text,
    CONSTRAINT schedule_runs_outcome_check CHECK ((outcome = ANY (ARRAY['succeeded'::text, 'failed'::text, 'skipped'::text, 'running'::text])))
);

COMMENT ON TABLE sidekick.schedule_runs IS 'pg-sidekick run history (kept for scheduler.history.retention).';

CREATE SEQUENCE sidekick.schedule_runs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE sidekick.schedule_runs_id_seq OWNED BY sidekick.schedule_runs.id;

CREATE TABLE sidekick.schedules (
    id bigint NOT NULL,
    name text,
    run_at timestamp with time zone,
    every interval,
    cron text,
    time_zone text DEFAULT 'UTC'::text NOT NULL,
    starts_at timestamp with time zone,
    sql text,
    channel text,
    payload jsonb,
    key text,
    single_statement boolean DEFAULT false NOT NULL,
    missed text DEFAULT 'once'::text NOT NULL,
    missed_cap integer DEFAULT 100 NOT NULL,
    overlap text DEFAULT 'skip'::text NOT NULL,
    statement_timeout interval,
    max_attempts integer DEFAULT 1 NOT NULL,
    retry_delay interval DEFAULT '00:00:10'::interval NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    origin text DEFAULT 'sql'::text NOT NULL,
    parent_id bigint,
    due_at timestamp with time zone,
    next_run_at timestamp with time zone,
    attempt integer DEFAULT 0 NOT NULL,
    last_run_at timestamp with time zone,
    last_outcome text,
    last_error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT schedules_channel_check CHECK ((channel <> ''::text)),
    CONSTRAINT schedules_cron_check CHECK ((btrim(cron) <> ''::text)),
    CONSTRAINT schedules_event_fields CHECK (((channel IS NOT NULL) OR ((payload IS NULL) AND (key IS NULL)))),
    CONSTRAINT schedules_every_check CHECK ((every > '00:00:00'::interval)),
    CONSTRAINT schedules_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT schedules_missed_cap_check CHECK ((missed_cap >= 1)),
    CONSTRAINT schedules_missed_check CHECK ((missed = ANY (ARRAY['skip'::text, 'once'::text, 'all'::text]))),
    CONSTRAINT schedules_name_check CHECK ((name <> ''::text)),
    CONSTRAINT schedules_one_action CHECK ((num_nonnulls(sql, channel) = 1)),
    CONSTRAINT schedules_one_timing CHECK ((num_nonnulls(run_at, every, cron) = 1)),
    CONSTRAINT schedules_overlap_check CHECK ((overlap = ANY (ARRAY['skip'::text, 'queue'::text]))),
    CONSTRAINT schedules_retry_delay_check CHECK ((retry_delay >= '00:00:00'::interval)),
    CONSTRAINT schedules_sql_check CHECK ((btrim(sql) <> ''::text)),
    CONSTRAINT schedules_starts_at CHECK (((starts_at IS NULL) OR (run_at IS NULL))),
    CONSTRAINT schedules_statement_timeout_check CHECK ((statement_timeout > '00:00:00'::interval))
);

COMMENT ON TABLE sidekick.schedules IS 'pg-sidekick schedules: one-shot (run_at), interval (every) or cron; action sql or channel (event). See docs/scheduling.md.';

CREATE SEQUENCE sidekick.schedules_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE sidekick.schedules_id_seq OWNED BY sidekick.schedules.id;

ALTER TABLE ONLY sidekick.schedule_runs ALTER COLUMN id SET DEFAULT nextval('sidekick.schedule_runs_id_seq'::regclass);

ALTER TABLE ONLY sidekick.schedules ALTER COLUMN id SET DEFAULT nextval('sidekick.schedules_id_seq'::regclass);

ALTER TABLE ONLY sidekick.backfills
    ADD CONSTRAINT backfills_pkey PRIMARY KEY (schema_name, table_name);

ALTER TABLE ONLY sidekick.dead_letters
    ADD CONSTRAINT dead_letters_pkey PRIMARY KEY (id);

ALTER TABLE ONLY sidekick.deliveries
    ADD CONSTRAINT deliveries_pkey PRIMARY KEY (seq);

ALTER TABLE ONLY sidekick.installation
    ADD CONSTRAINT installation_pkey PRIMARY KEY (singleton);

ALTER TABLE ONLY sidekick.migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (id);

ALTER TABLE ONLY sidekick.outbox
    ADD CONSTRAINT outbox_pkey PRIMARY KEY (id);

ALTER TABLE ONLY sidekick.row_changes
    ADD CONSTRAINT row_changes_pkey PRIMARY KEY (id);

ALTER TABLE ONLY sidekick.schedule_runs
    ADD CONSTRAINT schedule_runs_occurrence UNIQUE (schedule_id, due_at);

ALTER TABLE ONLY sidekick.schedule_runs
    ADD CONSTRAINT schedule_runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY sidekick.schedules
    ADD CONSTRAINT schedules_name_key UNIQUE (name);

ALTER TABLE ONLY sidekick.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (id);

CREATE INDEX dead_letters_sink ON sidekick.dead_letters USING btree (sink, id);

CREATE INDEX deliveries_sink_seq ON sidekick.deliveries USING btree (sink, seq);

CREATE INDEX schedule_runs_started ON sidekick.schedule_runs USING btree (started_at);

CREATE INDEX schedules_next_run ON sidekick.schedules USING btree (next_run_at, id) WHERE enabled;

CREATE INDEX schedules_unplanned ON sidekick.schedules USING btree (id) WHERE (enabled AND (next_run_at IS NULL));

CREATE TRIGGER schedules_plan BEFORE INSERT OR UPDATE ON sidekick.schedules FOR EACH ROW EXECUTE FUNCTION sidekick.schedules_plan();

CREATE TRIGGER schedules_wake AFTER INSERT OR UPDATE ON sidekick.schedules FOR EACH STATEMENT EXECUTE FUNCTION sidekick.schedules_wake();
