-- Cheaper writes: the capture triggers' outbox insert is on the application's write path.

-- 1. No CHECK constraints on the outbox. A CHECK is re-read from its stored form and compiled at
--    every statement that inserts (about 5 µs each, a tenth of a one-row transaction's cost), and
--    every writer of the outbox is pg-sidekick's own code (capture functions, sidekick.publish, dlq
--    retry, backfill); the drain reports a row it cannot read as malformed anyway.
ALTER TABLE sidekick.outbox DROP CONSTRAINT outbox_source_check;
ALTER TABLE sidekick.outbox DROP CONSTRAINT outbox_op_check;

-- 2. Fewer values per captured row: `source` defaults to 'table', and a row change's `channel` is
--    left NULL — the drain reads it as "<schema_name>.<table_name>" (each value a trigger passes
--    costs every write a little; these two are implied by the others).
ALTER TABLE sidekick.outbox ALTER COLUMN source SET DEFAULT 'table';
ALTER TABLE sidekick.outbox ALTER COLUMN channel DROP NOT NULL;

-- 3. The wake-up mark. Reading sidekick.drain_idle in every writer's transaction costs each one a
--    lookup of a page that every writer reads (cache-line traffic between CPUs under load). Instead,
--    a drain about to sleep moves the id sequence to a multiple of 1024, and a statement NOTIFYs
--    when the first id it took is one of the 8 that follow a multiple of 1024: the first writers after the drain
--    fell asleep wake it, busy writers NOTIFY in under 1% of their transactions, and a writer needs
--    nothing but the id it just took. The 8 (not 1) covers first writers that roll back; if all 8
--    do, the drain's safety-net poll finds the rest.
--    The move happens under a SHARE lock on the outbox, taken without waiting: granted only while no
--    transaction is writing the outbox (a writer holds ROW EXCLUSIVE until it ends), so no id can be
--    taken between reading the sequence and moving it (it only ever moves forward), and every event
--    with an id below the mark is committed or rolled back — the drain's next fetch sees them all.
--    Returns false, changing nothing, while a writer is mid-transaction: the drain looks again soon.
--    (Keep 1024 and 8 in step with WAKE_MODULUS and WAKE_WINDOW in src/outbox/queries.ts.)
CREATE FUNCTION sidekick.arm_wakeup() RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  LOCK TABLE sidekick.outbox IN SHARE MODE NOWAIT;
  PERFORM setval('sidekick.outbox_id_seq', (s.last_value / 1024 + 1) * 1024)
  FROM sidekick.outbox_id_seq AS s
  WHERE s.is_called AND s.last_value % 1024 <> 0;
  RETURN true;
EXCEPTION WHEN lock_not_available THEN
  RETURN false;
END
$fn$;
-- EXECUTE stays with PUBLIC, gated by USAGE on schema sidekick like publish(): at worst a caller
-- skips up to 1023 ids and holds the outbox for a moment (never waiting, so never queueing writers).
COMMENT ON FUNCTION sidekick.arm_wakeup() IS 'pg-sidekick: the drain sets the wake-up mark before it sleeps (see migration 004).';
COMMENT ON TABLE sidekick.drain_idle IS 'pg-sidekick: which drain instances are asleep (sidekick.retry_dead_letters and backfills NOTIFY while one is).';

-- sidekick.publish: the same wake-up rule as the capture triggers.
CREATE OR REPLACE FUNCTION sidekick.publish(channel text, payload jsonb, key text DEFAULT NULL) RETURNS bigint
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
