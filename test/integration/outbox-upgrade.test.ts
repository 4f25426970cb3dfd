import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { SQL_DIR } from '../../src/paths.js';
import { listMigrations, migrate } from '../../src/sql/migrate.js';
import { capture, startBridge } from '../support/bridge.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';

/**
 * A capture function as versions before sql/005 generated it: every row change into sidekick.outbox.
 * Such functions stay in databases until `sidekick triggers --apply` runs again.
 */
const LEGACY_TRIGGER = `
CREATE FUNCTION sidekick."public.t:insert"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $sidekick$
DECLARE
  v_wake boolean;
BEGIN
  INSERT INTO sidekick.outbox (op, schema_name, table_name, key_columns, new)
  VALUES ('INSERT', TG_TABLE_SCHEMA, TG_TABLE_NAME, '{"id"}'::text[], row_to_json(NEW))
  RETURNING id % 1024 < 8 INTO v_wake;
  IF v_wake THEN
    PERFORM pg_notify('sidekick', '');
  END IF;
  RETURN NULL;
END
$sidekick$;
CREATE TRIGGER sidekick_capture_insert AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION sidekick."public.t:insert"();`;

describe('outbox: upgrading a database from before sidekick.row_changes and event identities (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await bridge?.stop();
    bridge = undefined;
    await db?.drop();
    db = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('waits for `install` on an older schema (says so once), then delivers what older and regenerated triggers wrote, in id order', async () => {
    // The schema as the version before sql/005 left it.
    dir = mkdtempSync(join(tmpdir(), 'sk-sql-'));
    const older = listMigrations().filter((m) => m.id < 5 || m.id === 20);
    expect(older.map((m) => m.id)).toEqual([1, 2, 3, 4, 20]);
    for (const m of older) copyFileSync(join(SQL_DIR, `${m.name}.sql`), join(dir, `${m.name}.sql`));
    db = await createTestDatabase();
    const c = await db.client();
    await migrate(c, { dir });
    expect((await c.query(`SELECT to_regclass('sidekick.row_changes') IS NULL AS missing`)).rows[0].missing).toBe(true);
    await c.query('CREATE TABLE t (id int PRIMARY KEY, v int)');
    await c.query(LEGACY_TRIGGER);
    await c.query('INSERT INTO t VALUES (1, 1)');

    // A bridge that does not install (no capture: in its config) does not drain an older schema:
    // its events would get ids that are not unique. It says why and waits.
    const memory = createMemorySinks();
    const lines: string[] = [];
    bridge = await startBridge(db.url, {
      outbox: { pollInterval: 200 },
      sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }],
    }, [memory.definition], { write: (line: string) => lines.push(line) });
    const out = memory.get('out');
    await waitFor(() => lines.some((l) => l.includes('older than this pg-sidekick needs')), 'the error that says so');
    expect(bridge.readiness().ready).toBe(false);
    expect(out.received).toEqual([]);

    // Upgraded while it runs: the older trigger keeps writing the outbox; regenerated, the trigger
    // writes the narrow table. The drain takes up all of it.
    await c.query('INSERT INTO t VALUES (2, 2)');
    expect((await migrate(c)).applied).toEqual(['005_row_changes', '006_event_identity']);
    await c.query('INSERT INTO t VALUES (3, 3)');
    await capture(c, [{ table: 't' }]);
    expect((await c.query(`SELECT prosrc FROM pg_proc WHERE proname = 'public.t:insert'`)).rows[0].prosrc).toContain('INSERT INTO sidekick.row_changes');
    await c.query('INSERT INTO t VALUES (4, 4)');
    await waitFor(() => out.received.length >= 4, 'the events written before, during and after the upgrade', 10_000);
    expect(out.received.map((e) => [e.op, e.schema, e.table, e.key, e.new])).toEqual([1, 2, 3, 4].map((id) => ['INSERT', 'public', 't', String(id), { id, v: id }]));
    const seqs = out.received.map((e) => Number(e.seq));
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
    expect(lines.filter((l) => l.includes('older than this pg-sidekick needs'))).toHaveLength(1);
    await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.events')).rows[0].n === 0, 'an empty queue');
  });
});
