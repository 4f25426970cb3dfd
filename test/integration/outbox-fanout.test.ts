import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { FatalError, RetriableError } from '../../src/errors.js';
import { OK } from '../../src/sink.js';
import { capturedClient } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

const count = async (c: { query: (q: string) => Promise<{ rows: { n: number }[] }> }, sql: string) => (await c.query(sql)).rows[0]?.n;

describe('outbox: fan-out, dead letters, big rows (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;

  it('a failing sink does not hold up another; its events wait in its durable backlog and arrive in order later', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, v int)', [{ table: 't' }]);
    const memory = createMemorySinks();
    const good = memory.get('good');
    const dead = memory.get('dead');
    let down = true;
    dead.behaviour = () => (down ? { ok: false, error: new RetriableError('ECONNREFUSED', 'connection refused', { unavailable: true }) } : OK);
    bridge = await bed.bridge(
      db.url,
      {
        outbox: { sinkBuffer: 10, checkpointAfter: 200, batchSize: 10 },
        sinks: {
          good: { type: 'memory' },
          dead: { type: 'memory', retry: { initialDelay: 20, maxDelay: 100 } },
        },
        routes: [{ from: '*', to: ['good', 'dead'] }],
      },
      [memory.definition],
    );
    for (let round = 0; round < 3; round++) {
      const started = Date.now();
      for (let id = round * 100; id < round * 100 + 100; id++) await c.query('INSERT INTO t VALUES ($1, 0)', [id]);
      for (let id = round * 100; id < round * 100 + 100; id += 10) await c.query('UPDATE t SET v = v + 1 WHERE id = $1', [id]);
      await waitFor(() => good.received.length >= (round + 1) * 110, `the healthy sink, round ${round}`, 5_000);
      // Low latency for the healthy sink even while the other one keeps failing.
      expect(Date.now() - started).toBeLessThan(5_000);
    }
    expect(dead.received).toEqual([]);
    // Nothing of the dead sink's backlog is only in memory: the outbox is empty, its backlog is durable.
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.events')) === 0, 'an empty outbox');
    expect(await count(c, `SELECT count(*)::int AS n FROM sidekick.deliveries WHERE sink = 'dead'`)).toBe(330);
    expect(await count(c, `SELECT count(*)::int AS n FROM sidekick.deliveries WHERE sink = 'good'`)).toBe(0);
    down = false;
    await waitFor(() => dead.received.length >= 330, 'the recovered sink', 15_000);
    const byKey = new Map<string, string[]>();
    for (const e of dead.received) byKey.set(e.key as string, [...(byKey.get(e.key as string) ?? []), e.op as string]);
    for (let id = 0; id < 300; id += 10) expect(byKey.get(String(id)), `key ${id}`).toEqual(['INSERT', 'UPDATE']);
    expect(new Set(dead.received.map((e) => e.id)).size).toBe(330);
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.deliveries')) === 0, 'an empty backlog');
  });

  it('a busy but healthy sink is never moved to its durable backlog, also with a sinkBuffer below batchSize × 4 + one statement chunk', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, v int)', [{ table: 't' }]);
    const memory = createMemorySinks();
    const busy = memory.get('busy');
    // Keeps up, but each delivery takes a moment: the events the drain fetches wait in memory.
    busy.behaviour = () =>
      new Promise((resolve) => {
        setTimeout(() => resolve(OK), 20);
      });
    bridge = await bed.bridge(
      db.url,
      {
        outbox: { sinkBuffer: 3000, batchSize: 1000 },
        sinks: { busy: { type: 'memory', concurrency: 100, batch: { size: 1 } } },
        routes: [{ from: '*', to: 'busy' }],
      },
      [memory.definition],
    );
    // One statement: six outbox rows of 1000 events each.
    await c.query('INSERT INTO t SELECT g, 0 FROM generate_series(1, 6000) g');
    await waitFor(() => busy.received.length >= 6000, 'all 6000 events', 30_000);
    const spilled = (await bridge.metrics.outboxSpilled.get()).values.reduce((sum, v) => sum + v.value, 0);
    expect(spilled, 'events written to sidekick.deliveries').toBe(0);
    expect(new Set(busy.received.map((e) => e.id)).size).toBe(6000);
  });

  it('dead-letters an event for one sink only, with the error and attempts; dlq retry sends it again under the same id', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, v text)', [{ table: 't' }]);
    const memory = createMemorySinks();
    const picky = memory.get('picky');
    const other = memory.get('other');
    let refuse = true;
    picky.behaviour = (e) => {
      const v = (e.new as { v: string }).v;
      if (refuse && v === 'poison') return { ok: false, error: new FatalError('HTTP_400', 'bad request: poison') };
      if (refuse && v === 'flaky') return { ok: false, error: new RetriableError('HTTP_503', 'unavailable') };
      return OK;
    };
    bridge = await bed.bridge(
      db.url,
      {
        sinks: { picky: { type: 'memory', retry: { attempts: 3, initialDelay: 10, maxDelay: 20 } }, other: { type: 'memory' } },
        routes: [{ from: '*', to: ['picky', 'other'] }],
      },
      [memory.definition],
    );
    await c.query(`INSERT INTO t VALUES (1, 'poison'), (2, 'fine'), (3, 'flaky')`);
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.dead_letters')) === 2, 'two dead letters');
    expect(other.received).toHaveLength(3);
    expect(picky.received.map((e) => (e.new as { id: number }).id)).toEqual([2]);
    const { rows } = await c.query(
      'SELECT sink, event_uid AS event_id, attempts, error_code, error, channel, key FROM sidekick.dead_letters ORDER BY key',
    );
    const idOf = (id: number) => other.received.find((e) => (e.new as { id: number }).id === id)?.id;
    expect(rows).toEqual([
      { sink: 'picky', event_id: idOf(1), attempts: 1, error_code: 'HTTP_400', error: 'bad request: poison', channel: 'public.t', key: '1' },
      { sink: 'picky', event_id: idOf(3), attempts: 3, error_code: 'HTTP_503', error: 'unavailable', channel: 'public.t', key: '3' },
    ]);
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.events')) === 0, 'an empty outbox');
    refuse = false;
    const retried = await c.query('SELECT sidekick.retry_dead_letters(array_agg(id)) AS n FROM sidekick.dead_letters');
    expect(Number(retried.rows[0].n)).toBe(2);
    await waitFor(() => picky.received.length >= 3, 'the retried events');
    expect(
      picky.received
        .slice(1)
        .map((e) => e.id)
        .sort(),
    ).toEqual([idOf(1), idOf(3)].sort());
    // Only the sink that had dead-lettered them gets them again: a sentinel row reaches both, and
    // the other sink got nothing before it.
    await c.query(`INSERT INTO t VALUES (4, 'sentinel')`);
    await waitFor(() => other.received.length >= 4 && picky.received.length >= 4, 'the sentinel at both sinks');
    expect(other.received.map((e) => (e.new as { id: number }).id)).toEqual([1, 2, 3, 4]);
    expect(await count(c, 'SELECT count(*)::int AS n FROM sidekick.dead_letters')).toBe(0);
  });

  it('captures and delivers a 200 kB row whole, and a 1 MB published payload; the writes never fail', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE docs (id int PRIMARY KEY, body text)', [{ table: 'docs' }]);
    const memory = createMemorySinks();
    bridge = await bed.bridge(db.url, { sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] }, [memory.definition]);
    const big = 'x'.repeat(100) + Array.from({ length: 200_000 }, (_, i) => String.fromCharCode(97 + ((i * 7919) % 26))).join('');
    await c.query('INSERT INTO docs VALUES (1, $1)', [big]);
    const payload = { blob: 'y'.repeat(1_000_000) };
    await c.query(`SELECT sidekick.publish('blobs', $1::jsonb)`, [JSON.stringify(payload)]);
    const out = memory.get('out');
    await waitFor(() => out.received.length >= 2, 'both big events');
    const row = out.received.find((e) => e.channel === 'public.docs');
    expect((row?.new as { body: string } | undefined)?.body).toBe(big);
    expect(out.received.find((e) => e.channel === 'blobs')?.payload).toEqual(payload);
  });
});
