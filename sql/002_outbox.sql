-- The durable path: the queue of new events (written by capture triggers, sidekick.publish, dead-letter
-- retries and backfills in the writer's own transaction), each sink's durable backlog, dead letters,
-- and backfill progress. Application roles get no privilege on any of it; the capture functions and
-- sidekick.publish are SECURITY DEFINER with a pinned search_path. docs/outbox.md has the design,
-- test/schema/installed.sql the installed result (a test compares a fresh install with it).
--
-- Every statement here is on, or next to, the application's write path; what it costs each write was
-- measured (bench/trigger-cost.mjs counts instructions) and is said where it matters:
-- - No CHECK constraints on the queue tables: a CHECK is re-read from its stored form and compiled at
--   every inserting statement (about 5 µs, a tenth of a one-row transaction). Every writer of them is
--   pg-sidekick's own code; the drain reports a row it cannot read as malformed anyway.
-- - A table's width costs every insert (a tuple descriptor and a projection over every column, at
--   every execution): one-row captures go to a 7-column table, sidekick.row_changes; the 18-column
--   sidekick.outbox holds statements' chunks, published events, dead-letter retries and backfills.

-- Statements' chunks (at most 1000 changed rows each; a row image over 256 kB gets a chunk of its own),
-- published events, dead letters sent back, backfill batches.
-- Its id sequence, sidekick.outbox_id_seq, numbers both queue tables. The drain's scan bound relies on
-- two invariants (src/outbox/scan-bound.ts): every writer has its transaction id before it takes an id,
-- and the sequence hands out ids in order (CACHE 1 — never raise it). Never read the queue with a
-- "last id" cursor: ids are taken before commit, so a lower id can become visible after a higher one.
-- The wake-up mark moves the sequence too (sidekick.arm_wakeup below).
CREATE TABLE sidekick.outbox (
  id          bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
  -- The writer's transaction (envelope `txid`).
  xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
  -- The writer's transaction start time (envelope `at`).
  at          timestamptz NOT NULL DEFAULT now(),
  -- 'table' (row changes), 'publish', or 'notify' (a NOTIFY event's dead letter sent back).
  source      text NOT NULL DEFAULT 'table',
  -- NULL for row changes: the drain reads it as "<schema_name>.<table_name>".
  channel     text,
  -- Row changes: INSERT, UPDATE, DELETE, or READ (backfills).
  op          text,
  schema_name text,
  table_name  text,
  -- The ordering key's columns: the drain reads each row's key from its image.
  key_columns text[],
  -- One event id per changed row, taken from the same sequence; NULL: a single event whose id is `id`.
  event_ids   bigint[],
  -- The row images: with event_ids, JSON arrays (one element per event, NULL for an op without that
  -- image); without, the single image itself. `keys`, when set, gives each row's key (a list of the
  -- key columns' values, or the key text) instead of reading it from the image. `json`, not `jsonb`:
  -- the text as written (a json column may hold \u0000 or an unpaired surrogate, which jsonb refuses).
  new         json,
  old         json,
  keys        json,
  -- Published events: the ordering key and the payload.
  key         text,
  payload     json,
  -- Set only for a dead letter sent back by `sidekick dlq retry`: the original event's number
  -- (`seq`) and id, so receivers see the same idempotency key, and the one sink it goes to.
  origin_id   bigint,
  target      text,
  origin_uid  text
);
-- Queue tables: many inserts and deletes. Vacuum them early so dead rows do not pile up.
ALTER TABLE sidekick.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 100000,
  autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE sidekick.outbox IS 'pg-sidekick: events not yet handed to every sink: statements'' chunks, published events, dead-letter retries, backfills.';

-- One row change per row: a statement's first two changed rows (INSERT/DELETE; the one-row UPDATE)
-- and every event of a row-level capture trigger.
CREATE TABLE sidekick.row_changes (
  -- From sidekick.outbox_id_seq, taken by the trigger (after the writer has its transaction id).
  id       bigint PRIMARY KEY,
  xid      xid8 NOT NULL,
  at       timestamptz NOT NULL,
  -- What changed, fixed per capture function: {op, schema, table, key column, ...}.
  capture  text[] NOT NULL,
  new      json,
  old      json,
  -- The key columns' values (a JSON list) when the image leaves them out; else NULL.
  keys     json
);
ALTER TABLE sidekick.row_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 100000,
  autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE sidekick.row_changes IS 'pg-sidekick: row changes not yet handed to every sink, one per row (capture triggers). The drain reads it with sidekick.outbox through sidekick.events.';

-- Every waiting event, in sidekick.outbox's layout: the drain's queue, read in id order (the planner
-- merges the two primary-key indexes).
CREATE VIEW sidekick.events AS
  SELECT id, xid, at, source, channel, op, schema_name, table_name, key_columns, event_ids, new, old, keys, key, payload, origin_id, target, origin_uid
  FROM sidekick.outbox
  UNION ALL
  SELECT id, xid, at, 'table'::text, NULL::text, capture[1], capture[2], capture[3], capture[4:], NULL::bigint[], new, old, keys,
         NULL::text, NULL::json, NULL::bigint, NULL::text, NULL::text
  FROM sidekick.row_changes;
COMMENT ON VIEW sidekick.events IS 'pg-sidekick: every event not yet handed to every sink (sidekick.outbox and sidekick.row_changes), in id order by the drain.';

-- This installation's name, drawn once: the first part of every durable event id
-- ("<installation>-<seq>"), so ids never repeat across databases or after uninstall + install.
CREATE TABLE sidekick.installation (
  -- Exactly one row.
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  -- 16 hex digits (60 random bits: gen_random_uuid() fixes the version nibble).
  id        text NOT NULL DEFAULT substr(replace(gen_random_uuid()::text, '-', ''), 1, 16),
  created   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sidekick.installation DEFAULT VALUES;
COMMENT ON TABLE sidekick.installation IS 'pg-sidekick: this installation''s name, the first part of every durable event id.';

-- Per-sink durable backlog: events a sink could not take at once (it was failing or slow, or held an
-- event for longer than outbox.checkpointAfter) wait here, so that one sink's trouble neither holds
-- memory nor the outbox rows the other sinks are done with. Only the drain instance that owns the
-- event's key partition writes a partition's rows, one statement after the other, so `seq` order is
-- the order they were queued. Images as `json`: stored exactly as the event holds them.
CREATE TABLE sidekick.deliveries (
  seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sink        text NOT NULL,
  part        smallint NOT NULL,
  -- The event's number (envelope `seq`) and the id it is delivered with.
  event_id    bigint,
  event_uid   text NOT NULL,
  queued_at   timestamptz NOT NULL DEFAULT now(),
  xid         xid8 NOT NULL,
  at          timestamptz NOT NULL,
  source      text NOT NULL,
  channel     text NOT NULL,
  op          text,
  schema_name text,
  table_name  text,
  key         text,
  new         json,
  old         json,
  payload     json
);
CREATE INDEX deliveries_sink_seq ON sidekick.deliveries (sink, seq);
ALTER TABLE sidekick.deliveries SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE sidekick.deliveries IS 'pg-sidekick: per-sink backlog of events a sink has not acknowledged yet.';

-- Events a sink gave up on after its retry policy. `sidekick dlq retry` sends them back to that sink.
-- NOTIFY events have no number and no transaction: event_id and xid are NULL for them.
CREATE TABLE sidekick.dead_letters (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sink        text NOT NULL,
  event_id    bigint,
  event_uid   text NOT NULL,
  failed_at   timestamptz NOT NULL DEFAULT now(),
  attempts    integer NOT NULL,
  error_code  text NOT NULL,
  error       text NOT NULL,
  xid         xid8,
  at          timestamptz NOT NULL,
  source      text NOT NULL,
  channel     text NOT NULL,
  op          text,
  schema_name text,
  table_name  text,
  key         text,
  new         json,
  old         json,
  payload     json
);
CREATE INDEX dead_letters_sink ON sidekick.dead_letters (sink, id);
COMMENT ON TABLE sidekick.dead_letters IS 'pg-sidekick: events a sink gave up on. See `sidekick dlq`.';

-- Backfills: `sidekick backfill <table>` enqueues a table's existing rows as op READ events, in key
-- order, one batch per transaction; the cursor below moves in the same transaction as the batch's
-- outbox rows, so an interrupted backfill resumes after its last finished batch, never repeating it.
CREATE TABLE sidekick.backfills (
  schema_name  text NOT NULL,
  table_name   text NOT NULL,
  -- The --where filter (SQL text, '' for none): a resumed backfill must use the same one.
  where_sql    text NOT NULL DEFAULT '',
  -- The columns the rows are walked by (the capture key, then the primary key's other columns).
  key_columns  text[] NOT NULL,
  -- The last enqueued row's key values (as text, one per key column); NULL before the first batch.
  last_key     text[],
  rows_done    bigint NOT NULL DEFAULT 0,
  started_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  -- Set when the last batch was enqueued.
  done_at      timestamptz,
  PRIMARY KEY (schema_name, table_name)
);
COMMENT ON TABLE sidekick.backfills IS 'pg-sidekick: progress of `sidekick backfill` per table (resumable).';

-- The wake-up mark. A drain with nothing to do sleeps until a NOTIFY on channel `sidekick` (or its
-- safety-net poll). A NOTIFY in every busy transaction would serialise their commits on PostgreSQL's
-- global notify lock, and reading a shared "is a drain asleep?" row in every writer's transaction
-- costs each one a lookup of a page every writer reads. Instead, a drain about to sleep moves the id
-- sequence to a multiple of 1024, and a writer NOTIFYs when the first id it took is one of the 8 that
-- follow a multiple of 1024: the first writers after the drain fell asleep wake it, busy writers
-- NOTIFY in under 1% of their transactions, and a writer needs nothing but the id it just took. The 8
-- (not 1) covers first writers that roll back; if all 8 do, the drain's safety-net poll finds the rest.
-- The move happens under a SHARE lock on both queue tables, taken without waiting: granted only while
-- no transaction is writing them (a writer holds ROW EXCLUSIVE until it ends), so no id can be taken
-- between reading the sequence and moving it (it only ever moves forward), and every event with an id
-- below the mark is committed or rolled back — the drain's next fetch sees them all. Returns false,
-- changing nothing, while a writer is mid-transaction: the drain looks again soon.
-- (Keep 1024 and 8 in step with WAKE_MODULUS and WAKE_WINDOW in src/outbox/queries.ts.)
-- EXECUTE stays with PUBLIC, gated by USAGE on schema sidekick like publish(): at worst a caller skips
-- up to 1023 ids and holds the queue for a moment (never waiting, so never queueing writers).
CREATE FUNCTION sidekick.arm_wakeup() RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  LOCK TABLE sidekick.outbox, sidekick.row_changes IN SHARE MODE NOWAIT;
  PERFORM setval('sidekick.outbox_id_seq', (s.last_value / 1024 + 1) * 1024)
  FROM sidekick.outbox_id_seq AS s
  WHERE s.is_called AND s.last_value % 1024 <> 0;
  RETURN true;
EXCEPTION WHEN lock_not_available THEN
  RETURN false;
END
$fn$;
COMMENT ON FUNCTION sidekick.arm_wakeup() IS 'pg-sidekick: the drain sets the wake-up mark before it sleeps.';

-- sidekick.publish(channel, payload, key): emit a durable event from inside a transaction; it is
-- delivered if and only if the transaction commits. Returns the event's number (envelope `seq`).
-- The wake-up rule of the capture triggers.
CREATE FUNCTION sidekick.publish(channel text, payload jsonb, key text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
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
$fn$;
-- EXECUTE stays with PUBLIC: USAGE on schema sidekick (revoked from PUBLIC) is the gate, so only
-- roles given it — the bridge's, and application roles that should publish — can call it.
COMMENT ON FUNCTION sidekick.publish(text, jsonb, text) IS 'pg-sidekick: emit a durable event (delivered if the transaction commits). Needs USAGE on schema sidekick.';

-- Sends dead letters back to their sink as new outbox rows that keep the original event's id and
-- number. Returns how many were requeued. Used by `sidekick dlq retry`; rare, so it simply wakes the
-- drain. Runs with the caller's rights (the bridge's role has what it needs).
CREATE FUNCTION sidekick.retry_dead_letters(ids bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
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
$fn$;
