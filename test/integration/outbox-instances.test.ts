import { afterEach, describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { capture, install, startBridge } from '../support/bridge.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';

const delivered = async (b: Bridge) => (await b.metrics.delivered.get()).values.reduce((n, v) => n + v.value, 0);

describe('outbox: two bridge instances on one database (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  const bridges: Bridge[] = [];
  afterEach(async () => {
    await Promise.all(bridges.splice(0).map((b) => b.stop()));
    await db?.drop();
    db = undefined;
  });

  it('share the key partitions, deliver each event once per sink in per-key order, and take over from each other', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE t (id int PRIMARY KEY, v int)');
    await c.query('INSERT INTO t SELECT g, 0 FROM generate_series(1, 64) g');
    await capture(c, [{ table: 't' }]);
    // One record per sink name, shared by both instances: what "the receiver" sees.
    const memory = createMemorySinks();
    const doc = { sinks: { a: { type: 'memory' }, b: { type: 'memory' } }, routes: [{ from: '*', to: ['a', 'b'] }], outbox: { batchSize: 50 } };
    bridges.push(await startBridge(db.url, doc, [memory.definition]));
    bridges.push(await startBridge(db.url, doc, [memory.definition]));
    const [one, two] = bridges as [Bridge, Bridge];
    await waitFor(() => one.outbox?.partitions.length === 8 && two.outbox?.partitions.length === 8, 'an even split of the 16 partitions', 15_000);
    expect(new Set([...one.outbox!.partitions, ...two.outbox!.partitions]).size).toBe(16);

    const writers = await Promise.all(Array.from({ length: 4 }, () => db!.client()));
    await Promise.all(writers.map(async (w, n) => {
      for (let i = 1; i <= 20; i++) await w.query('UPDATE t SET v = $1 WHERE id % 4 = $2', [i, n]);
    }));
    const total = 64 * 20;
    for (const name of ['a', 'b']) {
      const sink = memory.get(name);
      await waitFor(() => sink.received.length >= total, `${total} events at sink ${name}`, 20_000);
      await new Promise((r) => setTimeout(r, 100));
      // Once each: no event was delivered by both instances.
      expect(sink.received).toHaveLength(total);
      expect(new Set(sink.received.map((e) => e.id)).size).toBe(total);
      // In order per key: v counts up 1..20 for every row.
      for (let id = 1; id <= 64; id++) {
        const vs = sink.received.filter((e) => e.key === String(id)).map((e) => (e.new as { v: number }).v);
        expect(vs, `sink ${name}, key ${id}`).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      }
    }
    // Both did part of the work.
    expect(await delivered(one)).toBeGreaterThan(0);
    expect(await delivered(two)).toBeGreaterThan(0);

    // One stops: the other takes every partition over and nothing is lost.
    await one.stop();
    bridges.shift();
    await waitFor(() => two.outbox?.partitions.length === 16, 'the survivor owning all 16 partitions', 15_000);
    await c.query('UPDATE t SET v = 100');
    for (const name of ['a', 'b']) {
      await waitFor(() => memory.get(name).received.filter((e) => (e.new as { v: number }).v === 100).length === 64, `the last 64 events at ${name}`);
    }
  });
});
