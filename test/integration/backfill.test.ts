import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { backfillCommand } from '../../src/commands/backfill.js';
import type { CommandIO } from '../../src/commands/io.js';
import { parseConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { capture, install } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';

function io(signal = new AbortController().signal): CommandIO & { out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d) => {
    out += String(d);
  });
  stderr.on('data', (d) => {
    err += String(d);
  });
  return { stdout, stderr, env: {}, signal, out: () => out, err: () => err };
}

interface Line {
  id: string;
  seq: string;
  op: string;
  key?: string;
  channel: string;
  new: Record<string, unknown> | null;
  old: unknown;
}

/** A bridge with a stdout sink writing into memory; `lines()` are the envelopes it printed. */
async function stdoutBridge(url: string): Promise<{ bridge: Bridge; lines: () => Line[] }> {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => {
    text += String(d);
  });
  const config = parseConfig(
    { database: url, sinks: { out: { type: 'stdout' } }, routes: [{ from: 'public.*', to: 'out' }] },
    { file: 'test', env: {}, sinks: sinkDefinitions },
  );
  const bridge = createBridge({ config, logger: createLogger({ level: 'silent' }), stdout: out });
  await bridge.start();
  return {
    bridge,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Line),
  };
}

describe('sidekick backfill (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let _bridge: Bridge | undefined;

  it('enqueues 5000 rows as READ events that a stdout sink prints in key order', async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    // Inserted in shuffled order: key order must come from the walk, not the heap.
    await c.query('CREATE TABLE items (id int PRIMARY KEY, label text)');
    await c.query(`INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5000) g ORDER BY random()`);
    await capture(c, [{ table: 'public.items' }]);
    const term = io();
    expect(await backfillCommand({ database: db.url, table: 'items', batch: 700 }, term)).toBe(0);
    expect(term.out()).toMatch(/backfill public\.items: enqueued 5,000 rows as READ events/);
    expect(term.err()).toMatch(/backfill public\.items: 5,000\/5,000 rows \(100%\)/);

    const run = await stdoutBridge(db.url);
    _bridge = run.bridge;
    bed.defer(() => run.bridge.stop());
    await waitFor(() => run.lines().length >= 5000, '5000 events on stdout', 30_000);
    const lines = run.lines();
    expect(lines).toHaveLength(5000);
    expect(lines.map((l) => l.new?.id)).toEqual(Array.from({ length: 5000 }, (_, i) => i + 1));
    expect(lines[0]).toMatchObject({ op: 'READ', channel: 'public.items', key: '1', new: { id: 1, label: 'item 1' }, old: null });
    const ids = lines.map((l) => Number(l.seq));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    const state = (await c.query(`SELECT rows_done, done_at IS NOT NULL AS done FROM sidekick.backfills WHERE table_name = 'items'`)).rows[0];
    expect(state).toEqual({ rows_done: '5000', done: true });
  });

  it('resumes an interrupted backfill after its last finished batch, without duplicates', async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE items (a int, b text, PRIMARY KEY (a, b))');
    await c.query(`INSERT INTO items SELECT g % 10, 'k' || g FROM generate_series(1, 2500) g`);
    const first = io();
    expect(await backfillCommand({ database: db.url, table: 'public.items', batch: 300, maxBatches: 3 }, first)).toBe(0);
    expect(first.out()).toMatch(/stopped after 900 rows .*run the same command again to resume/);
    // A signal stops it between batches too.
    const controller = new AbortController();
    controller.abort();
    const stopped = io(controller.signal);
    expect(await backfillCommand({ database: db.url, table: 'public.items', batch: 300 }, stopped)).toBe(130);
    expect(stopped.err()).toMatch(/resuming after 900 rows/);
    // Different options do not silently mix with the unfinished run.
    await expect(backfillCommand({ database: db.url, table: 'public.items', batch: 300, where: 'a = 1' }, io())).rejects.toThrow(
      /unfinished backfill .*--restart/,
    );

    const second = io();
    expect(await backfillCommand({ database: db.url, table: 'public.items', batch: 300 }, second)).toBe(0);
    expect(second.err()).toMatch(/resuming after 900 rows/);
    expect(second.out()).toMatch(/enqueued 2,500 rows/);
    const { rows } = await c.query<{ k: string }>(`
      SELECT e.new ->> 'a' || '/' || (e.new ->> 'b') AS k
      FROM sidekick.outbox o, json_array_elements(o.new) WITH ORDINALITY AS e(new, n)
      WHERE o.op = 'READ' ORDER BY o.id, e.n`);
    const expected = (await c.query<{ k: string }>(`SELECT a || '/' || b AS k FROM items ORDER BY a, b`)).rows.map((r) => r.k);
    expect(rows.map((r) => r.k)).toEqual(expected);
  });

  it("--where filters, and the capture config's key and column selection apply", async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE accounts (id int PRIMARY KEY, region text, email text, secret text)');
    await c.query(`INSERT INTO accounts SELECT g, CASE WHEN g % 3 = 0 THEN 'eu' ELSE 'us' END, 'u' || g || '@x', 's' FROM generate_series(1, 300) g`);
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const file = join(mkdtempSync(join(tmpdir(), 'sk-backfill-')), 'sidekick.yaml');
    writeFileSync(
      file,
      `database: ${db.url}\nsinks:\n  out: { type: stdout }\nroutes:\n  - { from: "public.*", to: out }\ncapture:\n  - table: public.accounts\n    ` +
        `key: [region]\n    columns: [email]\n`,
    );
    await capture(c, [{ table: 'public.accounts', key: ['region'], columns: ['email'] }]);
    const term = io();
    expect(await backfillCommand({ config: file, table: 'accounts', where: `region = 'eu' AND id <= 150`, batch: 20 }, term)).toBe(0);
    expect(term.out()).toMatch(/enqueued 50 rows/);
    const run = await stdoutBridge(db.url);
    _bridge = run.bridge;
    bed.defer(() => run.bridge.stop());
    await waitFor(() => run.lines().length >= 50, '50 events');
    const lines = run.lines();
    expect(lines).toHaveLength(50);
    expect(lines.every((l) => l.op === 'READ' && l.key === 'eu' && Object.keys(l.new ?? {}).join() === 'email')).toBe(true);
    expect(lines.map((l) => l.new?.email)).toEqual(Array.from({ length: 50 }, (_, i) => `u${(i + 1) * 3}@x`));
    await expect(backfillCommand({ database: db.url, table: 'accounts', where: 'nope = 1', restart: true }, io())).rejects.toThrow(
      /--where "nope = 1": column "nope" does not exist/,
    );
  });
});
