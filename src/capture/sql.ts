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

/** The key text from a row's jsonb: one column → its text; several → a JSON array of the values. */
function keyExpression(key: readonly string[], row: string): string {
  if (key.length === 0) return 'NULL::text';
  if (key.length === 1) return `${row} ->> ${quoteLiteral(key[0] as string)}`;
  return `jsonb_build_array(${key.map((k) => `${row} -> ${quoteLiteral(k)}`).join(', ')})::text`;
}

/**
 * The row's image with the selected columns. Columns are picked from the row's jsonb by name, so a
 * column renamed or dropped later yields null instead of failing the application's write.
 */
function selectExpression(selection: ColumnSelection, row: string): string {
  if (selection === '*') return row;
  // jsonb_build_object takes at most 100 arguments: chain groups of 50 columns.
  const groups: string[] = [];
  for (let i = 0; i < selection.length; i += 50) {
    const pairs = selection.slice(i, i + 50).map((c) => `${quoteLiteral(c)}, ${row} -> ${quoteLiteral(c)}`);
    groups.push(`jsonb_build_object(${pairs.join(', ')})`);
  }
  return groups.join(' || ');
}

const CHANNEL = `TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME`;
/** Wake a sleeping drain. Only while one sleeps: a NOTIFY in every transaction would serialise commits. */
function wake(condition: string): string {
  return `IF ${condition}EXISTS (SELECT 1 FROM sidekick.drain_idle WHERE idle_until > now()) THEN
    PERFORM pg_notify('sidekick', '');
  END IF;`;
}

function statementBody(c: ResolvedCapture, op: Operation, selection: ColumnSelection): string {
  const key = c.key;
  if (op === 'insert' || op === 'delete') {
    const image = op === 'insert' ? 'new' : 'old';
    return `BEGIN
  INSERT INTO sidekick.outbox (source, channel, op, schema_name, table_name, key, ${image})
  SELECT 'table', ${CHANNEL}, '${op.toUpperCase()}', TG_TABLE_SCHEMA, TG_TABLE_NAME,
         ${keyExpression(key, 'r.x')}, ${selectExpression(selection, 'r.x')}
  FROM (SELECT to_jsonb(t) AS x FROM sidekick_${image} AS t) AS r;
  ${wake('FOUND AND ')}
  RETURN NULL;
END`;
  }
  // UPDATE: PostgreSQL fills the old and new transition tables together, one row at a time, so the
  // n-th old row and the n-th new row are the same row (whatever happened to its key, and with or
  // without a primary key). The FULL JOIN keeps an unpaired row rather than dropping it.
  return `BEGIN
  INSERT INTO sidekick.outbox (source, channel, op, schema_name, table_name, key, new, old)
  SELECT 'table', ${CHANNEL}, 'UPDATE', TG_TABLE_SCHEMA, TG_TABLE_NAME,
         ${keyExpression(key, 'coalesce(n.x, o.x)')}, ${selectExpression(selection, 'n.x')}, ${selectExpression(selection, 'o.x')}
  FROM (SELECT row_number() OVER () AS r, to_jsonb(t) AS x FROM sidekick_new AS t) AS n
  FULL JOIN (SELECT row_number() OVER () AS r, to_jsonb(t) AS x FROM sidekick_old AS t) AS o ON o.r = n.r
  ORDER BY coalesce(n.r, o.r);
  ${wake('FOUND AND ')}
  RETURN NULL;
END`;
}

function rowBody(c: ResolvedCapture, op: Operation, selection: ColumnSelection): string {
  const key = c.key;
  if (op === 'insert' || op === 'delete') {
    const image = op === 'insert' ? 'new' : 'old';
    return `DECLARE
  x jsonb := to_jsonb(${image.toUpperCase()});
BEGIN
  INSERT INTO sidekick.outbox (source, channel, op, schema_name, table_name, key, ${image})
  VALUES ('table', ${CHANNEL}, '${op.toUpperCase()}', TG_TABLE_SCHEMA, TG_TABLE_NAME,
          ${keyExpression(key, 'x')}, ${selectExpression(selection, 'x')});
  ${wake('')}
  RETURN NULL;
END`;
  }
  return `DECLARE
  n jsonb := to_jsonb(NEW);
  o jsonb := to_jsonb(OLD);
BEGIN
  INSERT INTO sidekick.outbox (source, channel, op, schema_name, table_name, key, new, old)
  VALUES ('table', ${CHANNEL}, 'UPDATE', TG_TABLE_SCHEMA, TG_TABLE_NAME,
          ${keyExpression(key, 'n')}, ${selectExpression(selection, 'n')}, ${selectExpression(selection, 'o')});
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
