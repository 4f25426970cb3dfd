import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import type { Envelope } from '../../src/envelope.js';
import { FatalError, RetriableError } from '../../src/errors.js';
import { OK } from '../../src/sink.js';
import { capturedClient } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

/**
 * Issue 16, item 1: a captured `json` column may hold what `jsonb` refuses (\u0000, an unpaired
 * surrogate). Such an event once broke the drain's bookkeeping every round as soon as it had to be
 * stored (dead letter or backlog): endless reconnects, everything in flight sent again and again.
 */
const POISON = [String.raw`{"a":"\u0000"}`, String.raw`{"a":"\ud800"}`];
const docOf = (e: Envelope) => (e.new as { doc: { a?: string } } | null)?.doc;
const isPoison = (e: Envelope) => typeof docOf(e)?.a === 'string' && (docOf(e)?.a === '\u0000' || docOf(e)?.a === '\ud800');
const count = async (c: { query: (q: string) => Promise<{ rows: { n: number }[] }> }, sql: string) => (await c.query(sql)).rows[0]?.n;

describe('outbox: events that jsonb refuses (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;

  it('are delivered where the sink takes them and dead-lettered exactly as they are where it refuses them; nothing else is held up or repeated', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, doc json)', [{ table: 't' }]);
    const memory = createMemorySinks();
    const all = memory.get('all');
    const picky = memory.get('picky');
    picky.behaviour = (e) => (isPoison(e) ? { ok: false, error: new FatalError('HTTP_400', 'bad request') } : OK);
    bridge = await bed.bridge(
      db.url,
      {
        sinks: { all: { type: 'memory' }, picky: { type: 'memory' } },
        routes: [{ from: '*', to: ['all', 'picky'] }],
      },
      [memory.definition],
    );
    await c.query(`INSERT INTO t VALUES (1, '{"a":"fine"}')`);
    await c.query('INSERT INTO t VALUES (2, $1), (3, $2)', POISON);
    for (let id = 4; id <= 50; id++) await c.query(`INSERT INTO t VALUES ($1, '{"a":"fine"}')`, [id]);
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.events')) === 0, 'an empty outbox', 10_000);
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.dead_letters')) === 2, 'two dead letters', 10_000);
    // Delivered once each: the drain never started over (it would have sent everything in flight again).
    expect(all.received.map((e) => (e.new as { id: number }).id)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(docOf(all.received[1] as Envelope)?.a).toBe('\u0000');
    expect(docOf(all.received[2] as Envelope)?.a).toBe('\ud800');
    expect(picky.received).toHaveLength(48);
    // Stored losslessly: the dead letters hold the very JSON text the row had.
    // (Read as text: json's own operators decode the escapes and fail on them, as jsonb does.)
    const { rows } = await c.query<{ t: string }>(`SELECT new::text AS t FROM sidekick.dead_letters ORDER BY key`);
    expect(rows.map((r) => r.t)).toEqual([`{"id":2,"doc":${POISON[0]}}`, `{"id":3,"doc":${POISON[1]}}`]);
    // And a retry sends them back intact.
    picky.behaviour = () => OK;
    await c.query('SELECT sidekick.retry_dead_letters(array_agg(id)) FROM sidekick.dead_letters');
    await waitFor(() => picky.received.length === 50, 'the two retried events');
    expect(
      picky.received
        .slice(48)
        .map((e) => docOf(e)?.a)
        .sort(),
    ).toEqual(['\u0000', '\ud800']);
  });

  it("wait in a failing sink's durable backlog exactly as they are, and arrive intact once it is back", async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, doc json)', [{ table: 't' }]);
    const memory = createMemorySinks();
    const all = memory.get('all');
    const down = memory.get('down');
    let failing = true;
    down.behaviour = () => (failing ? { ok: false, error: new RetriableError('ECONNREFUSED', 'connection refused', { unavailable: true }) } : OK);
    bridge = await bed.bridge(
      db.url,
      {
        outbox: { checkpointAfter: 100 },
        sinks: { all: { type: 'memory' }, down: { type: 'memory', retry: { initialDelay: 20, maxDelay: 50 } } },
        routes: [{ from: '*', to: ['all', 'down'] }],
      },
      [memory.definition],
    );
    await c.query('INSERT INTO t VALUES (1, $1), (2, $2)', POISON);
    await c.query(`INSERT INTO t VALUES (3, '{"a":"fine"}')`);
    await waitFor(
      async () => (await count(c, `SELECT count(*)::int AS n FROM sidekick.deliveries WHERE sink = 'down'`)) === 3,
      'the backlog',
      10_000,
    );
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.events')) === 0, 'an empty outbox');
    const stored = await c.query<{ t: string }>(`SELECT new::text AS t FROM sidekick.deliveries WHERE key IN ('1', '2') ORDER BY key`);
    expect(stored.rows.map((r) => r.t)).toEqual([`{"id":1,"doc":${POISON[0]}}`, `{"id":2,"doc":${POISON[1]}}`]);
    expect(all.received).toHaveLength(3);
    failing = false;
    await waitFor(() => down.received.length === 3, 'the backlog delivered', 10_000);
    expect(down.received.map((e) => docOf(e)?.a)).toEqual(['\u0000', '\ud800', 'fine']);
    expect(all.received).toHaveLength(3);
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.deliveries')) === 0, 'an empty backlog');
  });

  it('one event a store refuses for any reason (here a CHECK constraint added by the test) is set apart; the rest of the round is written', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE t (id int PRIMARY KEY, doc json)', [{ table: 't' }]);
    // The backlog refuses keys 1 and 7, the dead letters key 13. With sinkBuffer 2 the slow sink holds
    // 1 and 2 in memory (their checkpoint copies come later) and the rest go straight to its backlog.
    // Key 1's copy is refused: not needed, the event stays live and keeps its outbox row. Key 7 is
    // nowhere else: a dead letter saying why. Key 13's dead letter is refused even as JSON text: it
    // is logged whole and counted as dropped. Everything else goes on as usual.
    await c.query(`ALTER TABLE sidekick.deliveries ADD CONSTRAINT test_refuse CHECK (key NOT IN ('1', '7'))`);
    await c.query(`ALTER TABLE sidekick.dead_letters ADD CONSTRAINT test_refuse CHECK (key <> '13')`);
    const memory = createMemorySinks();
    const all = memory.get('all');
    const slow = memory.get('slow');
    let failing = true;
    slow.behaviour = (e) => {
      if ((e.new as { id: number }).id === 13) return { ok: false, error: new FatalError('HTTP_400', 'bad request') };
      return failing ? { ok: false, error: new RetriableError('ECONNREFUSED', 'connection refused', { unavailable: true }) } : OK;
    };
    bridge = await bed.bridge(
      db.url,
      {
        outbox: { checkpointAfter: 100, sinkBuffer: 2, batchSize: 2 },
        sinks: { all: { type: 'memory' }, slow: { type: 'memory', retry: { initialDelay: 20, maxDelay: 50 } } },
        routes: [{ from: '*', to: ['all', 'slow'] }],
      },
      [memory.definition],
    );
    for (let id = 1; id <= 12; id++) await c.query(`INSERT INTO t VALUES ($1, '{}')`, [id]);
    await waitFor(
      async () => (await count(c, `SELECT count(*)::int AS n FROM sidekick.deliveries WHERE sink = 'slow'`)) === 10,
      'the backlog without keys 1 and 7',
      10_000,
    );
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.events')) === 1, 'only key 1 left in the outbox');
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.dead_letters')) === 1, 'the dead letter of key 7');
    const dead = await c.query<{ key: string; error_code: string; error: string }>('SELECT key, error_code, error FROM sidekick.dead_letters');
    expect(dead.rows).toEqual([
      { key: '7', error_code: 'STORE_REFUSED', error: expect.stringContaining("could not be stored in the sink's backlog") },
    ]);
    await c.query(`INSERT INTO t VALUES (13, '{}'), (14, '{}')`);
    failing = false;
    await waitFor(() => slow.received.length === 12, 'the backlog, 1 and 14 delivered', 10_000);
    await waitFor(async () => (await count(c, 'SELECT count(*)::int AS n FROM sidekick.events')) === 0, 'an empty outbox');
    // Each event once: no round was repeated (a failed bookkeeping statement makes the drain start over).
    expect(all.received.map((e) => (e.new as { id: number }).id)).toEqual(Array.from({ length: 14 }, (_, i) => i + 1));
    expect(slow.received.map((e) => (e.new as { id: number }).id).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 14]);
    const metric = (name: string) => bridge!.metrics.registry.getSingleMetricAsString(name);
    await waitFor(async () => (await metric('sidekick_events_dropped_total')).includes('{sink="slow"} 1'), 'key 13 logged and counted as dropped');
    expect(await metric('sidekick_events_store_refused_total')).toContain('{sink="slow"} 3');
  });
});
