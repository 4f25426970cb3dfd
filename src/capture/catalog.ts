import type pg from 'pg';
import { ConfigError } from '../errors.js';
import { quoteIdent } from '../pg/quote.js';
import { keyOrigin, OPERATIONS, whereProblem, type CaptureSpec } from './spec.js';

/** A capture spec checked against the database: the table exists, the columns and key are real. */
export interface ResolvedCapture extends CaptureSpec {
  /** Ordering key columns; empty when the table has no primary key and none was configured. */
  readonly key: readonly string[];
  readonly keySource: 'primary key' | 'config' | 'none';
  /** The table's columns, in order. */
  readonly tableColumns: readonly string[];
}

interface TableRow {
  schema: string;
  table: string;
  relkind: string;
  columns: string[];
  pk: string[];
}

const TABLE_SQL = `
SELECT n.nspname AS schema, c.relname AS table, c.relkind::text AS relkind,
  array(SELECT a.attname::text FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns,
  array(SELECT a.attname::text FROM pg_index i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
        WHERE i.indrelid = c.oid AND i.indisprimary ORDER BY k.ord) AS pk
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`;

async function findTable(client: pg.ClientBase, schema: string, table: string): Promise<TableRow | undefined> {
  const exact = await client.query<TableRow>(TABLE_SQL, [schema, table]);
  if (exact.rows[0]) return exact.rows[0];
  // skor wrote names unquoted, so PostgreSQL folded them to lower case; do the same as a fallback.
  if (schema.toLowerCase() !== schema || table.toLowerCase() !== table) {
    const folded = await client.query<TableRow>(TABLE_SQL, [schema.toLowerCase(), table.toLowerCase()]);
    return folded.rows[0];
  }
  return undefined;
}

/**
 * Plans `sql` (an EXPLAIN, which runs nothing) through the extended protocol, which takes exactly one
 * statement, with the search_path the capture functions pin: a name the trigger could not resolve
 * fails here too. Returns PostgreSQL's complaint, or undefined.
 */
async function planProblem(client: pg.ClientBase, sql: string): Promise<string | undefined> {
  const { rows } = await client.query<{ path: string }>('SELECT pg_catalog.current_setting($1) AS path', ['search_path']);
  await client.query("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)");
  try {
    await client.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.query("SELECT pg_catalog.set_config('search_path', $1, false)", [rows[0]?.path ?? '"$user", public']);
  }
}

/** Checks `where` and `changed` against the table, as the trigger will use them. */
async function filterProblems(client: pg.ClientBase, spec: CaptureSpec, found: TableRow): Promise<string[]> {
  const problems: string[] = [];
  const table = `${quoteIdent(found.schema)}.${quoteIdent(found.table)}`;
  if (spec.changed) {
    const at = keyOrigin(spec, 'changed');
    const unknown = spec.changed.filter((c) => !found.columns.includes(c));
    if (unknown.length > 0) {
      problems.push(
        `${at}: unknown column${unknown.length > 1 ? 's' : ''} ${unknown.map((c) => `"${c}"`).join(', ')} in ` +
          `${found.schema}.${found.table} (columns: ${found.columns.join(', ')})`,
      );
    } else {
      const row = (alias: string) => `ROW(${spec.changed?.map((c) => `${alias}.${quoteIdent(c)}`).join(', ')})`;
      const problem = await planProblem(client, `EXPLAIN SELECT 1 FROM ${table} AS n, ${table} AS o WHERE ${row('n')} IS DISTINCT FROM ${row('o')}`);
      if (problem) problems.push(`${at}: the columns cannot be compared: ${problem}`);
    }
  }
  if (spec.where !== undefined) {
    // The same alias as the trigger's (t): a column by name, or t.column.
    const problem = whereProblem(spec.where) ?? (await planProblem(client, `EXPLAIN SELECT 1 FROM ${table} AS t WHERE (${spec.where})`));
    if (problem) problems.push(`${keyOrigin(spec, 'where')}: ${problem} (in ${JSON.stringify(spec.where)})`);
  }
  return problems;
}

/**
 * Looks every spec up in the catalog. Errors (missing table, unknown column or key column, a view, a
 * `where` or `changed` the database refuses) name the entry they come from; all problems are reported
 * at once.
 */
export async function resolveCaptures(client: pg.ClientBase, specs: readonly CaptureSpec[]): Promise<ResolvedCapture[]> {
  const problems: string[] = [];
  const resolved: ResolvedCapture[] = [];
  const seen = new Map<string, string>();
  for (const spec of specs) {
    const found = await findTable(client, spec.schema, spec.table);
    if (!found) {
      problems.push(`${spec.origin}: table ${spec.schema}.${spec.table} does not exist`);
      continue;
    }
    if (found.relkind !== 'r' && found.relkind !== 'p') {
      problems.push(`${spec.origin}: ${found.schema}.${found.table} is not a table (capture triggers need a table or a partitioned table)`);
      continue;
    }
    const id = JSON.stringify([found.schema, found.table]);
    const previous = seen.get(id);
    if (previous) {
      problems.push(`${spec.origin}: table ${found.schema}.${found.table} is already captured by ${previous}; merge the two entries`);
      continue;
    }
    seen.set(id, spec.origin);
    const columns = new Set(found.columns);
    let bad = false;
    for (const op of OPERATIONS) {
      const selection = spec.operations[op];
      if (selection === undefined || selection === '*') continue;
      const unknown = selection.filter((c) => !columns.has(c));
      if (unknown.length > 0) {
        bad = true;
        problems.push(
          `${spec.origin}: ${op}: unknown column${unknown.length > 1 ? 's' : ''} ${unknown.map((c) => `"${c}"`).join(', ')} in ` +
            `${found.schema}.${found.table} (columns: ${found.columns.join(', ')})`,
        );
      }
    }
    if (spec.key) {
      const unknown = spec.key.filter((c) => !columns.has(c));
      if (unknown.length > 0) {
        bad = true;
        problems.push(
          `${spec.origin}: key: unknown column${unknown.length > 1 ? 's' : ''} ${unknown.map((c) => `"${c}"`).join(', ')} in ${found.schema}.${found.table}`,
        );
      }
    }
    const filters = await filterProblems(client, spec, found);
    if (filters.length > 0) {
      problems.push(...filters);
      continue;
    }
    if (bad) continue;
    const key = spec.key ?? found.pk;
    resolved.push({
      ...spec,
      schema: found.schema,
      table: found.table,
      key,
      keySource: spec.key ? 'config' : found.pk.length > 0 ? 'primary key' : 'none',
      tableColumns: found.columns,
    });
  }
  if (problems.length > 0) throw new ConfigError(`cannot generate capture triggers:\n  - ${problems.join('\n  - ')}`);
  return resolved;
}
