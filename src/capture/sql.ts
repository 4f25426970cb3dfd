import { createHash } from 'node:crypto';
import type { ResolvedCapture } from './catalog.js';
import { WAKE_MODULUS, WAKE_WINDOW } from '../outbox/queries.js';
import { OPERATIONS, type ColumnSelection, type Operation } from './spec.js';
import { quoteIdent, quoteLiteral } from '../pg/quote.js';

export { quoteIdent, quoteLiteral };

/** PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes. */
export const MAX_IDENTIFIER_BYTES = 63;

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
  const hash = createHash('sha256')
    .update(JSON.stringify([schema, table]))
    .digest('hex')
    .slice(0, 8);
  const suffix = `~${hash}:${op}`;
  return truncateBytes(`${schema}.${table}`, MAX_IDENTIFIER_BYTES - byteLength(suffix)) + suffix;
}

function qualifiedTable(c: { schema: string; table: string }): string {
  return `${quoteIdent(c.schema)}.${quoteIdent(c.table)}`;
}

function qualifiedFunction(c: { schema: string; table: string }, op: Operation): string {
  return `sidekick.${quoteIdent(functionName(c.schema, c.table, op))}`;
}

/** A text[] literal of these values. */
function textArrayLiteral(values: readonly string[]): string {
  return `${quoteLiteral(`{${values.map((v) => `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`).join(',')}}`)}::text[]`;
}

/** A text[] literal of the key columns (the drain reads each row's key from its image), or NULL. */
function keyColumnsLiteral(key: readonly string[]): string {
  return key.length === 0 ? 'NULL::text[]' : textArrayLiteral(key);
}

/**
 * Row images. `*` takes the whole row with row_to_json (cheap, and a column renamed or dropped later
 * simply changes the image). A column list picks columns from the row's jsonb by name, so a column
 * renamed or dropped later yields null instead of failing the application's write; the list may
 * leave the key out, so the key columns' values travel beside it (`keys`).
 */
interface Image {
  /** The expression of a row's value to pick from (over the row variable `t`, NEW or OLD). */
  readonly source: (row: string) => string;
  readonly sourceType: 'json' | 'jsonb';
  readonly image: (value: string) => string;
  /** The key columns' values, or undefined when the drain reads the key from the image. */
  readonly keys: ((value: string) => string) | undefined;
}

function imageOf(selection: ColumnSelection, key: readonly string[]): Image {
  if (selection === '*') return { source: (row) => `row_to_json(${row})`, sourceType: 'json', image: (v) => v, keys: undefined };
  const groups: string[] = [];
  // jsonb_build_object takes at most 100 arguments: chain groups of 50 columns.
  for (let i = 0; i < selection.length; i += 50) {
    groups.push(
      `jsonb_build_object(${selection
        .slice(i, i + 50)
        .map((c) => `${quoteLiteral(c)}, %V% -> ${quoteLiteral(c)}`)
        .join(', ')})`,
    );
  }
  return {
    source: (row) => `to_jsonb(${row})`,
    sourceType: 'jsonb',
    image: (v) => `(${groups.join(' || ').replace(/%V%/g, v)})::json`,
    keys: key.length === 0 ? undefined : (v) => `json_build_array(${key.map((k) => `${v} -> ${quoteLiteral(k)}`).join(', ')})`,
  };
}

const DECLARE = `DECLARE
  v_wake boolean;`;

/**
 * The capture filters (`where`, `changed`) as pieces of the trigger's SQL. `where` is the user's own
 * expression, pasted in as written (checked to be one expression, and planned against the table, when
 * the triggers are generated: catalog.ts); bare column names resolve against the row, aliased `t`.
 * PL/pgSQL would read a column that shares a name with one of its variables (v_wake, x, n, o) as
 * ambiguous: `#variable_conflict use_column` makes it the column, as it is in the validation.
 */
interface Filters {
  readonly where: string | undefined;
  readonly changed: readonly string[] | undefined;
  /** Prepended to the function body when a filter is set. */
  readonly pragma: string;
}

function filtersOf(c: ResolvedCapture, op: Operation): Filters {
  const where = c.where;
  const changed = op === 'update' ? c.changed : undefined;
  return { where, changed, pragma: where !== undefined || changed ? '#variable_conflict use_column\n' : '' };
}

/** ROW(r.a, r.b) of the `changed` columns. */
function changedRow(changed: readonly string[], row: string): string {
  return `ROW(${changed.map((col) => `${row}.${quoteIdent(col)}`).join(', ')})`;
}

/**
 * Wake a sleeping drain: NOTIFY when an id this statement took is one of those that follow the
 * drain's wake-up mark (sidekick.arm_wakeup in sql/002_outbox.sql) — the first writers after it fell asleep (no
 * statement straddles a mark: it is set while none writes the outbox). The test needs nothing but
 * an id just taken: a NOTIFY in every transaction would serialise commits, and a look at a shared
 * flag in every transaction costs each writer more than the arithmetic.
 */
const IN_WINDOW = (id: string) => `${id} % ${WAKE_MODULUS} < ${WAKE_WINDOW}`;
const RETURNING_WAKE = `RETURNING ${IN_WINDOW('id')} INTO v_wake`;
/** The last id this session took: right after an insert, the id of its last row. */
const LAST_ID = "currval('sidekick.outbox_id_seq')";
/** A statement that writes several outbox rows takes its first id up front, for the test alone. */
const FIRST_ID_WAKE = `v_wake := ${IN_WINDOW("nextval('sidekick.outbox_id_seq')")};`;
const NOTIFY = "PERFORM pg_notify('sidekick', '');";
const WAKE = `IF v_wake THEN
    ${NOTIFY}
  END IF;`;

/**
 * Chunks: event ids come from the outbox sequence in scan order; chunks are ranges of 1000 ids (so
 * at most 1000 rows), and a row image over 256 kB gets a chunk of its own: no outbox value ever
 * nears PostgreSQL's 1 GB limit. (One statement changes a key once: chunk order does not matter.)
 */
const CHUNK = (size: string, id: string) => `GROUP BY ${id} / 1000, CASE WHEN ${size} > 262144 THEN ${id} ELSE 0 END`;

/**
 * Every column of sidekick.row_changes (sql/002_outbox.sql), in table order: where a capture
 * writes a row change that travels alone. The table is narrow because its width is what a one-row
 * insert costs the application's write. The insert names every column, in order: an INSERT …
 * SELECT … LIMIT keeps its SELECT as a subquery, and only when the SELECT gives every column as it
 * is stored can the planner drop that subquery's scan node.
 */
export const ROW_CHANGE_COLUMNS = ['id', 'xid', 'at', 'capture', 'new', 'old', 'keys'] as const;

/** What a capture function's row changes are: {op, schema, table, key column, ...} (a constant). */
function captureLiteral(c: ResolvedCapture, op: Operation): string {
  return textArrayLiteral([op.toUpperCase(), c.schema, c.table, ...c.key]);
}

/** INSERT INTO sidekick.row_changes, with the values of one row change in ROW_CHANGE_COLUMNS order. */
function rowChangeInsert(c: ResolvedCapture, op: Operation, v: { new?: string; old?: string; keys?: string }): { into: string; values: string } {
  const value: Record<(typeof ROW_CHANGE_COLUMNS)[number], string> = {
    id: "nextval('sidekick.outbox_id_seq')",
    xid: 'pg_current_xact_id()',
    at: 'now()',
    capture: captureLiteral(c, op),
    new: v.new ?? 'NULL::json',
    old: v.old ?? 'NULL::json',
    keys: v.keys ?? 'NULL::json',
  };
  return {
    into: `INSERT INTO sidekick.row_changes (${ROW_CHANGE_COLUMNS.join(', ')})`,
    values: ROW_CHANGE_COLUMNS.map((column) => value[column]).join(', '),
  };
}

/** The leading values of a chunk's outbox row: op, schema_name, table_name, key_columns. */
function chunkHead(c: ResolvedCapture, op: Operation): string {
  return `'${op.toUpperCase()}', ${quoteLiteral(c.schema)}, ${quoteLiteral(c.table)}, ${keyColumnsLiteral(c.key)}`;
}

function statementBody(c: ResolvedCapture, op: Operation, selection: ColumnSelection): string {
  const img = imageOf(selection, c.key);
  const f = filtersOf(c, op);
  if (op === 'insert' || op === 'delete') return `${f.pragma}${insertDeleteBody(c, op, img, f.where)}`;
  return f.where !== undefined || f.changed ? `${f.pragma}${filteredUpdateBody(c, img, f)}` : updateBody(c, img);
}

function insertDeleteBody(c: ResolvedCapture, op: 'insert' | 'delete', img: Image, where: string | undefined): string {
  const head = chunkHead(c, op);
  const transition = op === 'insert' ? 'sidekick_new' : 'sidekick_old';
  const column = op === 'insert' ? 'new' : 'old';
  const columns = `op, schema_name, table_name, key_columns, ${column}${img.keys ? ', keys' : ''}`;
  const one = rowChangeInsert(c, op, { [column]: img.image('t.x'), keys: img.keys?.('t.x') });
  // A filtered-out row is never read past the scan: both scans apply `where` to the transition
  // table in its stored order, so LIMIT 2 and OFFSET 2 split the same matching rows. When none
  // matches, the first insert writes nothing (v_rows = 0): no id taken, no NOTIFY.
  const filter = where === undefined ? '' : ` WHERE (${where})`;
  // Most statements change one row. Its event is written as it is, with no test of the row count
  // first: the first two rows are written one row_changes row each (LIMIT 2), and only a
  // statement that had a second row goes on to write the rest (OFFSET 2) in outbox chunks. The row count of the
  // first insert is all it takes to know which case this is. (Both scans read the transition
  // table in its stored order.) A test for "no second row" before the insert cost more than the
  // insert's LIMIT: see docs/outbox.md.
  return `${DECLARE}
  v_rows bigint;
BEGIN
  ${one.into}
  SELECT ${one.values}
  FROM (SELECT ${img.source('t')} AS x FROM ${transition} AS t${filter}) AS t
  LIMIT 2;
  GET DIAGNOSTICS v_rows = ROW_COUNT;
  IF v_rows = 1 THEN
    IF ${IN_WINDOW(LAST_ID)} THEN
      ${NOTIFY}
    END IF;
  ELSIF v_rows = 2 THEN
    -- Of the two ids just taken, the test looks at the later one: the earlier one is at most 1 less
    -- unless other writers took ids in between, and those run the test themselves.
    v_wake := ${IN_WINDOW(LAST_ID)};
    INSERT INTO sidekick.outbox (${columns.replace(`${column}`, `event_ids, ${column}`)})
    SELECT ${head}, array_agg(c.id), json_agg(${img.image('c.x')})${img.keys ? `, json_agg(${img.keys('c.x')})` : ''}
    FROM (SELECT nextval('sidekick.outbox_id_seq') AS id, ${img.source('t')} AS x FROM ${transition} AS t${filter} OFFSET 2) AS c
    ${CHUNK('octet_length(c.x::text)', 'c.id')};
    IF v_wake THEN
      ${NOTIFY}
    END IF;
  END IF;
  RETURN NULL;
END`;
}

function updateBody(c: ResolvedCapture, img: Image): string {
  const op = 'update';
  const head = chunkHead(c, op);
  // UPDATE: the old and new images come in pairs. PostgreSQL fills the old and new transition
  // tables together, one row at a time, so the n-th old row and the n-th new row are the same row
  // (whatever happened to its key, and with or without a primary key). A one-row statement (the
  // common case) pairs them directly, behind a test that there is no second row; otherwise they are
  // paired by position, and the FULL JOIN keeps an unpaired row rather than dropping it.
  const columns = `op, schema_name, table_name, key_columns, new, old${img.keys ? ', keys' : ''}`;
  const one = rowChangeInsert(c, op, { new: img.image('n.x'), old: img.image('o.x'), keys: img.keys?.('n.x') });
  const updateKeys = img.keys ? `, json_agg(${img.keys('coalesce(c.n, c.o)')})` : '';
  return `${DECLARE}
BEGIN
  ${one.into}
  SELECT ${one.values}
  FROM (SELECT ${img.source('t')} AS x FROM sidekick_new AS t) AS n, (SELECT ${img.source('t')} AS x FROM sidekick_old AS t) AS o
  WHERE NOT EXISTS (SELECT 1 FROM sidekick_new OFFSET 1)
  ${RETURNING_WAKE};
  IF NOT FOUND THEN
    ${FIRST_ID_WAKE}
    INSERT INTO sidekick.outbox (${columns.replace('new, old', 'event_ids, new, old')})
    SELECT ${head}, array_agg(c.id), json_agg(${img.image('c.n')}), json_agg(${img.image('c.o')})${updateKeys}
    FROM (
      SELECT nextval('sidekick.outbox_id_seq') AS id, p.n, p.o
      FROM (
        SELECT n.x AS n, o.x AS o
        FROM (SELECT row_number() OVER () AS r, ${img.source('t')} AS x FROM sidekick_new AS t) AS n
        FULL JOIN (SELECT row_number() OVER () AS r, ${img.source('t')} AS x FROM sidekick_old AS t) AS o ON o.r = n.r
        ORDER BY coalesce(n.r, o.r)
      ) AS p
    ) AS c
    ${CHUNK("octet_length(coalesce(c.n::text, '')) + octet_length(coalesce(c.o::text, ''))", 'c.id')};
  END IF;
  ${WAKE}
  RETURN NULL;
END`;
}

/**
 * UPDATE with a filter: `where` over the new row, `changed` comparing the two. The rows are paired
 * first (the n-th old with the n-th new, by position in the whole statement), then filtered: a filter
 * before the pairing would shift the positions. Ids are taken only for the rows that pass, and the
 * wake-up test looks at those ids, so a statement whose rows all fail writes nothing and never NOTIFYs.
 */
function filteredUpdateBody(c: ResolvedCapture, img: Image, f: Filters): string {
  const head = chunkHead(c, 'update');
  const columns = `op, schema_name, table_name, key_columns, event_ids, new, old${img.keys ? ', keys' : ''}`;
  const one = rowChangeInsert(c, 'update', { new: img.image('n.x'), old: img.image('o.x'), keys: img.keys?.('n.x') });
  const updateKeys = img.keys ? `, json_agg(${img.keys('coalesce(c.n, c.o)')})` : '';
  const keep = f.where === undefined ? '' : `, (${f.where}) AS keep`;
  const chg = f.changed ? `, ${changedRow(f.changed, 't')} AS chg` : '';
  const side = (table: string, extra: string, numbered: boolean) =>
    `(SELECT ${numbered ? 'row_number() OVER () AS r, ' : ''}${img.source('t')} AS x${extra} FROM ${table} AS t)`;
  const pass: string[] = [];
  if (f.where !== undefined) pass.push('n.keep');
  if (f.changed) pass.push('n.chg IS DISTINCT FROM o.chg');
  // An unpaired row (PostgreSQL fills both tables together: none is expected) is kept, not lost.
  const pairedPass = [...(f.where !== undefined ? ['n.keep'] : []), ...(f.changed ? ['(o.r IS NULL OR n.chg IS DISTINCT FROM o.chg)'] : [])];
  return `${DECLARE}
BEGIN
  ${one.into}
  SELECT ${one.values}
  FROM ${side('sidekick_new', keep + chg, false)} AS n, ${side('sidekick_old', chg, false)} AS o
  WHERE NOT EXISTS (SELECT 1 FROM sidekick_new OFFSET 1) AND ${pass.join(' AND ')}
  ${RETURNING_WAKE};
  IF NOT FOUND AND EXISTS (SELECT 1 FROM sidekick_new OFFSET 1) THEN
    WITH w AS (
      INSERT INTO sidekick.outbox (${columns})
      SELECT ${head}, array_agg(c.id), json_agg(${img.image('c.n')}), json_agg(${img.image('c.o')})${updateKeys}
      FROM (
        SELECT nextval('sidekick.outbox_id_seq') AS id, p.n, p.o
        FROM (
          SELECT n.x AS n, o.x AS o
          FROM ${side('sidekick_new', keep + chg, true)} AS n
          FULL JOIN ${side('sidekick_old', chg, true)} AS o ON o.r = n.r
          WHERE n.r IS NULL OR (${pairedPass.join(' AND ')})
          ORDER BY coalesce(n.r, o.r)
        ) AS p
      ) AS c
      ${CHUNK("octet_length(coalesce(c.n::text, '')) + octet_length(coalesce(c.o::text, ''))", 'c.id')}
      RETURNING event_ids
    )
    SELECT bool_or(EXISTS (SELECT 1 FROM unnest(w.event_ids) AS i WHERE ${IN_WINDOW('i')})) INTO v_wake FROM w;
  END IF;
  ${WAKE}
  RETURN NULL;
END`;
}

function rowBody(c: ResolvedCapture, op: Operation, selection: ColumnSelection): string {
  const img = imageOf(selection, c.key);
  const f = filtersOf(c, op);
  // A row the filters turn away returns before anything is computed or written.
  const checks: string[] = [];
  if (f.changed)
    checks.push(`IF ${changedRow(f.changed, 'NEW')} IS NOT DISTINCT FROM ${changedRow(f.changed, 'OLD')} THEN\n    RETURN NULL;\n  END IF;`);
  if (f.where !== undefined) {
    const row = op === 'delete' ? 'OLD' : 'NEW';
    checks.push(`IF NOT EXISTS (SELECT 1 FROM (SELECT ${row}.*) AS t WHERE (${f.where})) THEN\n    RETURN NULL;\n  END IF;`);
  }
  // Column lists pick from the row's jsonb, computed once (after the filters, when there are some).
  const declare: string[] = [];
  const value = (record: 'NEW' | 'OLD', name: string) => {
    if (selection === '*') return img.source(record);
    if (checks.length > 0) {
      declare.push(`  ${name} jsonb;`);
      checks.push(`${name} := ${img.source(record)};`);
    } else {
      declare.push(`  ${name} jsonb := ${img.source(record)};`);
    }
    return name;
  };
  let one: { into: string; values: string };
  if (op === 'insert' || op === 'delete') {
    const v = value(op === 'insert' ? 'NEW' : 'OLD', 'x');
    one = rowChangeInsert(c, op, { [op === 'insert' ? 'new' : 'old']: img.image(v), keys: img.keys?.(v) });
  } else {
    const n = value('NEW', 'n');
    const o = value('OLD', 'o');
    one = rowChangeInsert(c, op, { new: img.image(n), old: img.image(o), keys: img.keys?.(n) });
  }
  return `${f.pragma}${[DECLARE, ...declare].join('\n')}
BEGIN
  ${checks.map((check) => `${check}\n  `).join('')}${one.into}
  VALUES (${one.values})
  ${RETURNING_WAKE};
  ${WAKE}
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
  const keyNote =
    c.key.length === 0
      ? 'no key (no primary key; set `key:` to order per row): events of this table are delivered in one ordered stream'
      : `key ${c.key.join(', ')} (${c.keySource})`;
  const filters = [
    ...(c.where !== undefined ? [`only rows where ${c.where.replace(/\s+/g, ' ')}`] : []),
    ...(c.changed && c.operations.update ? [`UPDATEs only when ${c.changed.join(', ')} change${c.changed.length > 1 ? '' : 's'}`] : []),
  ];
  const lines = [`-- ${c.schema}.${c.table} — from ${c.origin}; ${c.mode}-level; ${keyNote}${filters.map((x) => `; ${x}`).join('')}`];
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
    const referencing =
      c.mode === 'row'
        ? ''
        : op === 'insert'
          ? ' REFERENCING NEW TABLE AS sidekick_new'
          : op === 'delete'
            ? ' REFERENCING OLD TABLE AS sidekick_old'
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
  IF to_regclass('sidekick.row_changes') IS NULL THEN
    RAISE EXCEPTION 'the sidekick schema in this database is older than this pg-sidekick: run "sidekick install" first';
  END IF;
END $check$;`;

/** The statements that create (or update) the capture triggers, without BEGIN/COMMIT. */
export function captureStatements(captures: readonly ResolvedCapture[]): string {
  return [REQUIRE_INSTALLED, ...captures.map(captureOne)].join('\n\n');
}

/** The statements that remove the capture triggers and functions of these tables. */
export function dropStatements(captures: readonly { schema: string; table: string; origin?: string }[]): string {
  return captures
    .map((c) =>
      [
        `-- ${c.schema}.${c.table}${c.origin ? ` — from ${c.origin}` : ''}`,
        ...OPERATIONS.flatMap((op) => [
          `DROP TRIGGER IF EXISTS ${quoteIdent(triggerName(op))} ON ${qualifiedTable(c)};`,
          `DROP FUNCTION IF EXISTS ${qualifiedFunction(c, op)}();`,
        ]),
      ].join('\n'),
    )
    .join('\n\n');
}

/** A reviewable script: a header, BEGIN, the statements, COMMIT (so `psql -f` applies it atomically). */
export function script(title: string, statements: string): string {
  return `-- ${title}\n-- Generated by pg-sidekick. Review it, then apply it with --apply (one transaction) or psql -f.\nBEGIN;\n\n${statements}\n\nCOMMIT;\n`;
}
