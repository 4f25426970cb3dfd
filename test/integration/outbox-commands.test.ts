import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { dlqListCommand, dlqPurgeCommand, dlqRetryCommand } from '../../src/commands/dlq.js';
import type { CommandIO } from '../../src/commands/io.js';
import { triggersCommand } from '../../src/commands/triggers.js';
import { uninstallCommand } from '../../src/commands/uninstall.js';
import { FatalError } from '../../src/errors.js';
import { OK } from '../../src/sink.js';
import { capturedClient, install } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

function io(): CommandIO & { out: () => string; err: () => string } {
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
  return { stdout, stderr, env: {}, signal: new AbortController().signal, out: () => out, err: () => err };
}

function file(name: string, text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'sk-cmd-')), name);
  writeFileSync(path, text);
  return path;
}

// Hasura skor's own test fixture (tests/schema.sql and tests/triggers.json), unchanged.
const SKOR_SCHEMA = `
drop table if exists skor_test_t1; create table skor_test_t1( c1 int, c2 text );
drop table if exists skor_test_t2; create table skor_test_t2( c1 int, c2 text );
drop table if exists skor_test_t3; create table skor_test_t3( c1 int, c2 text );
drop table if exists skor_test_t4; create table skor_test_t4( c1 int, c2 text, c3 text );`;
const SKOR_TRIGGERS = `[
    { "table": "skor_test_t1" },
    { "table": "skor_test_t2", "columns": "*" },
    { "table": "skor_test_t3", "columns": ["c1"] },
    { "table": "skor_test_t4", "columns": { "insert": "*", "update": ["c1", "c2"], "delete": ["c1"] } }
]`;

describe('sidekick triggers, uninstall, dlq (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;

  it("runs skor's own test scenario through `sidekick triggers triggers.json --apply`", async () => {
    db = await bed.database();
    const c = await db.client();
    await c.query(SKOR_SCHEMA);
    const cmd = io();
    // Not installed yet: --apply installs the schema first.
    expect(await triggersCommand({ file: file('triggers.json', SKOR_TRIGGERS), config: 'none.yaml', database: db.url, apply: true }, cmd)).toBe(0);
    expect(cmd.out()).toContain('installed the pg-sidekick schema');
    const memory = createMemorySinks();
    bridge = await bed.bridge(db.url, { sinks: { hook: { type: 'memory' } }, routes: [{ from: 'public.*', to: 'hook' }] }, [memory.definition]);
    const hook = memory.get('hook');
    const steps: [string, Record<string, unknown>][] = [
      [`INSERT INTO skor_test_t1 (c1, c2) VALUES (1, 'hello')`, { table: 'skor_test_t1', op: 'INSERT', data: { c1: 1, c2: 'hello' } }],
      [`UPDATE skor_test_t1 SET c2 = 'world' WHERE c1 = 1`, { table: 'skor_test_t1', op: 'UPDATE', data: { c1: 1, c2: 'world' } }],
      [`DELETE FROM skor_test_t1 WHERE c1 = 1`, { table: 'skor_test_t1', op: 'DELETE', data: { c1: 1, c2: 'world' } }],
      [`INSERT INTO skor_test_t3 (c1, c2) VALUES (1, 'hello')`, { table: 'skor_test_t3', op: 'INSERT', data: { c1: 1 } }],
      [`UPDATE skor_test_t3 SET c2 = 'world' WHERE c1 = 1`, { table: 'skor_test_t3', op: 'UPDATE', data: { c1: 1 } }],
      [`DELETE FROM skor_test_t3 WHERE c1 = 1`, { table: 'skor_test_t3', op: 'DELETE', data: { c1: 1 } }],
      [
        `INSERT INTO skor_test_t4 (c1, c2, c3) VALUES (1, 'hello', 'world')`,
        { table: 'skor_test_t4', op: 'INSERT', data: { c1: 1, c2: 'hello', c3: 'world' } },
      ],
      [`UPDATE skor_test_t4 SET c2 = 'ahoy' WHERE c1 = 1`, { table: 'skor_test_t4', op: 'UPDATE', data: { c1: 1, c2: 'ahoy' } }],
      [`DELETE FROM skor_test_t4 WHERE c1 = 1`, { table: 'skor_test_t4', op: 'DELETE', data: { c1: 1 } }],
    ];
    for (const [i, [sql, expected]] of steps.entries()) {
      await c.query(sql);
      await waitFor(() => hook.received.length > i, `event for: ${sql}`);
      const e = hook.received[i]!;
      // skor's webhook body was {table, schema, op, data}; data is the new row (the old one for DELETE).
      expect({ table: e.table, schema: e.schema, op: e.op, data: e.op === 'DELETE' ? e.old : e.new }).toEqual({ schema: 'public', ...expected });
    }
  });

  it('prints reviewable SQL, names the entry of an unknown column, handles long and mixed-case names, and drops', async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    const long = 'a_table_with_a_rather_long_name_that_goes_on_and_on_for_ever_x'; // 62 bytes
    await c.query(`CREATE TABLE "${long}" (id int PRIMARY KEY); CREATE TABLE "Orders" ("Id" int PRIMARY KEY, "Total" int)`);
    const config = file(
      'sidekick.yaml',
      `database: ${db.url}\ncapture:\n  - table: public.${long}\n  - table: '"Orders"'\n    columns: [Id]\n    operations: [insert]\nsinks: {}\n`,
    );
    const printed = io();
    expect(await triggersCommand({ config }, printed)).toBe(0);
    expect(printed.out()).toMatch(/^-- pg-sidekick capture triggers/);
    expect(printed.out()).toContain('BEGIN;');
    expect(printed.out()).toContain('CREATE TRIGGER "sidekick_capture_insert" AFTER INSERT ON "public"."Orders"');
    expect(printed.err()).toContain('--apply');
    // Printing changed nothing.
    expect((await c.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'sidekick_%'`)).rows[0].n).toBe(0);
    expect(await triggersCommand({ config, apply: true }, io())).toBe(0);
    const fns = (
      await c.query(`SELECT proname FROM pg_proc WHERE pronamespace = 'sidekick'::regnamespace AND proname LIKE '%:%' ORDER BY 1`)
    ).rows.map((r) => r.proname as string);
    expect(fns).toContain('public.Orders:insert');
    for (const f of fns) expect(Buffer.byteLength(f)).toBeLessThanOrEqual(63);
    expect(fns.filter((f) => f.startsWith('public.a_table_with'))).toHaveLength(3);
    expect(new Set(fns).size).toBe(fns.length);
    // Writes go through both.
    await c.query(`INSERT INTO "${long}" VALUES (1); INSERT INTO "Orders" VALUES (1, 10)`);
    expect(
      (
        await c.query(
          `SELECT coalesce(channel, schema_name || '.' || table_name) AS channel, CASE WHEN event_ids IS NULL THEN new ELSE new -> 0 END AS new FROM ` +
            `sidekick.events ORDER BY id`,
        )
      ).rows,
    ).toEqual([
      { channel: `public.${long}`, new: { id: 1 } },
      { channel: 'public.Orders', new: { Id: 1 } },
    ]);
    // An unknown column is an error naming the entry; nothing is applied.
    const bad = file('triggers.json', JSON.stringify([{ table: 'Orders', columns: { insert: ['Id', 'nope'] } }]));
    await expect(triggersCommand({ file: bad, config: 'x', database: db.url, apply: true }, io())).rejects.toThrow(
      /triggers\.json entry 1 \(table Orders\): insert: unknown column "nope" in public\.Orders/,
    );
    const badOp = file('triggers.json', JSON.stringify([{ table: 'Orders', columns: { upsert: '*' } }]));
    await expect(triggersCommand({ file: badOp, config: 'x', database: db.url }, io())).rejects.toThrow(
      /entry 1 \(table Orders\): unknown operation "upsert"/,
    );
    // --drop --apply removes them again.
    expect(await triggersCommand({ config, drop: true, apply: true }, io())).toBe(0);
    expect((await c.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'sidekick_%'`)).rows[0].n).toBe(0);
    expect(
      (await c.query(`SELECT count(*)::int AS n FROM pg_proc WHERE pronamespace = 'sidekick'::regnamespace AND proname LIKE '%:%'`)).rows[0].n,
    ).toBe(0);
  });

  it('uninstall lists what it drops, refuses without --yes and while a bridge runs, then removes everything', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY)', [{ table: 't' }]);
    await c.query('INSERT INTO t VALUES (1)');
    const memory = createMemorySinks();
    bridge = await bed.bridge(db.url, { outbox: { enabled: true }, sinks: { out: { type: 'memory' } }, routes: [] }, [memory.definition]);
    const running = io();
    expect(await uninstallCommand({ database: db.url, yes: true }, running)).toBe(1);
    expect(running.out()).toMatch(/1 pg-sidekick bridge\(s\) are connected/);
    await bridge.stop();
    bridge = undefined;
    const noTty = io();
    expect(await uninstallCommand({ database: db.url }, noTty)).toBe(2);
    expect(noTty.out()).toContain('triggers on public.t: sidekick_capture_delete, sidekick_capture_insert, sidekick_capture_update');
    expect(noTty.out()).toContain('table     sidekick.outbox');
    expect(noTty.out()).toContain('--yes');
    const asked: string[] = [];
    expect(
      await uninstallCommand(
        {
          database: db.url,
          confirm: async (q) => {
            asked.push(q);
            return false;
          },
        },
        io(),
      ),
    ).toBe(2);
    expect(asked).toHaveLength(1);
    expect((await c.query(`SELECT to_regnamespace('sidekick') IS NOT NULL AS ok`)).rows[0].ok).toBe(true);
    const done = io();
    expect(await uninstallCommand({ database: db.url, yes: true }, done)).toBe(0);
    expect(done.out()).toMatch(/dropped 3 capture trigger\(s\) and the sidekick schema/);
    expect((await c.query(`SELECT to_regnamespace('sidekick') IS NULL AS gone`)).rows[0].gone).toBe(true);
    expect((await c.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 't'::regclass`)).rows[0].n).toBe(0);
    await c.query('INSERT INTO t VALUES (2)');
    const again = io();
    expect(await uninstallCommand({ database: db.url, yes: true }, again)).toBe(0);
    expect(again.out()).toContain('not installed');
  });

  it('dlq list shows a table (or JSON), retry requeues by id, purge deletes', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY)', [{ table: 't' }]);
    const memory = createMemorySinks();
    const out = memory.get('out');
    let refuse = true;
    out.behaviour = () => (refuse ? { ok: false, error: new FatalError('HTTP_410', 'gone away') } : OK);
    bridge = await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    await c.query('INSERT INTO t SELECT generate_series(1, 3)');
    await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.dead_letters')).rows[0].n === 3, '3 dead letters');
    const list = io();
    expect(await dlqListCommand({ database: db.url }, list)).toBe(0);
    const lines = list.out().trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+SINK\s+EVENT\s+CHANNEL\s+OP\s+KEY\s+TRIES\s+FAILED AT\s+ERROR$/);
    expect(lines).toHaveLength(4);
    expect(lines[1]).toMatch(/^\d+\s+out\s+[0-9a-f]{16}-\d+\s+public\.t\s+INSERT\s+3\s+1\s+\S+Z\s+HTTP_410: gone away$/);
    const json = io();
    expect(await dlqListCommand({ database: db.url, json: true, limit: 2 }, json)).toBe(0);
    const parsed = JSON.parse(json.out()) as { id: number; sink: string; error: { code: string }; event: { channel: string; new: { id: number } } }[];
    expect(parsed).toHaveLength(2);
    expect(parsed[0]).toMatchObject({ sink: 'out', error: { code: 'HTTP_410' }, event: { channel: 'public.t', new: { id: 3 } } });
    refuse = false;
    const retry = io();
    expect(await dlqRetryCommand({ database: db.url, ids: [String(parsed[0]!.id)] }, retry)).toBe(0);
    expect(retry.out()).toContain('requeued 1 dead letter(s)');
    await waitFor(() => out.received.length === 1, 'the retried event');
    expect((out.received[0]!.new as { id: number }).id).toBe(3);
    const missing = io();
    expect(await dlqRetryCommand({ database: db.url, ids: ['999999'] }, missing)).toBe(1);
    expect(missing.out()).toContain('not found: 999999');
    await expect(dlqPurgeCommand({ database: db.url, ids: [] }, io())).rejects.toThrow(/give the ids to purge/);
    const purge = io();
    expect(await dlqPurgeCommand({ database: db.url, ids: [], all: true }, purge)).toBe(0);
    expect(purge.out()).toContain('purged 2 dead letter(s)');
    const empty = io();
    await dlqListCommand({ database: db.url }, empty);
    expect(empty.out()).toBe('no dead letters\n');
  });
});
