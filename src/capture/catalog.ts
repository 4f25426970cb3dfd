import type pg from 'pg';
import { ConfigError } from '../errors.js';
import { OPERATIONS, type CaptureSpec } from './spec.js';

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
 * Looks every spec up in the catalog. Errors (missing table, unknown column or key column, a view)
 * name the entry they come from; all problems are reported at once.
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
