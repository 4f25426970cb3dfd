import pg from 'pg';
import { resolveCaptures } from '../capture/catalog.js';
import { captureSpecsFromConfig, parseQualifiedName, type CaptureSpec, type ColumnSelection } from '../capture/spec.js';
import { quoteIdent, quoteLiteral } from '../capture/sql.js';
import { ConfigError, errorMessage } from '../errors.js';
import { describeConnection } from '../pg/connection.js';
import { databaseFor, type DatabaseOptions } from './database.js';
import type { CommandIO } from './io.js';
import { createProgress } from './progress.js';
import { loadConfigFor } from './run.js';

export interface BackfillOptions extends DatabaseOptions {
  /** `table`, `schema.table` or quoted forms. */
  readonly table: string;
  /** SQL condition on the table's rows (alias-free column names). */
  readonly where?: string;
  /** Rows per batch (one transaction each). Default 1000. */
  readonly batch?: number;
  /** Discard an unfinished backfill of this table and start over. */
  readonly restart?: boolean;
  /** Stop (resumable) after this many batches; for pacing a big backfill. Default: no limit. */
  readonly maxBatches?: number;
}

interface Plan {
  readonly schema: string;
  readonly table: string;
  /** Columns the rows are walked by (unique together), with their SQL types. */
  readonly walk: readonly { readonly name: string; readonly type: string }[];
  /** The ordering key columns envelopes get (the capture key, else the primary key). */
  readonly key: readonly string[];
  readonly columns: ColumnSelection;
}

interface TableFacts {
  pk: string[];
  types: Record<string, string>;
  unique: boolean;
}

async function tableFacts(client: pg.Client, schema: string, table: string, key: readonly string[]): Promise<TableFacts> {
  const { rows } = await client.query<{ pk: string[]; types: Record<string, string>; unique: boolean }>(
    `
    WITH rel AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
    SELECT
      array(SELECT a.attname::text FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = rel.oid AND i.indisprimary ORDER BY k.ord) AS pk,
      (SELECT json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod)) FROM pg_attribute a
       WHERE a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped) AS types,
      EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel.oid AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
              AND (SELECT array_agg(a.attname::text) FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) <@ $3::text[]) AS unique
    FROM rel`,
    [schema, table, key],
  );
  const row = rows[0];
  if (!row) throw new ConfigError(`backfill: table ${schema}.${table} does not exist`);
  return row;
}

/** The capture entry for the table (its key and column selection), or the table as it is. */
async function plan(client: pg.Client, options: BackfillOptions, io: CommandIO): Promise<Plan> {
  let name: { schema: string; table: string };
  try {
    name = parseQualifiedName(options.table);
  } catch (error) {
    throw new ConfigError(`backfill: ${errorMessage(error)}`);
  }
  let spec: CaptureSpec = { origin: `backfill ${options.table}`, ...name, operations: { insert: '*' }, mode: 'statement' };
  if (options.config) {
    const specs = captureSpecsFromConfig(loadConfigFor(options.config, io).capture, options.config);
    const resolved = await resolveCaptures(client, specs).catch(() => undefined);
    const match =
      resolved?.find((r) => r.schema === name.schema && r.table === name.table) ??
      specs.find((s) => s.schema === name.schema && s.table === name.table);
    if (match) spec = match;
  }
  const [resolved] = await resolveCaptures(client, [spec]).catch((error: unknown) => {
    throw new ConfigError(`backfill: ${errorMessage(error).replace(/^cannot generate capture triggers:\s*-?\s*/, '')}`);
  });
  if (!resolved) throw new ConfigError(`backfill: table ${options.table} not found`);
  const facts = await tableFacts(client, resolved.schema, resolved.table, resolved.key);
  // Walk by the key, made unique with the primary key's remaining columns (a capture key need not be unique).
  const walk = [...resolved.key, ...facts.pk.filter((c) => !resolved.key.includes(c))];
  if (walk.length === 0 || (facts.pk.length === 0 && !facts.unique)) {
    throw new ConfigError(
      `backfill: ${resolved.schema}.${resolved.table} needs a primary key, or a capture key backed by a unique index, to be walked in key order`,
    );
  }
  const ops = resolved.operations;
  return {
    schema: resolved.schema,
    table: resolved.table,
    walk: walk.map((c) => ({ name: c, type: facts.types[c] as string })),
    key: resolved.key,
    columns: ops.insert ?? ops.update ?? ops.delete ?? '*',
  };
}

/**
 * One batch, one statement: the next rows after the cursor in key order become outbox rows of op
 * READ (event ids from the outbox sequence in key order, chunks of at most 1000 rows, inserted in
 * order so the drain delivers them in key order), and the cursor moves — all in the caller's
 * transaction. $1 cursor (text[] or NULL), $2 batch size.
 */
function batchSql(p: Plan, where: string): string {
  const col = (c: string) => `t.${quoteIdent(c)}`;
  let image: string;
  let keys: string | undefined;
  if (p.columns === '*') {
    image = 'row_to_json(t)';
  } else {
    const groups: string[] = [];
    // json(b)_build_object takes at most 100 arguments.
    for (let i = 0; i < p.columns.length; i += 50) {
      groups.push(
        `jsonb_build_object(${p.columns
          .slice(i, i + 50)
          .map((c) => `${quoteLiteral(c)}, ${col(c)}`)
          .join(', ')})`,
      );
    }
    image = `(${groups.join(' || ')})::json`;
    // The image may leave the key out: its values travel beside it, as the capture triggers do.
    if (p.key.length > 0) keys = `json_build_array(${p.key.map(col).join(', ')})`;
  }
  const walkCols = p.walk.map((w) => col(w.name)).join(', ');
  const cursor = p.walk.map((w, i) => `($1::text[])[${i + 1}]::${w.type}`).join(', ');
  const keyColumns =
    p.key.length === 0 ? 'NULL::text[]' : `${quoteLiteral(`{${p.key.map((k) => `"${k.replace(/["\\]/g, (ch) => `\\${ch}`)}"`).join(',')}}`)}::text[]`;
  const ident = `${quoteLiteral(p.schema)}, ${quoteLiteral(p.table)}`;
  return `
WITH batch AS (
  SELECT nextval('sidekick.outbox_id_seq') AS id, b.x, b.k, b.cur FROM (
    SELECT ${image} AS x, ${keys ?? 'NULL::json'} AS k, ARRAY[${p.walk.map((w) => `${col(w.name)}::text`).join(', ')}] AS cur
    FROM ${quoteIdent(p.schema)}.${quoteIdent(p.table)} AS t
    WHERE (${where}) AND ($1::text[] IS NULL OR (${walkCols}) > (${cursor}))
    ORDER BY ${walkCols}
    LIMIT $2
  ) b
), ins AS (
  INSERT INTO sidekick.outbox (source, channel, op, schema_name, table_name, key_columns, event_ids, new${keys ? ', keys' : ''})
  SELECT 'table', ${quoteLiteral(`${p.schema}.${p.table}`)}, 'READ', ${ident}, ${keyColumns},
         array_agg(id ORDER BY id), json_agg(x ORDER BY id)${keys ? ', json_agg(k ORDER BY id)' : ''}
  FROM batch
  GROUP BY id / 1000, CASE WHEN octet_length(x::text) > 262144 THEN id ELSE 0 END
  ORDER BY min(id)
  RETURNING 1
), moved AS (
  UPDATE sidekick.backfills
  SET last_key = coalesce((SELECT cur FROM batch ORDER BY id DESC LIMIT 1), last_key),
      rows_done = rows_done + (SELECT count(*) FROM batch), updated_at = now(),
      done_at = CASE WHEN (SELECT count(*) FROM batch) < $2 THEN now() END
  WHERE schema_name = ${quoteLiteral(p.schema)} AND table_name = ${quoteLiteral(p.table)}
  RETURNING rows_done, done_at, last_key
)
SELECT (SELECT count(*) FROM batch)::int AS n, (SELECT count(*) FROM ins)::int AS chunks, rows_done, done_at IS NOT NULL AS done, last_key FROM moved`;
}

/**
 * `sidekick backfill <table> [--where SQL]`: enqueues the table's existing rows as op READ events
 * into the outbox, in key order, one batch per transaction. The cursor moves in the batch's own
 * transaction, so an interrupted backfill (signal, lost connection, --max-batches) resumes after its
 * last finished batch when run again. A running bridge delivers the events like any row change.
 */
export async function backfillCommand(options: BackfillOptions, io: CommandIO): Promise<number> {
  const batch = options.batch ?? 1000;
  if (!Number.isInteger(batch) || batch < 1 || batch > 100_000)
    throw new ConfigError(`--batch must be a whole number from 1 to 100000, got ${options.batch}`);
  const maxBatches = options.maxBatches ?? Number.POSITIVE_INFINITY;
  if (options.maxBatches !== undefined && (!Number.isInteger(maxBatches) || maxBatches < 1)) {
    throw new ConfigError(`--max-batches must be a positive whole number, got ${options.maxBatches}`);
  }
  const where = options.where?.trim() ?? '';
  const connection = databaseFor(options, io);
  const client = new pg.Client({ ...connection, application_name: 'sidekick backfill' });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (error) {
    throw new ConfigError(`backfill: cannot connect to ${describeConnection(connection, io.env)}: ${errorMessage(error)}`);
  }
  try {
    const installed = await client.query<{ ok: boolean; outbox: boolean }>(
      `SELECT to_regclass('sidekick.backfills') IS NOT NULL AS ok, to_regclass('sidekick.outbox') IS NOT NULL AS outbox`,
    );
    if (!installed.rows[0]?.ok) {
      throw new ConfigError(
        installed.rows[0]?.outbox
          ? 'backfill: the sidekick schema predates backfills: run `sidekick install` to upgrade it'
          : 'backfill: pg-sidekick is not installed in this database: run `sidekick install`',
      );
    }
    const p = await plan(client, options, io);
    const label = `backfill ${p.schema}.${p.table}`;
    const walkNames = p.walk.map((w) => w.name);
    const existing = (
      await client.query<{ where_sql: string; key_columns: string[]; last_key: string[] | null; rows_done: string; done: boolean }>(
        'SELECT where_sql, key_columns, last_key, rows_done, done_at IS NOT NULL AS done FROM sidekick.backfills WHERE schema_name = $1 AND table_name = $2',
        [p.schema, p.table],
      )
    ).rows[0];
    let cursor: string[] | null = null;
    let doneBefore = 0;
    if (existing && !existing.done && !options.restart) {
      if (existing.where_sql !== where || JSON.stringify(existing.key_columns) !== JSON.stringify(walkNames)) {
        throw new ConfigError(
          `${label}: an unfinished backfill of this table used ${existing.where_sql ? `--where ${JSON.stringify(existing.where_sql)}` : 'no --where'} ` +
            `(walking ${existing.key_columns.join(', ')}); run it with the same options to resume, or add --restart to start over`,
        );
      }
      cursor = existing.last_key;
      doneBefore = Number(existing.rows_done);
      io.stderr.write(`${label}: resuming after ${doneBefore.toLocaleString('en-US')} rows\n`);
    } else {
      await client.query(
        `
        INSERT INTO sidekick.backfills (schema_name, table_name, where_sql, key_columns) VALUES ($1, $2, $3, $4)
        ON CONFLICT (schema_name, table_name) DO UPDATE SET where_sql = $3, key_columns = $4, last_key = NULL, rows_done = 0,
          started_at = now(), updated_at = now(), done_at = NULL`,
        [p.schema, p.table, where, walkNames],
      );
    }
    const sql = batchSql(p, where || 'true');
    // The total, for the progress bar: one count of what is left (with --where, exactly what will be sent).
    const remaining = await client
      .query<{ n: string }>(
        `SELECT count(*) AS n FROM ${quoteIdent(p.schema)}.${quoteIdent(p.table)} AS t WHERE (${where || 'true'}) AND ($1::text[] IS NULL OR ` +
          `(${p.walk.map((w) => `t.${quoteIdent(w.name)}`).join(', ')}) > ` +
          `(${p.walk.map((w, i) => `($1::text[])[${i + 1}]::${w.type}`).join(', ')}))`,
        [cursor],
      )
      .catch((error: unknown) => {
        throw new ConfigError(`${label}: ${where ? `--where ${JSON.stringify(where)}: ` : ''}${errorMessage(error)}`);
      });
    const progress = createProgress(io.stderr, label, doneBefore + Number(remaining.rows[0]?.n ?? 0));
    let done = doneBefore;
    let finished = false;
    let batches = 0;
    progress.update(done);
    while (!finished && batches < maxBatches && !io.signal.aborted) {
      await client.query('BEGIN');
      try {
        // The drain's scan bound needs every writer to hold its transaction id before it takes outbox ids.
        await client.query('SELECT pg_current_xact_id()');
        const { rows } = await client.query<{ n: number; rows_done: string; done: boolean; last_key: string[] | null }>(sql, [cursor, batch]);
        const r = rows[0];
        if (!r) throw new Error('the backfill row vanished (another backfill of this table with --restart?)');
        // Wakes a sleeping drain (one NOTIFY per batch: cheap, a backfill is no busy writer).
        await client.query(`SELECT pg_notify('sidekick', '')`);
        await client.query('COMMIT');
        done = Number(r.rows_done);
        finished = r.done;
        cursor = r.last_key;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw new ConfigError(
          `${label}: batch failed after ${done.toLocaleString('en-US')} rows (nothing of this batch was enqueued; run again to resume): ${errorMessage(error)}`,
          { cause: error },
        );
      }
      batches++;
      progress.update(done);
    }
    progress.finish(done);
    if (finished) {
      io.stdout.write(`${label}: enqueued ${done.toLocaleString('en-US')} rows as READ events; a running bridge delivers them\n`);
      return 0;
    }
    io.stdout.write(
      `${label}: stopped after ${done.toLocaleString('en-US')} rows${io.signal.aborted ? ' (interrupted)' : ` (--max-batches ${maxBatches})`}; run ` +
        `the same command again to resume\n`,
    );
    return io.signal.aborted ? 130 : 0;
  } finally {
    await client.end().catch(() => {});
  }
}
