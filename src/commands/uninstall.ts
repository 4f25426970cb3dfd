import { quoteIdent } from '../pg/quote.js';
import { describeConnection } from '../pg/connection.js';
import { LOCK_CLASS, MEMBER_BASE, MEMBER_SLOTS } from '../outbox/queries.js';
import { connectDatabase, databaseFor, type DatabaseOptions } from './database.js';
import type { CommandIO } from './io.js';

export interface UninstallOptions extends DatabaseOptions {
  /** Skip the confirmation. */
  readonly yes?: boolean;
  /** Asks the user (a terminal); absent when there is none, and then --yes is required. */
  readonly confirm?: (question: string) => Promise<boolean>;
}

interface TriggerRow {
  schema: string;
  table: string;
  trigger: string;
}
interface ObjectRow {
  kind: string;
  name: string;
}

/**
 * `sidekick uninstall`: drops everything pg-sidekick created in the database — its capture triggers
 * on application tables and the whole `sidekick` schema (outbox, backlogs, dead letters, schedules,
 * functions) — in one transaction, after listing it. Refuses while bridges are connected.
 */
export async function uninstallCommand(options: UninstallOptions, io: CommandIO): Promise<number> {
  const connection = databaseFor(options, io);
  const where = describeConnection(connection, io.env);
  const out = (line = '') => io.stdout.write(`${line}\n`);
  const client = await connectDatabase(connection, io);
  try {
    const installed = (await client.query<{ ok: boolean }>(`SELECT to_regnamespace('sidekick') IS NOT NULL AS ok`)).rows[0]?.ok;
    if (!installed) {
      out(`pg-sidekick is not installed on ${where}: nothing to do`);
      return 0;
    }
    const triggers = (
      await client.query<TriggerRow>(`
      SELECT n.nspname AS schema, c.relname AS table, t.tgname AS trigger
      FROM pg_trigger t
      JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_proc p ON p.oid = t.tgfoid
      WHERE p.pronamespace = 'sidekick'::regnamespace AND NOT t.tgisinternal AND n.nspname <> 'sidekick'
      ORDER BY 1, 2, 3`)
    ).rows;
    const objects = (
      await client.query<ObjectRow>(`
      SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' ELSE 'relation' END AS kind, c.relname AS name
      FROM pg_class c WHERE c.relnamespace = 'sidekick'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
      UNION ALL
      SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
      FROM pg_proc p WHERE p.pronamespace = 'sidekick'::regnamespace
      ORDER BY 1, 2`)
    ).rows;
    const counts: { name: string; n: number }[] = [];
    for (const name of ['outbox', 'row_changes', 'deliveries', 'dead_letters']) {
      if (!objects.some((o) => o.kind === 'table' && o.name === name)) continue;
      const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM sidekick.${name}`);
      counts.push({ name, n: rows[0]?.n ?? 0 });
    }
    const drains =
      (
        await client.query<{ n: number }>(`
      SELECT count(*)::int AS n FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = ${LOCK_CLASS}::oid
        AND objid::bigint >= ${MEMBER_BASE} AND objid::bigint < ${MEMBER_BASE + MEMBER_SLOTS}
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
      ).rows[0]?.n ?? 0;

    out(`pg-sidekick uninstall on ${where} will drop:`);
    const byTable = new Map<string, string[]>();
    for (const t of triggers) {
      const key = `${t.schema}.${t.table}`;
      byTable.set(key, [...(byTable.get(key) ?? []), t.trigger]);
    }
    for (const [table, names] of byTable) out(`  triggers on ${table}: ${names.join(', ')}`);
    out(`  schema sidekick, with everything in it:`);
    for (const o of objects) out(`    ${o.kind.padEnd(9)} sidekick.${o.name}`);
    const pending = counts.filter((c) => c.n > 0);
    for (const c of pending) {
      const what =
        c.name === 'dead_letters'
          ? 'dead letters'
          : c.name === 'outbox' || c.name === 'row_changes'
            ? `undelivered events in sidekick.${c.name}`
            : 'undelivered events in sink backlogs';
      out(`  WARNING: ${c.n} ${what} will be lost`);
    }
    if (drains > 0) {
      out();
      out(`${drains} pg-sidekick bridge(s) are connected to this database: stop them first (they would keep using, or re-create, the schema).`);
      return 1;
    }
    if (!options.yes) {
      if (!options.confirm) {
        out();
        out('Not dropped: no terminal to confirm on. Run it again with --yes to drop all of the above.');
        return 2;
      }
      if (!(await options.confirm('Drop all of the above? Type "yes" to confirm: '))) {
        out('Not dropped.');
        return 2;
      }
    }
    await client.query('BEGIN');
    try {
      // Don't queue behind a long transaction on a busy application table forever.
      await client.query(`SET LOCAL lock_timeout = '10s'`);
      for (const t of triggers) await client.query(`DROP TRIGGER ${quoteIdent(t.trigger)} ON ${quoteIdent(t.schema)}.${quoteIdent(t.table)}`);
      await client.query('DROP SCHEMA sidekick CASCADE');
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw new Error(`uninstall failed, nothing was dropped: ${(error as Error).message}`, { cause: error });
    }
    out(`dropped ${triggers.length} capture trigger(s) and the sidekick schema; pg-sidekick is uninstalled from ${where}`);
    return 0;
  } finally {
    await client.end().catch(() => {});
  }
}
