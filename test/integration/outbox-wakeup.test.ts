import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { capturedClient } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

describe('outbox: waking the drain (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;

  /** A fresh database with pg-sidekick installed and table `t` captured; returns a client on it. */
  async function capturedTable(columns = 'id int PRIMARY KEY') {
    db = await bed.database();
    return capturedClient(db, `CREATE TABLE t (${columns})`, [{ table: 't' }]);
  }

  /** A bridge delivering everything to the memory sink `out`. */
  async function startDrain(memory: ReturnType<typeof createMemorySinks>, outbox?: { pollInterval: string }) {
    bridge = await bed.bridge(db!.url, { ...(outbox ? { outbox } : {}), sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [
      memory.definition,
    ]);
  }

  it('catches up on start with what was written while no bridge ran', async () => {
    const c = await capturedTable();
    await c.query('INSERT INTO t SELECT generate_series(1, 500)');
    const memory = createMemorySinks();
    await startDrain(memory, { pollInterval: '60s' });
    await waitFor(() => memory.get('out').received.length >= 500, '500 events written before the start');
  });

  it('a sleeping drain is woken by the writer at once, not by its (here: 60 s) safety-net poll', async () => {
    const c = await capturedTable();
    const memory = createMemorySinks();
    await startDrain(memory, { pollInterval: '60s' });
    for (let i = 1; i <= 3; i++) {
      await waitFor(() => bridge?.outbox?.asleep === true, 'the drain asleep');
      await c.query('INSERT INTO t VALUES ($1)', [i]);
      await waitFor(() => memory.get('out').received.length >= i, `event ${i} within 5 s`, 5_000);
    }
  });

  it('statements of several rows wake it too: two rows, many rows (chunked), an UPDATE and a DELETE of several', async () => {
    const c = await capturedTable('id int PRIMARY KEY, v int');
    const memory = createMemorySinks();
    await startDrain(memory, { pollInterval: '60s' });
    const statements: [string, number][] = [
      ['INSERT INTO t SELECT g, 0 FROM generate_series(1, 2) g', 2],
      ['INSERT INTO t SELECT g, 0 FROM generate_series(3, 1500) g', 1498],
      ['UPDATE t SET v = 1 WHERE id <= 3', 3],
      ['DELETE FROM t WHERE id > 1497', 3],
    ];
    let expected = 0;
    for (const [sql, events] of statements) {
      await waitFor(() => bridge?.outbox?.asleep === true, 'the drain asleep');
      await c.query(sql);
      expected += events;
      await waitFor(() => memory.get('out').received.length >= expected, `${sql}: ${events} events within 5 s`, 5_000);
    }
  });

  it('busy writers do not NOTIFY: only transactions that find the drain asleep do', async () => {
    const _c = await capturedTable('id serial PRIMARY KEY, w int');
    const memory = createMemorySinks();
    await startDrain(memory);
    const listener = await db!.client();
    let notifications = 0;
    listener.on('notification', () => {
      notifications++;
    });
    await listener.query('LISTEN sidekick');
    const writers = await Promise.all(Array.from({ length: 4 }, () => db!.client()));
    let transactions = 0;
    const until = Date.now() + 1500;
    await Promise.all(
      writers.map(async (w, n) => {
        while (Date.now() < until) {
          await w.query('INSERT INTO t (w) VALUES ($1)', [n]);
          transactions++;
        }
      }),
    );
    await waitFor(() => memory.get('out').received.length >= transactions, `${transactions} events`, 20_000);
    // A few wake-ups at the start and whenever the drain had caught up and dozed off; never one per transaction.
    expect(transactions).toBeGreaterThan(200);
    expect(notifications).toBeLessThan(transactions * 0.05);
  });

  it('sidekick.arm_wakeup() moves the id sequence to a multiple of 1024, but never while a writer is mid-transaction', async () => {
    const c = await capturedTable();
    await c.query('INSERT INTO t SELECT generate_series(1, 5)');
    const writer = await db!.client();
    await writer.query('BEGIN');
    await writer.query('INSERT INTO t VALUES (100)');
    expect((await c.query('SELECT sidekick.arm_wakeup() AS armed')).rows[0].armed).toBe(false);
    const before = (await c.query('SELECT last_value::int AS v FROM sidekick.outbox_id_seq')).rows[0].v;
    await writer.query('COMMIT');
    expect((await c.query('SELECT sidekick.arm_wakeup() AS armed')).rows[0].armed).toBe(true);
    const after = (await c.query('SELECT last_value::int AS v FROM sidekick.outbox_id_seq')).rows[0].v;
    expect(after).toBe(1024);
    expect(after).toBeGreaterThan(before);
    // Armed again with nothing written since: nothing moves.
    expect((await c.query('SELECT sidekick.arm_wakeup() AS armed')).rows[0].armed).toBe(true);
    expect((await c.query('SELECT last_value::int AS v FROM sidekick.outbox_id_seq')).rows[0].v).toBe(1024);
    // The next writer takes 1025 and NOTIFYs; the ninth after the mark does not.
    const listener = await db!.client();
    const heard: string[] = [];
    listener.on('notification', (n) => {
      heard.push(n.channel);
    });
    await listener.query('LISTEN sidekick');
    await c.query('INSERT INTO t VALUES (200)');
    await waitFor(() => heard.length === 1, 'a NOTIFY from the first writer after the mark');
    await c.query("SELECT setval('sidekick.outbox_id_seq', 1032)");
    await c.query('INSERT INTO t VALUES (201)');
    await c.query('SELECT 1'); // (a NOTIFY would have arrived before this answer)
    await listener.query('SELECT 1');
    expect(heard).toHaveLength(1);
  });

  it('the first writers after the mark roll back: the next one still wakes the drain at once', async () => {
    const c = await capturedTable();
    const memory = createMemorySinks();
    await startDrain(memory, { pollInterval: '60s' });
    await c.query('INSERT INTO t VALUES (1)');
    await waitFor(() => memory.get('out').received.length === 1, 'the first event');
    await waitFor(
      async () => (await c.query('SELECT last_value % 1024 = 0 AS armed FROM sidekick.outbox_id_seq')).rows[0].armed,
      'the drain asleep behind its mark',
    );
    for (let i = 0; i < 3; i++) {
      await c.query('BEGIN');
      await c.query('INSERT INTO t VALUES (2)');
      await c.query('ROLLBACK');
    }
    await c.query('INSERT INTO t VALUES (3)');
    await waitFor(() => memory.get('out').received.length === 2, 'the event after three rollbacks within 5 s', 5_000);
  });

  it('a writer mid-transaction when the drain runs dry is delivered as soon as it commits, not at the next poll', async () => {
    const c = await capturedTable();
    const writer = await db!.client();
    await writer.query('BEGIN');
    await writer.query('INSERT INTO t VALUES (1)');
    const memory = createMemorySinks();
    await startDrain(memory, { pollInterval: '60s' });
    // The drain has nothing visible to do, but cannot set its mark (and sleep) while the writer runs.
    await waitFor(() => bridge?.outbox?.partitions.length === 16, 'the drain running');
    expect((await c.query('SELECT last_value % 1024 = 0 AS armed FROM sidekick.outbox_id_seq')).rows[0].armed).toBe(false);
    expect(bridge?.outbox?.asleep).toBe(false);
    await writer.query('COMMIT');
    await waitFor(() => memory.get('out').received.length === 1, 'the event within 5 s', 5_000);
  });
});
