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
/**
 * The wake-up mark (sidekick.arm_wakeup in sql/002_outbox.sql): a drain about to sleep moves the id sequence to a
 * multiple of WAKE_MODULUS; writers NOTIFY when their id is one of the WAKE_WINDOW that follow one.
 * Keep in step with sidekick.arm_wakeup() and sidekick.publish().
 */
export const WAKE_MODULUS = 1024;
export const WAKE_WINDOW = 8;
/** Sets the mark; false while a writer of the outbox is mid-transaction (nothing changed). */
export const ARM_WAKEUP = 'SELECT sidekick.arm_wakeup() AS armed';
/** This installation's name: the first part of every durable event id. */
export const INSTALLATION = `SELECT id FROM sidekick.installation`;

/** An outbox row's channel: capture triggers leave it NULL for "<schema>.<table>". */
const CHANNEL_EXPR = `coalesce(o.channel, o.schema_name || '.' || o.table_name)`;

/**
 * The partition of an outbox row: its channel for row changes (one statement's rows travel
 * together, and a table's events keep their order), its channel and key for published events.
 */
export const PART_EXPR =
  `((hashtext(CASE WHEN o.source = 'table' THEN ${CHANNEL_EXPR} ELSE o.channel || coalesce(o.key, '') END) & 2147483647) % ` + `${PARTITIONS})`;

const SIZE_EXPR = `(coalesce(pg_column_size(o.new), 0) + coalesce(pg_column_size(o.old), 0) + coalesce(pg_column_size(o.payload), 0))`;
const EVENTS_EXPR = `coalesce(cardinality(o.event_ids), 1)`;

/**
 * One fetch: the next outbox rows above the scan bound that are not in memory, plus the xmin of
 * its snapshot, which the scan bound needs (one row even when there are no events). A batch
 * holds at most $4 events and about $5 bytes of row images (stored size); the first row always
 * comes, however big.
 * $1 floor, $2 ids to skip, $3 partitions (NULL = all), $4 events, $5 byte budget.
 * Every waiting event is read through sidekick.events (the planner merges the two tables' id indexes).
 */
export const FETCH_OUTBOX = `
WITH info AS (
  SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS snap_xmin
), batch AS (
  SELECT * FROM (
    SELECT o.id, o.origin_id, o.origin_uid, o.target, ${PART_EXPR} AS part, o.xid::text AS xid, o.at, o.source, ${CHANNEL_EXPR} AS channel,
           o.op, o.schema_name, o.table_name, o.key_columns, o.event_ids, o.new, o.old, o.keys, o.key, o.payload,
           sum(${SIZE_EXPR}) OVER w AS running_bytes, ${SIZE_EXPR} AS bytes,
           sum(${EVENTS_EXPR}) OVER w AS running_events, ${EVENTS_EXPR} AS events
    FROM sidekick.events o
    WHERE o.id > $1 AND NOT (o.id = ANY ($2::bigint[]))
      AND ($3::int[] IS NULL OR ${PART_EXPR} = ANY ($3::int[]))
    WINDOW w AS (ORDER BY o.id ROWS UNBOUNDED PRECEDING)
    ORDER BY o.id
    LIMIT $4
  ) b
  WHERE b.running_bytes - b.bytes < $5 AND b.running_events - b.events < $4
)
SELECT info.snap_xmin, batch.*
FROM info LEFT JOIN batch ON true
ORDER BY batch.id`;

const EVENT_COLUMNS = `o.xid::text AS xid, o.at, o.source, o.channel, o.op, o.schema_name, o.table_name, o.key, o.new, o.old, o.payload`;

/** The sequence's last handed-out value (step 1 of a scan-bound probe). */
export const LAST_VALUE = `SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS last_value FROM sidekick.outbox_id_seq`;
/** A fresh transaction id (step 2 of a probe). Its own transaction. */
export const FRESH_XID = `SELECT pg_current_xact_id()::text AS xid`;

/** A sink's durable backlog, in queue order. $1 sink, $2 after seq, $3 partitions (NULL = all), $4 limit. */
export const FETCH_BACKLOG = `
SELECT o.seq, o.event_id, o.event_uid, o.part, ${EVENT_COLUMNS}
FROM sidekick.deliveries o
WHERE o.sink = $1 AND o.seq > $2 AND ($3::int[] IS NULL OR o.part = ANY ($3::int[]))
ORDER BY o.seq
LIMIT $4`;

/** The member slots held by live drain instances of this database (session advisory locks). */
export const LIVE_MEMBERS = `
SELECT (objid::bigint - ${MEMBER_BASE})::int AS slot FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = ${LOCK_CLASS}::oid
  AND objid::bigint >= ${MEMBER_BASE} AND objid::bigint < ${MEMBER_BASE + MEMBER_SLOTS}
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;
/** Takes a free member slot (a session advisory lock), or none. $1 LOCK_CLASS. */
export const TAKE_MEMBER_SLOT = `SELECT s FROM generate_series(0, ${MEMBER_SLOTS - 1}) AS s WHERE pg_try_advisory_lock($1, ${MEMBER_BASE} + s) LIMIT 1`;
/** Takes up to $3 of the candidate partitions $2, in the order given, without waiting. $1 LOCK_CLASS. */
export const TAKE_PARTITIONS = 'SELECT p FROM unnest($2::int[]) WITH ORDINALITY AS t(p, o) WHERE pg_try_advisory_lock($1, p) ORDER BY o LIMIT $3';
/** Hands a partition back. $1 LOCK_CLASS, $2 partition. */
export const RELEASE_PARTITION = 'SELECT pg_advisory_unlock($1, $2)';

/** Which sinks have a durable backlog in these partitions. $1 partitions. */
export const BACKLOG_SINKS = `SELECT DISTINCT sink FROM sidekick.deliveries WHERE part = ANY ($1::int[])`;

/**
 * An event as FLUSH reads it from its JSON parameter. The images and the payload travel as JSON
 * *text* inside it and are cast to json one by one: parsing them as part of the parameter would
 * decode their strings, and a row image may hold what only the json type keeps (\u0000, an
 * unpaired surrogate — see sql/002_outbox.sql).
 */
const RECORD = `event_id bigint, event_uid text, xid text, at timestamptz, source text, channel text, op text, schema_name text,
    table_name text, key text, new text, old text, payload text`;

/**
 * All of the drain's bookkeeping in one statement (atomic, one round trip):
 * - $1 spills: events copied into sinks' backlogs, in queue order (JSON records, with sink and part);
 * - $2 dead letters (JSON records, with sink, attempts, error_code, error);
 * - $3 backlog rows done (seq) and $4 outbox rows done (ids of sidekick.outbox or
 *   sidekick.row_changes — ids are unique across the two).
 * Returns the seq given to each spilled (sink, event).
 */
export const FLUSH = `
WITH spilled AS (
  INSERT INTO sidekick.deliveries (sink, part, event_id, event_uid, xid, at, source, channel, op, schema_name, table_name, key, new, old, payload)
  SELECT s.sink, s.part, s.event_id, s.event_uid, s.xid::xid8, s.at, s.source, s.channel, s.op, s.schema_name, s.table_name, s.key,
         s.new::json, s.old::json, s.payload::json
  FROM json_to_recordset($1::json) AS s(sink text, part int, ord int, ${RECORD})
  ORDER BY s.ord
  RETURNING seq, sink, event_id, event_uid
), dead AS (
  INSERT INTO sidekick.dead_letters (sink, event_id, event_uid, attempts, error_code, error,
    xid, at, source, channel, op, schema_name, table_name, key, new, old, payload)
  SELECT d.sink, d.event_id, d.event_uid, d.attempts, d.error_code, d.error, d.xid::xid8, d.at, d.source, d.channel, d.op, d.schema_name, d.table_name, d.key,
         d.new::json, d.old::json, d.payload::json
  FROM json_to_recordset($2::json) AS d(sink text, attempts int, error_code text, error text, ${RECORD})
), done_backlog AS (
  DELETE FROM sidekick.deliveries WHERE seq = ANY ($3::bigint[])
), done_outbox AS (
  DELETE FROM sidekick.outbox WHERE id = ANY ($4::bigint[])
), done_rows AS (
  DELETE FROM sidekick.row_changes WHERE id = ANY ($4::bigint[])
)
SELECT seq, sink, event_uid FROM spilled`;

/** The columns of a backlog (and dead-letter) row that make up its event. */
export interface EventRow {
  /** The outbox number (`seq`); NULL for a NOTIFY event's dead letter. */
  event_id: string | null;
  /** The id it was delivered with. */
  event_uid: string;
  xid: string | null;
  at: Date;
  source: EventSource;
  channel: string;
  op: RowOp | null;
  schema_name: string | null;
  table_name: string | null;
  key: string | null;
  new: Record<string, unknown> | null;
  old: Record<string, unknown> | null;
  payload: unknown;
}

/** What the outbox and the stores hold: row changes, published events, NOTIFY events sent back from the dead letters. */
type EventSource = 'table' | 'publish' | 'notify';

export interface OutboxRow {
  id: string;
  origin_id: string | null;
  origin_uid: string | null;
  target: string | null;
  part: number;
  xid: string;
  at: Date;
  source: EventSource;
  channel: string;
  op: RowOp | null;
  schema_name: string | null;
  table_name: string | null;
  key_columns: string[] | null;
  event_ids: string[] | null;
  /** With event_ids: arrays, one element per event; without: the single event's value. */
  new: unknown;
  old: unknown;
  keys: unknown;
  key: string | null;
  payload: unknown;
  running_bytes: string;
  running_events: string;
}

export interface BacklogRow extends EventRow {
  seq: string;
  part: number;
}

/**
 * A durable event's id: the installation's name and the outbox number. Unique across databases and
 * reinstalls (each installation draws its name once), the same on every redelivery.
 */
export function eventId(installation: string, seq: string): string {
  return `${installation}-${seq}`;
}

function iso(at: Date | string): string {
  return at instanceof Date ? at.toISOString() : new Date(at).toISOString();
}

/**
 * The key text of a changed row: given (a string), from the key columns' values (a list), or read
 * from the row image through the key columns. One column: its value as text; several: a JSON
 * array of the values. None (no key, or a NULL value): undefined — the channel orders the events.
 */
export function rowKey(slot: unknown, image: Record<string, unknown> | null, keyColumns: readonly string[] | null): string | undefined {
  if (typeof slot === 'string') return slot;
  let values: unknown[] | undefined;
  if (Array.isArray(slot)) values = slot;
  else if (keyColumns && keyColumns.length === 1 && image) return keyText(image[keyColumns[0] as string]);
  else if (keyColumns && keyColumns.length > 0 && image) values = keyColumns.map((c) => image[c]);
  if (!values || values.length === 0) return undefined;
  if (values.length === 1) return keyText(values[0]);
  return JSON.stringify(values.map((v) => v ?? null));
}

/** One key column's value as the key text (undefined for NULL). */
function keyText(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/**
 * The events of one outbox row (a statement's changed rows, or one published event), in order.
 * `installation`: this database's name, the first part of each id (eventId).
 */
export function outboxEvents(row: OutboxRow, installation: string): Envelope[] {
  const at = iso(row.at);
  if (row.source !== 'table') {
    // A published event, or a NOTIFY event sent back from the dead letters (no number, no transaction).
    const seq = row.origin_uid !== null && row.origin_id === null ? undefined : (row.origin_id ?? row.id);
    return [
      {
        id: row.origin_uid ?? eventId(installation, seq as string),
        ...(seq !== undefined ? { seq } : {}),
        source: row.source,
        channel: row.channel,
        ...(row.key !== null ? { key: row.key } : {}),
        payload: row.payload,
        at,
        ...(row.source === 'publish' ? { txid: row.xid } : {}),
      },
    ];
  }
  type Image = Record<string, unknown> | null;
  // (One loop, one object per event: a backlog drains hundreds of thousands of these.)
  const envelope = (seq: string, image: Image, old: Image, keySlot: unknown): Envelope => {
    const e = {
      id: eventId(installation, seq),
      seq,
      source: 'table',
      channel: row.channel,
      op: row.op ?? undefined,
      schema: row.schema_name ?? undefined,
      table: row.table_name ?? undefined,
      key: rowKey(keySlot, image ?? old, row.key_columns),
      new: image,
      old,
      at,
      txid: row.xid,
    } as { key?: string } & Omit<Envelope, 'key'>;
    if (e.key === undefined) delete e.key;
    return e as Envelope;
  };
  if (row.event_ids === null) {
    return [envelope(String(row.origin_id ?? row.id), (row.new ?? null) as Image, (row.old ?? null) as Image, row.keys ?? null)];
  }
  const item = (list: unknown, i: number) => (Array.isArray(list) ? (list[i] ?? null) : null);
  const out: Envelope[] = new Array(row.event_ids.length);
  for (let i = 0; i < row.event_ids.length; i++) {
    out[i] = envelope(String(row.event_ids[i]), item(row.new, i) as Image, item(row.old, i) as Image, item(row.keys, i));
  }
  return out;
}

/** A backlog or dead-letter row (one event) as its envelope. */
export function rowEnvelope(row: EventRow, _installation: string): Envelope {
  const at = iso(row.at);
  const seq = row.event_id ?? undefined;
  const common = {
    id: row.event_uid,
    ...(seq !== undefined ? { seq } : {}),
    channel: row.channel,
    ...(row.key !== null ? { key: row.key } : {}),
    at,
    ...(row.xid !== null && row.source !== 'notify' ? { txid: row.xid } : {}),
  };
  if (row.source === 'table') {
    return {
      ...common,
      source: 'table',
      op: row.op ?? undefined,
      schema: row.schema_name ?? undefined,
      table: row.table_name ?? undefined,
      new: row.new,
      old: row.old,
    };
  }
  return { ...common, source: row.source, payload: row.payload };
}

/** Text that can go into a `text` column: no NUL, no unpaired surrogate (error messages quote receivers). */
export function storableText(text: string): string {
  // (String.prototype.toWellFormed: Node 20 has it, TypeScript's ES2022 lib does not know it.)
  return (text.replaceAll('\u0000', '\uFFFD') as unknown as { toWellFormed(): string }).toWellFormed();
}

/** JSON text of a row image or payload, for FLUSH (see RECORD); null stays SQL NULL. */
function jsonText(value: unknown): string | null {
  return value === undefined || value === null ? null : JSON.stringify(value);
}

/** An event as the JSON record FLUSH writes into the backlog or the dead letters. */
export function eventRecord(e: Envelope): Record<string, unknown> {
  return {
    event_id: e.seq ?? null,
    event_uid: e.id,
    xid: e.txid ?? null,
    at: e.at,
    source: e.source,
    channel: e.channel,
    op: e.op ?? null,
    schema_name: e.schema ?? null,
    table_name: e.table ?? null,
    key: e.key === undefined ? null : storableText(e.key),
    new: jsonText(e.new),
    old: jsonText(e.old),
    // (A NOTIFY payload that is not JSON is a string: kept as a JSON string.)
    payload: e.source === 'table' ? null : jsonText(e.payload),
  };
}
