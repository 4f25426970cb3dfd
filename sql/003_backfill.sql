-- Backfills: `sidekick backfill <table>` enqueues a table's existing rows as op READ events, in key
-- order, one batch per transaction; the cursor below moves in the same transaction as the batch's
-- outbox rows, so an interrupted backfill resumes after its last finished batch, never repeating it.

-- READ joins the row operations. The new constraint is looser than the old one, so existing rows
-- satisfy it: NOT VALID spares the scan.
ALTER TABLE sidekick.outbox DROP CONSTRAINT outbox_op_check;
ALTER TABLE sidekick.outbox ADD CONSTRAINT outbox_op_check CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'READ')) NOT VALID;

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
