import { describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { dlqListCommand } from '../../src/commands/dlq.js';
import { FatalError } from '../../src/errors.js';
import { OK } from '../../src/sink.js';
import { install } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

/** Issue 16, item 4: NOTIFY events were logged as "dead-lettered" but stored nowhere. */
function io() {
  let out = '';
  let err = '';
  return {
    stdout: {
      write: (s: string) => {
        out += s;
        return true;
      },
    },
    stderr: {
      write: (s: string) => {
        err += s;
        return true;
      },
    },
    env: {},
    out: () => out,
    err: () => err,
  };
}

describe('NOTIFY dead letters (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;

  it('are stored in sidekick.dead_letters when the schema is installed; dlq list shows them and a retry delivers them under the same id', async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    const memory = createMemorySinks();
    const out = memory.get('out');
    let refuse = true;
    out.behaviour = () => (refuse ? { ok: false, error: new FatalError('HTTP_422', 'unprocessable') } : OK);
    bridge = await bed.bridge(db.url, { listen: ['jobs'], sinks: { out: { type: 'memory' } }, routes: [{ from: 'jobs', to: 'out' }] }, [
      memory.definition,
    ]);
    await c.query(`SELECT pg_notify('jobs', 'plain text')`);
    await c.query(`SELECT pg_notify('jobs', $1)`, [String.raw`{"a":"\u0000"}`]);
    await waitFor(async () => (await c.query('SELECT count(*)::int AS n FROM sidekick.dead_letters')).rows[0].n === 2, 'two dead letters');
    const attempted = out.attempts.map((e) => e.id);
    const { rows } = await c.query(
      `SELECT sink, event_id, event_uid, source, channel, xid, error_code, payload::text AS payload FROM sidekick.dead_letters ORDER BY id`,
    );
    expect(rows).toEqual([
      {
        sink: 'out',
        event_id: null,
        event_uid: attempted[0],
        source: 'notify',
        channel: 'jobs',
        xid: null,
        error_code: 'HTTP_422',
        payload: '"plain text"',
      },
      {
        sink: 'out',
        event_id: null,
        event_uid: attempted[1],
        source: 'notify',
        channel: 'jobs',
        xid: null,
        error_code: 'HTTP_422',
        payload: String.raw`{"a":"\u0000"}`,
      },
    ]);
    const list = io();
    expect(await dlqListCommand({ database: db.url, json: true }, list as never)).toBe(0);
    const listed = JSON.parse(list.out()) as { event: { id: string; source: string; payload: unknown } }[];
    expect(listed.map((l) => l.event).reverse()).toEqual([
      expect.objectContaining({ id: attempted[0], source: 'notify', payload: 'plain text' }),
      expect.objectContaining({ id: attempted[1], source: 'notify', payload: { a: '\u0000' } }),
    ]);
    refuse = false;
    await c.query('SELECT sidekick.retry_dead_letters(array_agg(id ORDER BY id)) FROM sidekick.dead_letters');
    await waitFor(() => out.received.length === 2, 'the retried NOTIFY events');
    expect(out.received.map((e) => [e.id, e.source, e.channel, e.payload])).toEqual([
      [attempted[0], 'notify', 'jobs', 'plain text'],
      [attempted[1], 'notify', 'jobs', { a: '\u0000' }],
    ]);
  });

  it('without the schema they are said to be dropped (logged whole) and counted as dropped', async () => {
    db = await bed.database();
    const c = await db.client();
    const memory = createMemorySinks();
    memory.get('out').behaviour = () => ({ ok: false, error: new FatalError('HTTP_422', 'unprocessable') });
    const lines: string[] = [];
    bridge = await bed.bridge(
      db.url,
      { listen: ['jobs'], sinks: { out: { type: 'memory' } }, routes: [{ from: 'jobs', to: 'out' }] },
      [memory.definition],
      { write: (line: string) => lines.push(line) },
    );
    await c.query(`SELECT pg_notify('jobs', 'lost')`);
    await waitFor(() => lines.find((l) => l.includes('is dropped, not dead-lettered')), 'the line that says so');
    const line = JSON.parse(lines.find((l) => l.includes('is dropped, not dead-lettered')) as string) as { event: { payload: string }; why: string };
    expect(line.event.payload).toBe('lost');
    expect(line.why).toContain('sidekick install');
    expect(await bridge.metrics.registry.getSingleMetricAsString('sidekick_events_dropped_total')).toContain('{sink="out"} 1');
    expect(lines.some((l) => l.includes('written to sidekick.dead_letters'))).toBe(false);
  });
});
