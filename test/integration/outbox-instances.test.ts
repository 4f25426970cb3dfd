import { afterEach, describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import type { Envelope } from '../../src/envelope.js';
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
    // Eight tables (a table's row changes stay in one partition) and published events (partitioned by key).
    const tables = Array.from({ length: 8 }, (_, i) => `t${i}`);
    for (const t of tables) {
      await c.query(`CREATE TABLE ${t} (id int PRIMARY KEY, v int)`);
      await c.query(`INSERT INTO ${t} SELECT g, 0 FROM generate_series(1, 8) g`);
    }
    await capture(
      c,
      tables.map((table) => ({ table })),
    );
    // One record per sink name, shared by both instances: what "the receiver" sees.
    const memory = createMemorySinks();
    const doc = { sinks: { a: { type: 'memory' }, b: { type: 'memory' } }, routes: [{ from: '*', to: ['a', 'b'] }], outbox: { batchSize: 50 } };
    bridges.push(await startBridge(db.url, doc, [memory.definition]));
    bridges.push(await startBridge(db.url, doc, [memory.definition]));
    const [one, two] = bridges as [Bridge, Bridge];
    await waitFor(() => one.outbox?.partitions.length === 8 && two.outbox?.partitions.length === 8, 'an even split of the 16 partitions', 15_000);
    expect(new Set([...one.outbox!.partitions, ...two.outbox!.partitions]).size).toBe(16);

    const writers = await Promise.all(Array.from({ length: 4 }, () => db!.client()));
    await Promise.all(
      writers.map(async (w, n) => {
        for (let i = 1; i <= 20; i++) {
          await w.query('BEGIN');
          for (const t of tables) await w.query(`UPDATE ${t} SET v = $1 WHERE id % 4 = $2`, [i, n]);
          await w.query(`SELECT sidekick.publish('jobs', jsonb_build_object('v', $1::int), 'job-' || $2)`, [i, n]);
          await w.query('COMMIT');
        }
      }),
    );
    const total = (8 * 8 + 4) * 20;
    const value = (e: Envelope) => (e.source === 'table' ? (e.new as { v: number }).v : (e.payload as { v: number }).v);
    for (const name of ['a', 'b']) {
      const sink = memory.get(name);
      await waitFor(() => sink.received.length >= total, `${total} events at sink ${name}`, 20_000);
      await new Promise((r) => setTimeout(r, 100));
      // Once each: no event was delivered by both instances.
      expect(sink.received).toHaveLength(total);
      expect(new Set(sink.received.map((e) => e.id)).size).toBe(total);
      // In order per key: v counts up 1..20 for every row and every job key.
      const byKey = new Map<string, number[]>();
      for (const e of sink.received) byKey.set(`${e.channel}/${e.key}`, [...(byKey.get(`${e.channel}/${e.key}`) ?? []), value(e)]);
      expect(byKey.size).toBe(8 * 8 + 4);
      for (const [key, vs] of byKey) expect(vs, `sink ${name}, key ${key}`).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    }
    // Both did part of the work.
    expect(await delivered(one)).toBeGreaterThan(0);
    expect(await delivered(two)).toBeGreaterThan(0);

    // One stops: the other takes every partition over and nothing is lost.
    await one.stop();
    bridges.shift();
    await waitFor(() => two.outbox?.partitions.length === 16, 'the survivor owning all 16 partitions', 15_000);
    for (const t of tables) await c.query(`UPDATE ${t} SET v = 100`);
    for (const name of ['a', 'b']) {
      await waitFor(
        () => memory.get(name).received.filter((e) => e.source === 'table' && value(e) === 100).length === 64,
        `the last 64 events at ${name}`,
      );
    }
  });
});
