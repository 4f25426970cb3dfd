-- The durable path: the outbox (written by capture triggers and sidekick.publish in the writer's
-- own transaction), each sink's durable backlog, dead letters, and the drain's idle flags.
-- Application roles get no privilege on any of it; the capture functions and sidekick.publish are
-- SECURITY DEFINER with a pinned search_path. See docs/outbox.md for the design.

-- The queue of new events. Rows are removed once every sink they were routed to has them (or holds
-- them in its own durable backlog below). Never read with a "last id" cursor: ids are taken before
-- commit, so a lower id can become visible after a higher one. The drain's scan bound relies on two
-- invariants instead (see src/source/outbox.ts): every writer has its transaction id before it takes
-- an outbox id, and the sequence hands out ids in order (CACHE 1, the default — never raise it).
CREATE TABLE sidekick.outbox (
  id          bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,
  -- The writer's transaction (envelope `txid`).
  xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
  -- The writer's transaction start time (envelope `at`).
  at          timestamptz NOT NULL DEFAULT now(),
  source      text NOT NULL CHECK (source IN ('table', 'publish')),
  channel     text NOT NULL,
  op          text CHECK (op IN ('INSERT', 'UPDATE', 'DELETE')),
  schema_name text,
  table_name  text,
  -- Ordering key: the key columns' values as text (NULL: the channel is the ordering key).
  key         text,
  new         jsonb,
  old         jsonb,
  payload     jsonb,
  -- Set only for a dead letter sent back by `sidekick dlq retry`: the original event id (the
  -- envelope keeps it, so receivers can deduplicate) and the one sink it goes to.
  origin_id   bigint,
  target      text
);
-- A queue table: many inserts and deletes. Vacuum it early so dead rows do not pile up.
ALTER TABLE sidekick.outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 100000,
  autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE sidekick.outbox IS 'pg-sidekick: events not yet handed to every sink. Written by capture triggers and sidekick.publish().';

-- Per-sink durable backlog: events a sink could not take at once (it was failing or slow, or held
-- an event for long) wait here, so that one sink's trouble neither holds memory nor the outbox rows
-- the other sinks are done with. Only the drain instance that owns the event's key partition writes
-- a partition's rows, one statement after the other, so `seq` order is the order they were queued.
CREATE TABLE sidekick.deliveries (
  seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sink        text NOT NULL,
  part        smallint NOT NULL,
  event_id    bigint NOT NULL,
  queued_at   timestamptz NOT NULL DEFAULT now(),
  xid         xid8 NOT NULL,
  at          timestamptz NOT NULL,
  source      text NOT NULL,
  channel     text NOT NULL,
  op          text,
  schema_name text,
  table_name  text,
  key         text,
  new         jsonb,
  old         jsonb,
  payload     jsonb
);
CREATE INDEX deliveries_sink_seq ON sidekick.deliveries (sink, seq);
ALTER TABLE sidekick.deliveries SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
  autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE sidekick.deliveries IS 'pg-sidekick: per-sink backlog of events a sink has not acknowledged yet.';

-- Events a sink gave up on after its retry policy. `sidekick dlq retry` sends them back to that sink.
CREATE TABLE sidekick.dead_letters (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sink        text NOT NULL,
  event_id    bigint NOT NULL,
  failed_at   timestamptz NOT NULL DEFAULT now(),
  attempts    integer NOT NULL,
  error_code  text NOT NULL,
  error       text NOT NULL,
  xid         xid8 NOT NULL,
  at          timestamptz NOT NULL,
  source      text NOT NULL,
  channel     text NOT NULL,
  op          text,
  schema_name text,
  table_name  text,
  key         text,
  new         jsonb,
  old         jsonb,
  payload     jsonb
);
CREATE INDEX dead_letters_sink ON sidekick.dead_letters (sink, id);
COMMENT ON TABLE sidekick.dead_letters IS 'pg-sidekick: events a sink gave up on. See `sidekick dlq`.';

-- One row per running drain instance (its member slot). While a drain sleeps it sets `idle_until`
-- a little beyond its next safety-net poll (and pushes it forward at every poll); writers NOTIFY
-- the wake-up channel only while some drain is asleep. A NOTIFY in every busy transaction would
-- serialise their commits on PostgreSQL's global notify lock. A drain killed in its sleep stops
-- costing writers a NOTIFY once its `idle_until` has passed. Unlogged: after a crash it is empty,
-- and the drains catch up on reconnect anyway.
CREATE UNLOGGED TABLE sidekick.drain_idle (
  member      integer PRIMARY KEY,
  idle_until  timestamptz
);
COMMENT ON TABLE sidekick.drain_idle IS 'pg-sidekick: which drain instances are asleep (writers wake them with NOTIFY sidekick).';

-- sidekick.publish(channel, payload, key): emit a durable event from inside a transaction; it is
-- delivered if and only if the transaction commits. Returns the event id.
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
  IF EXISTS (SELECT 1 FROM sidekick.drain_idle WHERE idle_until > now()) THEN
    PERFORM pg_notify('sidekick', '');
  END IF;
  RETURN v_id;
END
$fn$;
REVOKE ALL ON FUNCTION sidekick.publish(text, jsonb, text) FROM PUBLIC;
COMMENT ON FUNCTION sidekick.publish(text, jsonb, text) IS 'pg-sidekick: emit a durable event (delivered if the transaction commits). GRANT EXECUTE to roles that may publish.';

-- Sends dead letters back to their sink as new outbox rows that keep the original event id.
-- Returns how many were requeued. Used by `sidekick dlq retry`.
CREATE FUNCTION sidekick.retry_dead_letters(ids bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  v_count bigint;
BEGIN
  PERFORM pg_current_xact_id();
  WITH gone AS (
    DELETE FROM sidekick.dead_letters d WHERE d.id = ANY (retry_dead_letters.ids) RETURNING d.*
  )
  INSERT INTO sidekick.outbox (xid, at, source, channel, op, schema_name, table_name, key, new, old, payload, origin_id, target)
  SELECT g.xid, g.at, g.source, g.channel, g.op, g.schema_name, g.table_name, g.key, g.new, g.old, g.payload, g.event_id, g.sink
  FROM gone g ORDER BY g.id;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  IF v_count > 0 AND EXISTS (SELECT 1 FROM sidekick.drain_idle WHERE idle_until > now()) THEN
    PERFORM pg_notify('sidekick', '');
  END IF;
  RETURN v_count;
END
$fn$;
REVOKE ALL ON FUNCTION sidekick.retry_dead_letters(bigint[]) FROM PUBLIC;
