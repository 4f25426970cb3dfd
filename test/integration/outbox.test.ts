import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { capture, capturedClient, install } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

describe('outbox: row changes and publish() reach the sinks (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let _bridge: Bridge | undefined;

  it('delivers INSERT, UPDATE and DELETE envelopes with every field, in commit order', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE orders (id int PRIMARY KEY, status text, secret text)', [
      { table: 'public.orders', columns: { insert: '*', update: ['id', 'status'], delete: ['id'] } },
    ]);
    const memory = createMemorySinks();
    _bridge = await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: 'public.*', to: 'out' }] }, [memory.definition]);
    await c.query(`INSERT INTO orders VALUES (1, 'new', 's1')`);
    await c.query(`UPDATE orders SET status = 'paid' WHERE id = 1`);
    await c.query(`DELETE FROM orders WHERE id = 1`);
    const out = memory.get('out');
    await waitFor(() => out.received.length >= 3, '3 row changes');
    const [ins, upd, del] = out.received;
    expect(ins).toMatchObject({
      source: 'table',
      channel: 'public.orders',
      op: 'INSERT',
      schema: 'public',
      table: 'orders',
      key: '1',
      new: { id: 1, status: 'new', secret: 's1' },
      old: null,
    });
    expect(upd).toMatchObject({ op: 'UPDATE', key: '1', new: { id: 1, status: 'paid' }, old: { id: 1, status: 'new' } });
    expect(upd?.new).not.toHaveProperty('secret');
    expect(del).toMatchObject({ op: 'DELETE', key: '1', new: null, old: { id: 1 } });
    // Unique ids (installation-number), and the number as seq, growing in commit order.
    expect(ins?.id).toBe(`${ins?.id.split('-')[0]}-${ins?.seq}`);
    expect(Number(ins?.seq)).toBeLessThan(Number(upd?.seq));
    expect(Number(upd?.seq)).toBeLessThan(Number(del?.seq));
    expect(ins?.txid).toMatch(/^\d+$/);
    expect(Number.isFinite(Date.parse(ins?.at ?? ''))).toBe(true);
    // Delivered everywhere: the outbox is empty again.
    await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.events')).rows[0].n === 0, 'an empty outbox');
  });

  it('encodes composite keys as a JSON array and pairs multi-row UPDATEs (also when the key changes)', async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE "MixedCase" (a int, b text, v int, PRIMARY KEY (a, b))');
    await c.query(`INSERT INTO "MixedCase" SELECT g, 'k' || g, 0 FROM generate_series(1, 50) g`);
    await capture(c, [{ table: 'public.MixedCase' }]);
    const memory = createMemorySinks();
    _bridge = await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    await c.query('UPDATE "MixedCase" SET v = a * 10, a = a + 1000');
    const out = memory.get('out');
    await waitFor(() => out.received.length >= 50, '50 updates');
    for (const e of out.received) {
      const oldRow = e.old as { a: number; b: string; v: number };
      const newRow = e.new as { a: number; b: string; v: number };
      expect(newRow.a).toBe(oldRow.a + 1000);
      expect(newRow.b).toBe(oldRow.b);
      expect(newRow.v).toBe(oldRow.a * 10);
      expect(e.key).toBe(JSON.stringify([newRow.a, newRow.b]));
    }
  });

  it('delivers sidekick.publish() events only when the transaction commits', async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    const memory = createMemorySinks();
    _bridge = await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: 'jobs', to: 'out' }] }, [memory.definition]);
    await c.query('BEGIN');
    await c.query(`SELECT sidekick.publish('jobs', '{"n": 1}')`);
    await c.query('ROLLBACK');
    const { rows } = await c.query(`SELECT sidekick.publish('jobs', '{"n": 2}', 'k2') AS id`);
    const out = memory.get('out');
    await waitFor(() => out.received.length >= 1, 'the published event');
    expect(out.received[0]).toMatchObject({ seq: String(rows[0].id), source: 'publish', channel: 'jobs', key: 'k2', payload: { n: 2 } });
    // Only the committed one, ever: a sentinel published after it arrives, and nothing else did.
    await c.query(`SELECT sidekick.publish('jobs', '{"sentinel": true}', 'k2')`);
    await waitFor(() => out.received.some((e) => (e.payload as { sentinel?: boolean }).sentinel), 'the sentinel');
    expect(out.received.map((e) => e.payload)).toEqual([{ n: 2 }, { sentinel: true }]);
  });

  it("writes a statement's first two rows alone, the rest in chunks; every row of 0-, 1-, 2- and 3-row statements arrives once, in order", async () => {
    db = await bed.database();
    // A column list that leaves the key out: the keys travel beside the images, also in chunks.
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, v int, note text)', [
      { table: 't', columns: { insert: ['v'], delete: '*' } },
    ]);
    await c.query('INSERT INTO t SELECT g, g FROM generate_series(1, 0) g'); // no row: nothing written
    await c.query('INSERT INTO t VALUES (1, 1)');
    await c.query('INSERT INTO t SELECT g, g FROM generate_series(2, 3) g');
    await c.query('INSERT INTO t SELECT g, g FROM generate_series(4, 6) g');
    await c.query('DELETE FROM t WHERE id >= 4');
    await c.query('DELETE FROM t WHERE id > 100'); // no row
    const layout = await c.query(`SELECT op, cardinality(event_ids) AS events FROM sidekick.events ORDER BY id`);
    expect(layout.rows).toEqual([
      { op: 'INSERT', events: null },
      { op: 'INSERT', events: null },
      { op: 'INSERT', events: null },
      { op: 'INSERT', events: null },
      { op: 'INSERT', events: null },
      { op: 'INSERT', events: 1 },
      { op: 'DELETE', events: null },
      { op: 'DELETE', events: null },
      { op: 'DELETE', events: 1 },
    ]);
    // The rows alone are in the narrow sidekick.row_changes, the chunks in sidekick.outbox.
    const tables = await c.query(
      'SELECT (SELECT count(*) FROM sidekick.row_changes)::int AS alone, (SELECT count(*) FROM sidekick.outbox)::int AS chunks',
    );
    expect(tables.rows[0]).toEqual({ alone: 7, chunks: 2 });
    const memory = createMemorySinks();
    _bridge = await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    const out = memory.get('out');
    await waitFor(() => out.received.length >= 9, '9 row changes');
    expect(out.received.map((e) => [e.op, e.key, e.new ?? e.old])).toEqual([
      ['INSERT', '1', { v: 1 }],
      ['INSERT', '2', { v: 2 }],
      ['INSERT', '3', { v: 3 }],
      ['INSERT', '4', { v: 4 }],
      ['INSERT', '5', { v: 5 }],
      ['INSERT', '6', { v: 6 }],
      ['DELETE', '4', { id: 4, v: 4, note: null }],
      ['DELETE', '5', { id: 5, v: 5, note: null }],
      ['DELETE', '6', { id: 6, v: 6, note: null }],
    ]);
    expect(new Set(out.received.map((e) => e.id)).size).toBe(9);
    await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.events')).rows[0].n === 0, 'an empty outbox');
  });

  it('splits big statements into chunks (1000 rows; big rows alone) and delivers every row of them, in order per key', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, v int, doc text)', [{ table: 't' }]);
    await c.query('INSERT INTO t SELECT g, 0 FROM generate_series(1, 2500) g');
    // The first two rows alone, the rest in chunks of ranges of 1000 event ids: five or six outbox
    // rows, not 2500.
    const { rows } = await c.query(
      'SELECT count(*)::int AS n, sum(coalesce(cardinality(event_ids), 1))::int AS events, count(*) FILTER (WHERE event_ids IS NULL)::int AS single ' +
        'FROM sidekick.events',
    );
    expect(rows[0]).toMatchObject({ events: 2500, single: 2 });
    expect(rows[0].n).toBeGreaterThanOrEqual(5);
    expect(rows[0].n).toBeLessThanOrEqual(6);
    const memory = createMemorySinks();
    _bridge = await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    await c.query('UPDATE t SET v = 1');
    await c.query(`UPDATE t SET doc = repeat('x', 300000) WHERE id <= 3`);
    await c.query('DELETE FROM t WHERE id > 2000');
    const out = memory.get('out');
    const total = 2500 + 2500 + 3 + 500;
    await waitFor(() => out.received.length >= total, `${total} events`, 20_000);
    expect(new Set(out.received.map((e) => e.id)).size).toBe(total);
    const ops = new Map<string, string[]>();
    for (const e of out.received) ops.set(e.key as string, [...(ops.get(e.key as string) ?? []), e.op as string]);
    expect(ops.get('1')).toEqual(['INSERT', 'UPDATE', 'UPDATE']);
    expect(ops.get('2500')).toEqual(['INSERT', 'UPDATE', 'DELETE']);
    expect(
      (out.received.find((e) => e.key === '2' && (e.new as { doc: string | null }).doc !== null)?.new as { doc: string } | undefined)?.doc,
    ).toHaveLength(300000);
  });
});
