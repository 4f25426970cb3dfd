import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { triggersCommand } from '../../src/commands/triggers.js';
import { capture, capturedClient, install } from '../support/bridge.js';
import { useTestBed } from '../support/bed.js';
import { waitFor } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';

type Row = { id: number; status: string; total: number; note: string | null };
interface Captured {
  op: string;
  new: Row | null;
  old: Row | null;
}

/** Every event waiting in sidekick.row_changes and sidekick.outbox (through sidekick.events), one per changed row, in id order. */
async function events(c: pg.Client): Promise<Captured[]> {
  const { rows } = await c.query<{ op: string; event_ids: string[] | null; new: unknown; old: unknown }>(
    'SELECT op, event_ids, new, old FROM sidekick.events ORDER BY id',
  );
  return rows.flatMap((r) => {
    if (!r.event_ids) return [{ op: r.op, new: r.new as Row | null, old: r.old as Row | null }];
    return r.event_ids.map((_, i) => ({
      op: r.op,
      new: ((r.new as (Row | null)[] | null) ?? [])[i] ?? null,
      old: ((r.old as (Row | null)[] | null) ?? [])[i] ?? null,
    }));
  });
}

const ids = (list: Captured[], op: string, side: 'new' | 'old') =>
  list
    .filter((e) => e.op === op)
    .map((e) => e[side]?.id)
    .sort((a, b) => (a ?? 0) - (b ?? 0));

const TABLE = 'CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, total numeric NOT NULL, note text)';
const FILTERED = { table: 'public.orders', where: "status <> 'draft'", changed: ['status', 'total'] };

describe('capture filters: where and changed, in the trigger (real PostgreSQL)', () => {
  const bed = useTestBed();

  for (const mode of ['statement', 'row'] as const) {
    it(`${mode} mode: rows failing where never reach the outbox; DELETE is judged on the old row`, async () => {
      const db = await bed.database();
      const c = await capturedClient(db, TABLE, [{ ...FILTERED, mode }]);
      // One row, two rows and five rows (the chunked path), drafts mixed in.
      await c.query(`INSERT INTO orders VALUES (1, 'draft', 10, null)`);
      await c.query(`INSERT INTO orders VALUES (2, 'new', 20, null), (3, 'draft', 30, null)`);
      await c.query(`INSERT INTO orders SELECT g, CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'draft' END, g, null FROM generate_series(10, 19) g`);
      expect(ids(await events(c), 'INSERT', 'new')).toEqual([2, 10, 12, 14, 16, 18]);
      await c.query('DELETE FROM sidekick.row_changes; DELETE FROM sidekick.outbox');
      await c.query('DELETE FROM orders WHERE id IN (1, 2)');
      await c.query('DELETE FROM orders WHERE id >= 10');
      const deleted = await events(c);
      expect(ids(deleted, 'DELETE', 'old')).toEqual([2, 10, 12, 14, 16, 18]);
      expect(deleted.every((e) => e.old?.status !== 'draft')).toBe(true);
    });

    it(`${mode} mode: UPDATE is judged on the new row and sent only when a changed column changed, also in mixed multi-row statements`, async () => {
      const db = await bed.database();
      const c = await capturedClient(db, TABLE, [{ ...FILTERED, mode }]);
      await c.query(`INSERT INTO orders SELECT g, CASE WHEN g <= 5 THEN 'draft' ELSE 'new' END, g, null FROM generate_series(1, 10) g`);
      await c.query('DELETE FROM sidekick.row_changes; DELETE FROM sidekick.outbox');
      // One row: only the note changes (not sent), then the total (sent).
      await c.query(`UPDATE orders SET note = 'x' WHERE id = 6`);
      expect(await events(c)).toEqual([]);
      await c.query('UPDATE orders SET total = 61 WHERE id = 6');
      expect((await events(c)).map((e) => [e.op, e.new?.total, e.old?.total])).toEqual([['UPDATE', 61, 6]]);
      await c.query('DELETE FROM sidekick.row_changes; DELETE FROM sidekick.outbox');
      // Ten rows (the paired, chunked path): drafts 1–5 leave where's reach (where is over NEW: 2 and 4 become
      // 'new' and are sent); of 6–10 only the even ones change a listed column, the odd ones only their note.
      await c.query(`UPDATE orders SET
        status = CASE WHEN id IN (2, 4) THEN 'new' ELSE status END,
        total = CASE WHEN id IN (6, 8, 10) THEN total + 100 ELSE total END,
        note = 'y'`);
      const mixed = await events(c);
      expect(ids(mixed, 'UPDATE', 'new')).toEqual([2, 4, 6, 8, 10]);
      // Pairs stay pairs after the filter: each new image has its own old one.
      for (const e of mixed) expect(e.old?.id).toBe(e.new?.id);
      await c.query('DELETE FROM sidekick.row_changes; DELETE FROM sidekick.outbox');
      // A row that moves out of where (new is a draft) is not sent.
      await c.query(`UPDATE orders SET status = 'draft' WHERE id = 6`);
      await c.query(`UPDATE orders SET status = 'draft', total = 0 WHERE id IN (8, 10)`);
      expect(await events(c)).toEqual([]);
    });

    it(`${mode} mode: a statement whose rows are all filtered takes no id and sends no NOTIFY`, async () => {
      const db = await bed.database();
      const c = await capturedClient(db, TABLE, [{ ...FILTERED, mode }]);
      const listener = await db.client();
      const heard: string[] = [];
      listener.on('notification', (n) => heard.push(n.channel));
      await listener.query('LISTEN sidekick');
      const position = async () => (await c.query('SELECT last_value, is_called FROM sidekick.outbox_id_seq')).rows[0];
      const before = await position();
      await c.query(`INSERT INTO orders VALUES (1, 'draft', 1, null)`);
      await c.query(`INSERT INTO orders SELECT g, 'draft', g, null FROM generate_series(2, 9) g`);
      await c.query(`UPDATE orders SET note = 'n'`);
      await c.query(`UPDATE orders SET total = total + 1`);
      await c.query('DELETE FROM orders');
      await listener.query('SELECT 1');
      await new Promise((r) => setTimeout(r, 200));
      expect(heard).toEqual([]);
      expect(await position()).toEqual(before);
      expect(await events(c)).toEqual([]);
      // The same listener hears a row that passes (ids start inside the wake-up window).
      await c.query(`INSERT INTO orders VALUES (1, 'new', 1, null)`);
      await waitFor(() => heard.length > 0, 'a NOTIFY for a captured row');
    });
  }

  it('a bridge delivers exactly the rows that pass', async () => {
    const db = await bed.database();
    const c = await capturedClient(db, TABLE, [FILTERED]);
    const memory = createMemorySinks();
    await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: 'public.orders', to: 'out' }] }, [memory.definition]);
    await c.query(`INSERT INTO orders VALUES (1, 'draft', 1, null), (2, 'new', 2, null)`);
    await c.query(`UPDATE orders SET note = 'n'`);
    await c.query(`UPDATE orders SET status = 'paid' WHERE id = 2`);
    await c.query(`INSERT INTO orders VALUES (3, 'new', 3, null)`);
    const out = memory.get('out');
    await waitFor(() => out.received.length >= 3, '3 events');
    await new Promise((r) => setTimeout(r, 200));
    // Per key in order (keys flow independently): key 1 (a draft) and the note-only UPDATE are not there.
    expect(out.received.filter((e) => e.key === '2').map((e) => e.op)).toEqual(['INSERT', 'UPDATE']);
    expect(out.received.map((e) => e.key).sort()).toEqual(['2', '2', '3']);
  });

  it('a column named like a trigger variable, and a where with strings and comments, work', async () => {
    const db = await bed.database();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE t2 (id int PRIMARY KEY, x text, v_wake int, n int)');
    for (const mode of ['statement', 'row']) {
      await capture(c, [
        { table: 't2', mode, columns: ['id', 'x'], where: "x <> 'a;b' /* ; ) */ AND v_wake > 0 -- )\n AND t.n IS NOT NULL", changed: ['x', 'n'] },
      ]);
      await c.query('DELETE FROM t2; DELETE FROM sidekick.row_changes; DELETE FROM sidekick.outbox');
      await c.query(`INSERT INTO t2 VALUES (1, 'a;b', 1, 1), (2, 'ok', 1, 1), (3, 'ok', 0, 1), (4, 'ok', 1, null)`);
      await c.query(`UPDATE t2 SET v_wake = 5`);
      expect((await events(c)).map((e) => [e.op, e.new?.id])).toEqual([['INSERT', 2]]);
    }
  });

  it('a bad where or changed is an error naming its key path, when the triggers are generated', async () => {
    const db = await bed.database();
    const c = await db.client();
    await install(c);
    await c.query(TABLE);
    await c.query('CREATE TABLE other (id int PRIMARY KEY)');
    const dir = mkdtempSync(join(tmpdir(), 'sk-filter-'));
    const run = async (entry: Record<string, unknown>) => {
      const config = join(dir, 'c.yaml');
      writeFileSync(config, JSON.stringify({ database: db.url, sinks: {}, capture: [{ table: 'other' }, { table: 'public.orders', ...entry }] }));
      const sink = { write: () => true };
      return triggersCommand({ config }, { stdout: sink, stderr: sink, env: {} } as never);
    };
    await expect(run({ where: 'statu = 1' })).rejects.toThrow(
      /capture\[1\]\.where \(table public\.orders\) in .*c\.yaml: column "statu" does not exist/,
    );
    await expect(run({ where: 'total + 1' })).rejects.toThrow(/capture\[1\]\.where .*argument of WHERE must be type boolean/);
    await expect(run({ where: "status = 'x'; DROP TABLE orders" })).rejects.toThrow(/capture\[1\]\.where .*must be one SQL expression, without ";"/);
    await expect(run({ where: "status = 'x') OR (true" })).rejects.toThrow(/capture\[1\]\.where .*closes a parenthesis it did not open/);
    await expect(run({ where: 'status = ' })).rejects.toThrow(/capture\[1\]\.where .*syntax error/);
    // Names resolve as in the trigger (search_path pg_catalog): a function of public must be qualified.
    await c.query('CREATE FUNCTION public.is_big(numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT $1 > 100 $$');
    await expect(run({ where: 'is_big(total)' })).rejects.toThrow(/capture\[1\]\.where .*function is_big\(numeric\) does not exist/);
    await expect(run({ changed: ['status', 'nope'] })).rejects.toThrow(
      /capture\[1\]\.changed \(table public\.orders\) in .*: unknown column "nope" in public\.orders/,
    );
    await c.query('ALTER TABLE orders ADD COLUMN doc json');
    await expect(run({ changed: ['doc'] })).rejects.toThrow(/capture\[1\]\.changed .*cannot be compared: operator does not exist: json = json/);
    await expect(run({ changed: ['status'], operations: ['insert'] })).rejects.toThrow(/capture\[1\]\.changed .*captures no update/);
    // Nothing ran: the table is still there, and no trigger was created.
    expect((await c.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'sidekick_%'`)).rows[0].n).toBe(0);
    // A qualified function is fine, and `sidekick triggers` prints the filter.
    const printed: string[] = [];
    const config = join(dir, 'ok.yaml');
    writeFileSync(
      config,
      JSON.stringify({ database: db.url, sinks: {}, capture: [{ table: 'orders', where: 'public.is_big(total)', changed: ['total'] }] }),
    );
    const out = { write: (s: string) => printed.push(s) };
    expect(await triggersCommand({ config }, { stdout: out, stderr: { write: () => true }, env: {} } as never)).toBe(0);
    const sql = printed.join('');
    expect(sql).toMatch(/-- public\.orders — from capture\[0\].*; only rows where public\.is_big\(total\); UPDATEs only when total changes\n/);
    expect(sql).toContain('(public.is_big(total)) AS keep, ROW(t."total") AS chg FROM sidekick_new AS t');
    expect(sql).toContain('FROM sidekick_new AS t WHERE (public.is_big(total))) AS t\n  LIMIT 2;');
  });
});
