import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { SQL_DIR } from '../paths.js';
import { quoteIdent } from '../pg/quote.js';

export const PGCRON_SQL = join(SQL_DIR, 'compat', 'pgcron.sql');

/**
 * Applies sql/compat/pgcron.sql (the seed's `scheduled_events` on sidekick.schedules) into `schema`,
 * in one transaction. Needs the sidekick schema installed first. Idempotent.
 */
export async function installPgcron(client: pg.ClientBase, schema = 'public'): Promise<void> {
  const sql = readFileSync(PGCRON_SQL, 'utf8');
  await client.query('BEGIN');
  try {
    const { rows } = await client.query<{ ok: boolean; s: boolean }>(
      `SELECT to_regclass('sidekick.schedules') IS NOT NULL AS ok, EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS s`,
      [schema],
    );
    if (!rows[0]?.ok) throw new Error('sidekick.schedules does not exist: install the sidekick schema first');
    if (!rows[0]?.s) throw new Error(`schema "${schema}" does not exist`);
    await client.query(`SELECT set_config('search_path', $1, true)`, [quoteIdent(schema)]);
    await client.query(sql);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw new Error(`pgcron compatibility (${PGCRON_SQL}) failed: ${(error as Error).message}`, { cause: error });
  }
}
