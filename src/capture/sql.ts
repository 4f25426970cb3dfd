import { createHash } from 'node:crypto';
import type { ResolvedCapture } from './catalog.js';
import { OPERATIONS, type ColumnSelection, type Operation } from './spec.js';

/** PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes. */
export const MAX_IDENTIFIER_BYTES = 63;

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

function byteLength(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/** Cuts `text` to at most `max` UTF-8 bytes without splitting a character. */
function truncateBytes(text: string, max: number): string {
  let out = '';
  for (const ch of text) {
    if (byteLength(out + ch) > max) break;
    out += ch;
  }
  return out;
}

/** Trigger names are per table, so they can be short and fixed. */
export function triggerName(op: Operation): string {
  return `sidekick_capture_${op}`;
}

/**
 * The capture function's name in schema sidekick: `<schema>.<table>:<op>` (readable in `\df`). Names
 * longer than 63 bytes, or ones that could be read two ways (a schema with a dot), are cut and get a
 * hash of the full name, so two tables never share a function.
 */
export function functionName(schema: string, table: string, op: Operation): string {
  const readable = `${schema}.${table}:${op}`;
  const ambiguous = schema.includes('.') || schema.includes(':') || table.includes(':');
  if (!ambiguous && byteLength(readable) <= MAX_IDENTIFIER_BYTES) return readable;
  const hash = createHash('sha256').update(JSON.stringify([schema, table])).digest('hex').slice(0, 8);
  const suffix = `~${hash}:${op}`;
  return truncateBytes(`${schema}.${table}`, MAX_IDENTIFIER_BYTES - byteLength(suffix)) + suffix;
}

function qualifiedTable(c: { schema: string; table: string }): string {
  return `${quoteIdent(c.schema)}.${quoteIdent(c.table)}`;
}

function qualifiedFunction(c: { schema: string; table: string }, op: Operation): string {
  return `sidekick.${quoteIdent(functionName(c.schema, c.table, op))}`;
}

/** A text[] literal of the key columns (the drain reads each row's key from its image), or NULL. */
function keyColumnsLiteral(key: readonly string[]): string {
  if (key.length === 0) return 'NULL::text[]';
  return `${quoteLiteral(`{${key.map((k) => `"${k.replace(/["\\]/g, (c) => `\\${c}`)}"`).join(',')}}`)}::text[]`;
}

/**
 * Row images. `*` takes the whole row with row_to_json (cheap, and a column renamed or dropped later
 * simply changes the image). A column list picks columns from the row's jsonb by name, so a column
 * renamed or dropped later yields null instead of failing the application's write; it also carries
 * the key columns' values, which the list may leave out.
 */
interface Image { readonly source: string; readonly image: (row: string) => string; readonly key: (row: string) => string }

function imageOf(selection: ColumnSelection, key: readonly string[]): Image {
  if (selection === '*') return { source: 'row_to_json(t)', image: (row) => row, key: () => 'NULL' };
  const groups: string[] = [];
  // jsonb_build_object takes at most 100 arguments: chain groups of 50 columns.
  for (let i = 0; i < selection.length; i += 50) {
    groups.push(`jsonb_build_object(${selection.slice(i, i + 50).map((c) => `${quoteLiteral(c)}, %ROW% -> ${quoteLiteral(c)}`).join(', ')})`);
  }
  return {
    source: 'to_jsonb(t)',
    image: (row) => `(${groups.join(' || ').replace(/%ROW%/g, row)})::json`,
    key: (row) => (key.length === 0 ? 'NULL' : `json_build_array(${key.map((k) => `${row} -> ${quoteLiteral(k)}`).join(', ')})`),
  };
}

const DECLARE_CHANNEL = `DECLARE
  v_channel text := TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME;`;

const COLUMNS = 'source, channel, op, schema_name, table_name, key_columns';

/** Wake a sleeping drain. Only while one sleeps: a NOTIFY in every transaction would serialise commits. */
function wake(condition: string): string {
  return `IF ${condition}EXISTS (SELECT 1 FROM sidekick.drain_idle WHERE idle_until > now()) THEN
    PERFORM pg_notify('sidekick', '');
  END IF;`;
}

/**
 * Chunks of at most 1000 rows and about 8 MB: a huge statement becomes several outbox rows, none
 * near PostgreSQL's 1 GB value limit. Events keep the statement's order (ids and chunks ascend).
 */
function chunked(op: Operation, c: ResolvedCapture, elements: string): string {
  return `  INSERT INTO sidekick.outbox (${COLUMNS}, event_ids, rows)
  SELECT 'table', v_channel, '${op.toUpperCase()}', TG_TABLE_SCHEMA, TG_TABLE_NAME, ${keyColumnsLiteral(c.key)},
         array_agg(c.id ORDER BY c.r), json_agg(c.e ORDER BY c.r)
  FROM (
    SELECT b.r, b.e, nextval('sidekick.outbox_id_seq') AS id, (b.r - 1) / 1000 AS n,
           sum(octet_length(b.e::text)) OVER (ORDER BY b.r) / 8388608 AS size
    FROM (
${elements}
    ) AS b
  ) AS c
  GROUP BY c.n, c.size
  ORDER BY c.n, c.size;`;
}

function statementBody(c: ResolvedCapture, op: Operation, selection: ColumnSelection): string {
  const img = imageOf(selection, c.key);
  let elements: string;
  if (op === 'insert' || op === 'delete') {
    const table = op === 'insert' ? 'sidekick_new' : 'sidekick_old';
    const pair = op === 'insert' ? `${img.image('s.x')}, NULL` : `NULL, ${img.image('s.x')}`;
    elements = `      SELECT s.r, json_build_array(${img.key('s.x')}, ${pair}) AS e
      FROM (SELECT row_number() OVER () AS r, ${img.source} AS x FROM ${table} AS t) AS s`;
  } else {
    // PostgreSQL fills the old and new transition tables together, one row at a time, so the n-th
    // old row and the n-th new row are the same row (whatever happened to its key, and with or
    // without a primary key). The FULL JOIN keeps an unpaired row rather than dropping it.
    elements = `      SELECT coalesce(n.r, o.r) AS r, json_build_array(${img.key('coalesce(n.x, o.x)')}, ${img.image('n.x')}, ${img.image('o.x')}) AS e
      FROM (SELECT row_number() OVER () AS r, ${img.source} AS x FROM sidekick_new AS t) AS n
      FULL JOIN (SELECT row_number() OVER () AS r, ${img.source} AS x FROM sidekick_old AS t) AS o ON o.r = n.r`;
  }
  return `${DECLARE_CHANNEL}
BEGIN
${chunked(op, c, elements)}
  ${wake('FOUND AND ')}
  RETURN NULL;
END`;
}

function rowBody(c: ResolvedCapture, op: Operation, selection: ColumnSelection): string {
  const img = imageOf(selection, c.key);
  const value = (record: 'NEW' | 'OLD') => (selection === '*' ? `row_to_json(${record})` : `to_jsonb(${record})`);
  let declare: string;
  let element: string;
  if (op === 'insert' || op === 'delete') {
    declare = `  x ${selection === '*' ? 'json' : 'jsonb'} := ${value(op === 'insert' ? 'NEW' : 'OLD')};`;
    element = op === 'insert' ? `${img.key('x')}, ${img.image('x')}, NULL` : `${img.key('x')}, NULL, ${img.image('x')}`;
  } else {
    declare = `  n ${selection === '*' ? 'json' : 'jsonb'} := ${value('NEW')};
  o ${selection === '*' ? 'json' : 'jsonb'} := ${value('OLD')};`;
    element = `${img.key('n')}, ${img.image('n')}, ${img.image('o')}`;
  }
  return `${DECLARE_CHANNEL}
${declare}
BEGIN
  INSERT INTO sidekick.outbox (${COLUMNS}, rows)
  VALUES ('table', v_channel, '${op.toUpperCase()}', TG_TABLE_SCHEMA, TG_TABLE_NAME, ${keyColumnsLiteral(c.key)},
          json_build_array(json_build_array(${element})));
  ${wake('')}
  RETURN NULL;
END`;
}

/** A dollar-quote tag that does not occur in the body (column names are user data). */
function dollarQuote(body: string): string {
  let tag = '$sidekick$';
  for (let i = 1; body.includes(tag); i++) tag = `$sidekick${i}$`;
  return `${tag}\n${body}\n${tag}`;
}

function describeSelection(selection: ColumnSelection): string {
  return selection === '*' ? 'all columns' : selection.join(', ');
}

function captureOne(c: ResolvedCapture): string {
  const table = qualifiedTable(c);
  const keyNote = c.key.length === 0
    ? 'no key (no primary key; set `key:` to order per row): events of this table are delivered in one ordered stream'
    : `key ${c.key.join(', ')} (${c.keySource})`;
  const lines = [`-- ${c.schema}.${c.table} — from ${c.origin}; ${c.mode}-level; ${keyNote}`];
  for (const op of OPERATIONS) {
    const selection = c.operations[op];
    const fn = qualifiedFunction(c, op);
    const trigger = quoteIdent(triggerName(op));
    if (selection === undefined) {
      // Not captured (any more): remove what an earlier run may have created.
      lines.push(`DROP TRIGGER IF EXISTS ${trigger} ON ${table};`, `DROP FUNCTION IF EXISTS ${fn}();`);
      continue;
    }
    const body = c.mode === 'statement' ? statementBody(c, op, selection) : rowBody(c, op, selection);
    const referencing = c.mode === 'row' ? ''
      : op === 'insert' ? ' REFERENCING NEW TABLE AS sidekick_new'
        : op === 'delete' ? ' REFERENCING OLD TABLE AS sidekick_old'
          : ' REFERENCING OLD TABLE AS sidekick_old NEW TABLE AS sidekick_new';
    lines.push(
      `-- ${op}: ${describeSelection(selection)}`,
      `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger`,
      `LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS ${dollarQuote(body)};`,
      `REVOKE ALL ON FUNCTION ${fn}() FROM PUBLIC;`,
      `COMMENT ON FUNCTION ${fn}() IS ${quoteLiteral(`pg-sidekick capture: ${op} on ${c.schema}.${c.table}`)};`,
      `DROP TRIGGER IF EXISTS ${trigger} ON ${table};`,
      `CREATE TRIGGER ${trigger} AFTER ${op.toUpperCase()} ON ${table}${referencing}`,
      `  FOR EACH ${c.mode === 'row' ? 'ROW' : 'STATEMENT'} EXECUTE FUNCTION ${fn}();`,
    );
  }
  return lines.join('\n');
}

const REQUIRE_INSTALLED = `DO $check$ BEGIN
  IF to_regclass('sidekick.outbox') IS NULL THEN
    RAISE EXCEPTION 'pg-sidekick is not installed in this database: run "sidekick install" first';
  END IF;
END $check$;`;

/** The statements that create (or update) the capture triggers, without BEGIN/COMMIT. */
export function captureStatements(captures: readonly ResolvedCapture[]): string {
  return [REQUIRE_INSTALLED, ...captures.map(captureOne)].join('\n\n');
}

/** The statements that remove the capture triggers and functions of these tables. */
export function dropStatements(captures: readonly { schema: string; table: string; origin?: string }[]): string {
  return captures.map((c) => [
    `-- ${c.schema}.${c.table}${c.origin ? ` — from ${c.origin}` : ''}`,
    ...OPERATIONS.flatMap((op) => [
      `DROP TRIGGER IF EXISTS ${quoteIdent(triggerName(op))} ON ${qualifiedTable(c)};`,
      `DROP FUNCTION IF EXISTS ${qualifiedFunction(c, op)}();`,
    ]),
  ].join('\n')).join('\n\n');
}

/** A reviewable script: a header, BEGIN, the statements, COMMIT (so `psql -f` applies it atomically). */
export function script(title: string, statements: string): string {
  return `-- ${title}\n-- Generated by pg-sidekick. Review it, then apply it with --apply (one transaction) or psql -f.\nBEGIN;\n\n${statements}\n\nCOMMIT;\n`;
}
