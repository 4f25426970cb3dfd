-- Event identity, and stores that take any event.
--
-- 1. Ids unique across databases and reinstalls. An event's id used to be its outbox number, so the
--    first event after `uninstall` + `install` was "1" again, and two databases feeding one receiver
--    collided on every id. Each installation now draws a random name once; a durable event's id is
--    "<installation>-<outbox number>" and the number itself travels beside it as `seq` (it grows in
--    commit order for one key, so consumers can still skip what they already applied).
CREATE TABLE sidekick.installation (
  -- Exactly one row.
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  -- 16 hex digits (64 random bits, of which gen_random_uuid() leaves 60 random: the version nibble).
  id        text NOT NULL DEFAULT substr(replace(gen_random_uuid()::text, '-', ''), 1, 16),
  created   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sidekick.installation DEFAULT VALUES;
COMMENT ON TABLE sidekick.installation IS 'pg-sidekick: this installation''s name, the first part of every durable event id.';

-- 2. Lossless stores. A captured `json` column may hold what `jsonb` refuses (\u0000, an unpaired
--    surrogate such as \ud800). The outbox keeps row images as `json` (its text, as written); the
--    sinks' backlogs and the dead letters kept them as `jsonb`, so such an event broke the drain's
--    bookkeeping every round as soon as it had to be stored there. They are `json` now too: stored
--    exactly as the event holds them.
ALTER TABLE sidekick.deliveries
  ALTER COLUMN new TYPE json USING new::json,
  ALTER COLUMN old TYPE json USING old::json,
  ALTER COLUMN payload TYPE json USING payload::json;
ALTER TABLE sidekick.dead_letters
  ALTER COLUMN new TYPE json USING new::json,
  ALTER COLUMN old TYPE json USING old::json,
  ALTER COLUMN payload TYPE json USING payload::json;

-- 3. The id an event was delivered with is stored beside its number in backlogs and dead letters
--    (`event_uid`), so a redelivery from there reaches the receiver under the same idempotency key.
--    NOTIFY events have no number: their dead letters (stored since this migration) keep only their
--    UUID, have no transaction id, and a retry sends them back through the outbox, which therefore
--    takes source 'notify' too (only from sidekick.retry_dead_letters) and keeps `origin_uid`.
--    The outbox's payload becomes `json` like the images, for the same reason as above.
ALTER TABLE sidekick.deliveries ALTER COLUMN event_id DROP NOT NULL, ADD COLUMN event_uid text;
ALTER TABLE sidekick.dead_letters ALTER COLUMN event_id DROP NOT NULL, ALTER COLUMN xid DROP NOT NULL, ADD COLUMN event_uid text;
ALTER TABLE sidekick.deliveries ADD CONSTRAINT deliveries_identity CHECK (event_id IS NOT NULL OR event_uid IS NOT NULL);
ALTER TABLE sidekick.dead_letters ADD CONSTRAINT dead_letters_identity CHECK (event_id IS NOT NULL OR event_uid IS NOT NULL);
DROP VIEW sidekick.events;
ALTER TABLE sidekick.outbox DROP CONSTRAINT IF EXISTS outbox_source_check;
ALTER TABLE sidekick.outbox ADD CONSTRAINT outbox_source_check CHECK (source IN ('table', 'publish', 'notify'));
ALTER TABLE sidekick.outbox ADD COLUMN origin_uid text;
ALTER TABLE sidekick.outbox ALTER COLUMN payload TYPE json USING payload::json;

CREATE VIEW sidekick.events AS
  SELECT id, xid, at, source, channel, op, schema_name, table_name, key_columns, event_ids, new, old, keys, key, payload, origin_id, target, origin_uid
  FROM sidekick.outbox
  UNION ALL
  SELECT id, xid, at, 'table'::text, NULL::text, capture[1], capture[2], capture[3], capture[4:], NULL::bigint[], new, old, keys,
         NULL::text, NULL::json, NULL::bigint, NULL::text, NULL::text
  FROM sidekick.row_changes;
COMMENT ON VIEW sidekick.events IS 'pg-sidekick: every event not yet handed to every sink (sidekick.outbox and sidekick.row_changes), in id order by the drain.';

CREATE OR REPLACE FUNCTION sidekick.retry_dead_letters(ids bigint[]) RETURNS bigint
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
  IF v_count > 0 AND EXISTS (SELECT 1 FROM sidekick.drain_idle WHERE idle_until > now()) THEN
    PERFORM pg_notify('sidekick', '');
  END IF;
  RETURN v_count;
END
$fn$;
