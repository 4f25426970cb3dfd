import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import type { Envelope } from '../../src/envelope.js';
import { RetriableError } from '../../src/errors.js';
import { OK } from '../../src/sink.js';
import { capture, capturedClient, install, startBridge } from '../support/bridge.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres.js';

/** Asserts that, per key, the events arrive in increasing id (= commit) order. */
function expectPerKeyOrder(events: readonly Envelope[]): void {
  const last = new Map<string, number>();
  for (const e of events) {
    const key = `${e.channel}/${e.key}`;
    const id = Number(e.seq);
    const before = last.get(key);
    if (before !== undefined) expect(id, `key ${key}: event ${id} after ${before}`).toBeGreaterThan(before);
    last.set(key, id);
  }
}

describe('outbox: no gaps and per-key order (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;
  let server: PrivatePostgres | undefined;
  afterEach(async () => {
    await bridge?.stop();
    bridge = undefined;
    await db?.drop();
    db = undefined;
    await server?.stop();
    server = undefined;
  });

  it('delivers the row of the newest running transaction although a newer one completed meanwhile (quiet server)', async () => {
    // On a server of its own, so that nothing else completes transactions: a snapshot's xmax is the
    // latest *completed* xid + 1, and the newest running transaction lies above it. A scan bound that
    // trusted xmax would move past A's row here.
    server = await startPrivatePostgres();
    const c = new pg.Client({ connectionString: server.url });
    c.on('error', () => {});
    await c.connect();
    await install(c);
    await c.query('CREATE TABLE t (id int PRIMARY KEY)');
    await capture(c, [{ table: 't' }]);
    const memory = createMemorySinks();
    bridge = await startBridge(
      server.url,
      { outbox: { pollInterval: '100ms' }, sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] },
      [memory.definition],
    );
    const a = new pg.Client({ connectionString: server.url });
    const b = new pg.Client({ connectionString: server.url });
    await a.connect();
    await b.connect();
    try {
      await waitFor(() => bridge?.outbox?.asleep === true, 'the drain asleep');
      await a.query('BEGIN');
      await a.query('INSERT INTO t VALUES (1)');
      await new Promise((r) => setTimeout(r, 400)); // the drain polls, A is the newest transaction
      await b.query('SELECT pg_current_xact_id()'); // a newer transaction completes
      await new Promise((r) => setTimeout(r, 400)); // the drain polls again
      await a.query('COMMIT');
      await waitFor(() => memory.get('out').received.length === 1, "A's row", 5_000);
    } finally {
      await Promise.all([a.end(), b.end(), c.end()]);
    }
  });

  it('delivers a transaction that took a lower id but committed after a later one', async () => {
    db = await createTestDatabase();
    const _c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, who text)', [{ table: 't' }]);
    const memory = createMemorySinks();
    bridge = await startBridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    const out = memory.get('out');
    const a = await db.client();
    const b = await db.client();
    for (let round = 0; round < 5; round++) {
      // A takes the lower outbox id and stays open; B takes the next one and commits first.
      await a.query('BEGIN');
      await a.query('INSERT INTO t VALUES ($1, $2)', [round * 2, 'A']);
      await b.query('INSERT INTO t VALUES ($1, $2)', [round * 2 + 1, 'B']);
      await waitFor(() => out.received.some((e) => (e.new as { id: number }).id === round * 2 + 1), `B's event (round ${round})`);
      // Let the drain look a few more times while A is still open.
      await new Promise((r) => setTimeout(r, 50));
      await a.query('COMMIT');
      await waitFor(() => out.received.some((e) => (e.new as { id: number }).id === round * 2), `A's event (round ${round}), committed after B's`);
    }
    const ids = out.received.map((e) => (e.new as { id: number }).id).sort((x, y) => x - y);
    expect(ids).toEqual(Array.from({ length: 10 }, (_, i) => i));
  });

  it('loses nothing under many concurrent writers committing out of id order', async () => {
    db = await createTestDatabase();
    const _c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, k int, v int)', [{ table: 't', key: ['k'] }]);
    const memory = createMemorySinks();
    bridge = await startBridge(db.url, { outbox: { batchSize: 20 }, sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [
      memory.definition,
    ]);
    const out = memory.get('out');
    const writers = await Promise.all(Array.from({ length: 12 }, () => db!.client()));
    let next = 0;
    const committed: number[] = [];
    await Promise.all(
      writers.map(async (w) => {
        for (let i = 0; i < 40; i++) {
          const id = next++;
          await w.query('BEGIN');
          await w.query('INSERT INTO t VALUES ($1, $2, 0)', [id, id % 7]);
          // Random hold times make later ids commit before earlier ones.
          await new Promise((r) => setTimeout(r, Math.random() * 8));
          await w.query('COMMIT');
          committed.push(id);
        }
      }),
    );
    await waitFor(() => new Set(out.received.map((e) => e.id)).size >= committed.length, `${committed.length} events`, 20_000);
    const seen = new Set(out.received.map((e) => (e.new as { id: number }).id));
    expect(committed.filter((id) => !seen.has(id))).toEqual([]);
  });

  it('keeps per-key order while the first event of a key is being retried; other keys keep flowing', async () => {
    db = await createTestDatabase();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, v int)', [{ table: 't' }]);
    const memory = createMemorySinks();
    const out = memory.get('out');
    let failing = true;
    out.behaviour = (e) => (failing && e.key === '1' ? { ok: false, error: new RetriableError('TEST_DOWN', 'key 1 is refused for now') } : OK);
    bridge = await startBridge(
      db.url,
      {
        sinks: { out: { type: 'memory', retry: { attempts: 1000, initialDelay: 20, maxDelay: 50 } } },
        routes: [{ from: '*', to: 'out' }],
      },
      [memory.definition],
    );
    await c.query('INSERT INTO t VALUES (1, 0)');
    await c.query('UPDATE t SET v = 1 WHERE id = 1');
    await c.query('UPDATE t SET v = 2 WHERE id = 1');
    for (let id = 2; id <= 20; id++) await c.query('INSERT INTO t VALUES ($1, 0)', [id]);
    await waitFor(() => out.received.length >= 19, 'the 19 other keys, while key 1 is retried');
    await waitFor(() => out.attempts.filter((e) => e.key === '1').length >= 3, 'a few attempts on key 1');
    expect(out.received.filter((e) => e.key === '1')).toEqual([]);
    failing = false;
    await waitFor(() => out.received.length >= 22, 'key 1 after it recovered');
    const key1 = out.received.filter((e) => e.key === '1');
    expect(key1.map((e) => [e.op, (e.new as { v: number }).v])).toEqual([
      ['INSERT', 0],
      ['UPDATE', 1],
      ['UPDATE', 2],
    ]);
  });

  it("keeps per-key order through a slow sink's durable backlog and checkpoints", async () => {
    db = await createTestDatabase();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE t (id int PRIMARY KEY, v int)');
    await c.query('INSERT INTO t SELECT g, 0 FROM generate_series(1, 20) g');
    await capture(c, [{ table: 't' }]);
    const memory = createMemorySinks();
    const out = memory.get('out');
    // Slow: one delivery at a time, 3 ms each, so the 8 events it may hold in memory take longer
    // than checkpointAfter: they get backlog copies, the drain fetches more, and the sink's events
    // pile up beyond sinkBuffer and go to its durable backlog.
    out.behaviour = async () => {
      await new Promise((r) => setTimeout(r, 3));
      return OK;
    };
    bridge = await startBridge(
      db.url,
      {
        outbox: { sinkBuffer: 8, checkpointAfter: 15, batchSize: 50 },
        sinks: { out: { type: 'memory', concurrency: 1, batch: { size: 1 } } },
        routes: [{ from: '*', to: 'out' }],
      },
      [memory.definition],
    );
    const writers = await Promise.all(Array.from({ length: 4 }, () => db!.client()));
    await Promise.all(
      writers.map(async (w, n) => {
        for (let i = 1; i <= 25; i++) await w.query('UPDATE t SET v = $1 WHERE id % 4 = $2', [i, n]);
      }),
    );
    const total = 20 * 25;
    await waitFor(() => out.received.length >= total, `${total} updates`, 30_000);
    expectPerKeyOrder(out.received);
    for (let id = 1; id <= 20; id++) {
      const vs = out.received.filter((e) => e.key === String(id)).map((e) => (e.new as { v: number }).v);
      expect(vs, `key ${id}`).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
    }
    const spilled = await bridge.metrics.outboxSpilled.get();
    expect(spilled.values[0]?.value ?? 0, 'the backlog path was used').toBeGreaterThan(0);
    await waitFor(
      async () =>
        (await c.query('SELECT (SELECT count(*) FROM sidekick.events) + (SELECT count(*) FROM sidekick.deliveries) AS n')).rows[0].n === '0',
      'empty queues',
    );
    void pg;
  });
});
