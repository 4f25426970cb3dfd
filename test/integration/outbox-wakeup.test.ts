import { afterEach, describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { capture, install, startBridge } from '../support/bridge.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';

describe('outbox: waking the drain (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;
  afterEach(async () => {
    await bridge?.stop();
    bridge = undefined;
    await db?.drop();
    db = undefined;
  });

  it('catches up on start with what was written while no bridge ran', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE t (id int PRIMARY KEY)');
    await capture(c, [{ table: 't' }]);
    await c.query('INSERT INTO t SELECT generate_series(1, 500)');
    const memory = createMemorySinks();
    bridge = await startBridge(db.url, { outbox: { pollInterval: '60s' }, sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    await waitFor(() => memory.get('out').received.length >= 500, '500 events written before the start');
  });

  it('a sleeping drain is woken by the writer at once, not by its (here: 60 s) safety-net poll', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE t (id int PRIMARY KEY)');
    await capture(c, [{ table: 't' }]);
    const memory = createMemorySinks();
    bridge = await startBridge(db.url, { outbox: { pollInterval: '60s' }, sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    for (let i = 1; i <= 3; i++) {
      await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.drain_idle WHERE idle_until > now()')).rows[0].n === 1, 'the drain asleep');
      await c.query('INSERT INTO t VALUES ($1)', [i]);
      await waitFor(() => memory.get('out').received.length >= i, `event ${i} within 5 s`, 5_000);
    }
  });

  it('busy writers do not NOTIFY: only transactions that find the drain asleep do', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    await install(c);
    await c.query('CREATE TABLE t (id serial PRIMARY KEY, w int)');
    await capture(c, [{ table: 't' }]);
    const memory = createMemorySinks();
    bridge = await startBridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    const listener = await db.client();
    let notifications = 0;
    listener.on('notification', () => { notifications++; });
    await listener.query('LISTEN sidekick');
    const writers = await Promise.all(Array.from({ length: 4 }, () => db!.client()));
    let transactions = 0;
    const until = Date.now() + 1500;
    await Promise.all(writers.map(async (w, n) => {
      while (Date.now() < until) {
        await w.query('INSERT INTO t (w) VALUES ($1)', [n]);
        transactions++;
      }
    }));
    await waitFor(() => memory.get('out').received.length >= transactions, `${transactions} events`, 20_000);
    // A few wake-ups at the start and whenever the drain had caught up and dozed off; never one per transaction.
    expect(transactions).toBeGreaterThan(200);
    expect(notifications).toBeLessThan(transactions * 0.05);
  });
});
