import type { Envelope, RowOp } from '../envelope.js';

/**
 * Events are spread over a fixed number of key partitions; each drain instance owns some of them
 * (session advisory locks), so two instances never deliver the same key at once. Never change it:
 * instances of different versions must agree.
 */
export const PARTITIONS = 16;
/** Advisory lock namespace (first int4 of the two-key form): partitions 0‥15, member slots 1000+. */
export const LOCK_CLASS = 0x534b4f42;
export const MEMBER_BASE = 1000;
export const MEMBER_SLOTS = 256;
/** The wake-up channel; its payload is ignored (any role can NOTIFY it). */
export const WAKE_CHANNEL = 'sidekick';

/** The partition of an event: a hash of its channel and key (SQL expression over alias `o`). */
export const PART_EXPR = `((hashtext(o.channel || coalesce(o.key, '')) & 2147483647) % ${PARTITIONS})`;

const EVENT_COLUMNS = `o.xid::text AS xid, o.at, o.source, o.channel, o.op, o.schema_name, o.table_name, o.key, o.new, o.old, o.payload`;

const SIZE_EXPR = `(coalesce(pg_column_size(o.new), 0) + coalesce(pg_column_size(o.old), 0) + coalesce(pg_column_size(o.payload), 0))`;

/**
 * One fetch: the next outbox rows above the scan bound that are not in memory, plus the snapshot
 * and sequence position the scan bound needs (one row even when there are no events). The batch
 * also stops once it holds about $5 bytes of row images (stored size), so big rows are fetched a
 * few at a time; the first row always comes.
 * $1 floor, $2 ids to skip, $3 partitions (NULL = all), $4 limit, $5 byte budget.
 */
export const FETCH_OUTBOX = `
WITH info AS (
  SELECT pg_snapshot_xmin(s)::text AS snap_xmin, pg_snapshot_xmax(s)::text AS snap_xmax,
         (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM sidekick.outbox_id_seq) AS last_value
  FROM pg_current_snapshot() AS s
), batch AS (
  SELECT * FROM (
    SELECT o.id, o.origin_id, o.target, ${PART_EXPR} AS part, ${EVENT_COLUMNS},
           sum(${SIZE_EXPR}) OVER (ORDER BY o.id ROWS UNBOUNDED PRECEDING) AS running, ${SIZE_EXPR} AS size
    FROM sidekick.outbox o
    WHERE o.id > $1 AND NOT (o.id = ANY ($2::bigint[]))
      AND ($3::int[] IS NULL OR ${PART_EXPR} = ANY ($3::int[]))
    ORDER BY o.id
    LIMIT $4
  ) b
  WHERE b.running - b.size < $5
)
SELECT info.snap_xmin, info.snap_xmax, info.last_value, batch.*
FROM info LEFT JOIN batch ON true
ORDER BY batch.id`;

/** A sink's durable backlog, in queue order. $1 sink, $2 after seq, $3 partitions (NULL = all), $4 limit. */
export const FETCH_BACKLOG = `
SELECT o.seq, o.event_id, o.part, ${EVENT_COLUMNS}
FROM sidekick.deliveries o
WHERE o.sink = $1 AND o.seq > $2 AND ($3::int[] IS NULL OR o.part = ANY ($3::int[]))
ORDER BY o.seq
LIMIT $4`;

/** Which sinks have a durable backlog in these partitions. $1 partitions. */
export const BACKLOG_SINKS = `SELECT DISTINCT sink FROM sidekick.deliveries WHERE part = ANY ($1::int[])`;

const DEAD_COLUMNS = `sink, event_id, attempts, error_code, error, xid, at, source, channel, op, schema_name, table_name, key, new, old, payload`;

/**
 * All of the drain's bookkeeping in one statement (atomic, one round trip):
 * - spills: outbox rows copied into sinks' backlogs, in queue order ($1 ids, $2 sinks, $3 parts);
 * - dead letters of events still in the outbox ($4 ids, $5 sinks, $6 attempts, $7 codes, $8 errors);
 * - dead letters of backlog rows ($9 seqs, $10 attempts, $11 codes, $12 errors);
 * - backlog rows done ($13 seqs) and outbox rows done ($14 ids).
 * Every part reads the snapshot from before the statement, so a row can be copied and deleted at once.
 * Returns the seq given to each spilled (sink, event).
 */
export const FLUSH = `
WITH spill_in AS (
  SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[]) WITH ORDINALITY AS s(qid, sink, part, ord)
), spilled AS (
  INSERT INTO sidekick.deliveries (sink, part, event_id, xid, at, source, channel, op, schema_name, table_name, key, new, old, payload)
  SELECT s.sink, s.part, coalesce(o.origin_id, o.id), o.xid, o.at, o.source, o.channel, o.op, o.schema_name, o.table_name, o.key, o.new, o.old, o.payload
  FROM spill_in s JOIN sidekick.outbox o ON o.id = s.qid
  ORDER BY s.ord
  RETURNING seq, sink, event_id
), dead_outbox AS (
  INSERT INTO sidekick.dead_letters (${DEAD_COLUMNS})
  SELECT d.sink, coalesce(o.origin_id, o.id), d.attempts, d.code, d.error, o.xid, o.at, o.source, o.channel, o.op, o.schema_name, o.table_name, o.key, o.new, o.old, o.payload
  FROM unnest($4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[]) AS d(qid, sink, attempts, code, error)
  JOIN sidekick.outbox o ON o.id = d.qid
), dead_backlog AS (
  INSERT INTO sidekick.dead_letters (${DEAD_COLUMNS})
  SELECT o.sink, o.event_id, d.attempts, d.code, d.error, o.xid, o.at, o.source, o.channel, o.op, o.schema_name, o.table_name, o.key, o.new, o.old, o.payload
  FROM unnest($9::bigint[], $10::int[], $11::text[], $12::text[]) AS d(seq, attempts, code, error)
  JOIN sidekick.deliveries o ON o.seq = d.seq
), done_backlog AS (
  DELETE FROM sidekick.deliveries WHERE seq = ANY ($13::bigint[])
), done_outbox AS (
  DELETE FROM sidekick.outbox WHERE id = ANY ($14::bigint[])
)
SELECT seq, sink, event_id FROM spilled`;

/** The columns every event query returns. */
export interface EventRow {
  xid: string;
  at: Date;
  source: 'table' | 'publish';
  channel: string;
  op: RowOp | null;
  schema_name: string | null;
  table_name: string | null;
  key: string | null;
  new: Record<string, unknown> | null;
  old: Record<string, unknown> | null;
  payload: unknown;
}

export interface OutboxRow extends EventRow {
  id: string;
  running: string;
  origin_id: string | null;
  target: string | null;
  part: number;
}

export interface BacklogRow extends EventRow {
  seq: string;
  event_id: string;
  part: number;
}

/** An outbox or backlog row as the envelope every sink gets. Row changes always carry `new` and `old`. */
export function rowEnvelope(id: string, row: EventRow): Envelope {
  const at = row.at instanceof Date ? row.at.toISOString() : new Date(row.at as unknown as string).toISOString();
  if (row.source === 'table') {
    return {
      id,
      source: 'table',
      channel: row.channel,
      op: row.op ?? undefined,
      schema: row.schema_name ?? undefined,
      table: row.table_name ?? undefined,
      ...(row.key !== null ? { key: row.key } : {}),
      new: row.new,
      old: row.old,
      at,
      txid: row.xid,
    } as Envelope;
  }
  return {
    id,
    source: 'publish',
    channel: row.channel,
    ...(row.key !== null ? { key: row.key } : {}),
    payload: row.payload,
    at,
    txid: row.xid,
  };
}
