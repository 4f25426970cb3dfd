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

describe('outbox: a schema behind this version (real PostgreSQL)', () => {
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

  it('waits for `install` on a schema behind this version (says so once), then drains it', async () => {
    // The schema as a version without the last migration left it.
    dir = mkdtempSync(join(tmpdir(), 'sk-sql-'));
    const all = listMigrations();
    const older = all.slice(0, -1);
    for (const m of older) copyFileSync(join(SQL_DIR, `${m.name}.sql`), join(dir, `${m.name}.sql`));
    db = await createTestDatabase();
    const c = await db.client();
    await migrate(c, { dir });
    await c.query('CREATE TABLE t (id int PRIMARY KEY, v int)');
    await capture(c, [{ table: 't' }]);
    await c.query('INSERT INTO t VALUES (1, 1)');

    // A bridge that does not install (no capture: in its config) does not drain a schema it does
    // not know to be the shape it reads and writes. It says why and waits.
    const memory = createMemorySinks();
    const lines: string[] = [];
    bridge = await startBridge(
      db.url,
      {
        outbox: { pollInterval: 200 },
        sinks: { out: { type: 'memory' } },
        routes: [{ from: '*', to: 'out' }],
      },
      [memory.definition],
      { write: (line: string) => lines.push(line) },
    );
    const out = memory.get('out');
    await waitFor(() => lines.some((l) => l.includes('older than this pg-sidekick needs')), 'the error that says so');
    expect(bridge.readiness().ready).toBe(false);
    expect(out.received).toEqual([]);

    await c.query('INSERT INTO t VALUES (2, 2)');
    expect((await migrate(c)).applied).toEqual([all.at(-1)?.name]);
    await c.query('INSERT INTO t VALUES (3, 3)');
    await waitFor(() => out.received.length >= 3, 'the events written before and after the upgrade', 10_000);
    expect(out.received.map((e) => e.new)).toEqual([1, 2, 3].map((id) => ({ id, v: id })));
    expect(lines.filter((l) => l.includes('older than this pg-sidekick needs'))).toHaveLength(1);
    await waitFor(() => bridge?.readiness().ready === true, 'ready');
  });

  it('a schema from before the migrations were folded is refused with what to do, by install and by the drain', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    await migrate(c);
    // What a development version recorded (its tables are irrelevant: the record decides).
    await c.query(`INSERT INTO sidekick.migrations (id, name) VALUES (3, '003_backfill'), (4, '004_lean_outbox'), (5, '005_row_changes')`);
    await expect(migrate(c)).rejects.toThrow(/before its migrations were folded into one .*sidekick uninstall --yes.*sidekick install/);
    const lines: string[] = [];
    const memory = createMemorySinks();
    bridge = await startBridge(
      db.url,
      {
        capture: [],
        outbox: { enabled: true },
        sinks: { out: { type: 'memory' } },
        routes: [{ from: '*', to: 'out' }],
      },
      [memory.definition],
      { write: (line: string) => lines.push(line) },
    );
    await waitFor(() => lines.some((l) => l.includes('before its migrations were folded')), 'the drain says so');
    expect(bridge.readiness().ready).toBe(false);
  });
});
