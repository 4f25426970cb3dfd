import { describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { RetriableError } from '../../src/errors.js';
import { OK } from '../../src/sink.js';
import { capturedClient, install } from '../support/bridge.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { useTestBed } from '../support/bed.js';
import { createMemorySinks } from '../support/memory-sink.js';

/** One sample of a metric in Prometheus text format (NaN when missing). */
function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ').at(-1)) : Number.NaN;
}

describe('/metrics: outbox backlog, oldest age, sink backlog and due schedules (real PostgreSQL)', () => {
  const bed = useTestBed();
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;

  it('shows events waiting and their age while the sink fails, and 0 after it recovers', async () => {
    db = await bed.database();
    const c = await capturedClient(db, 'CREATE TABLE orders (id int PRIMARY KEY, status text)', [{ table: 'public.orders' }]);
    const memory = createMemorySinks();
    const out = memory.get('out');
    let failing = true;
    out.behaviour = () => (failing ? { ok: false, error: new RetriableError('DOWN', 'test: sink down', { unavailable: true }) } : OK);
    bridge = await bed.bridge(
      db.url,
      {
        http: { port: 0 },
        sinks: { out: { type: 'memory', retry: { attempts: 1000, initialDelay: 20, maxDelay: 50 } } },
        routes: [{ from: 'public.*', to: 'out' }],
      },
      [memory.definition],
    );
    const url = `http://127.0.0.1:${bridge.http?.address()?.port}/metrics`;
    const scrape = async () => (await fetch(url)).text();

    await c.query(`INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 20) g`);
    await c.query(`INSERT INTO orders VALUES (21, 'one more')`);
    await waitFor(() => out.attempts.length > 0, 'a failed attempt');
    // The events wait either in the outbox or (after checkpointAfter) in the sink's durable backlog.
    await waitFor(async () => {
      const text = await scrape();
      const waiting = sample(text, 'sidekick_outbox_pending_events') + sample(text, 'sidekick_sink_backlog', 'sink="out"');
      const age = Math.max(
        sample(text, 'sidekick_outbox_oldest_age_seconds'),
        sample(text, 'sidekick_sink_backlog_oldest_age_seconds', 'sink="out"'),
      );
      return waiting === 21 && age > 0;
    }, '21 events waiting with an age > 0 on /metrics');

    failing = false;
    await waitFor(() => out.received.length >= 21, 'delivery after recovery');
    await waitFor(async () => {
      const text = await scrape();
      return (
        sample(text, 'sidekick_outbox_pending_events') === 0 &&
        sample(text, 'sidekick_outbox_oldest_age_seconds') === 0 &&
        sample(text, 'sidekick_sink_backlog', 'sink="out"') === 0 &&
        sample(text, 'sidekick_sink_backlog_oldest_age_seconds', 'sink="out"') === 0
      );
    }, 'backlog and age back to 0');
    const text = await scrape();
    expect(sample(text, 'sidekick_schedules_due')).toBe(0);
    expect(sample(text, 'sidekick_metric_read_errors_total', 'metric="sidekick_outbox_pending_events"')).toBeNaN();
  });

  it('reports due schedules and their lag when the scheduler table exists', async () => {
    db = await bed.database();
    const c = await db.client();
    await install(c);
    // Real one-shot schedules (sql/020_scheduler.sql); this bridge runs no scheduler, so they stay due.
    await c.query(`INSERT INTO sidekick.schedules (run_at, sql) VALUES
      (now() - interval '90 seconds', 'select 1'), (now() - interval '5 seconds', 'select 1'), (now() + interval '1 hour', 'select 1')`);
    await c.query(`INSERT INTO sidekick.schedules (enabled, run_at, sql) VALUES (false, now() - interval '1 day', 'select 1')`);
    bridge = await bed.bridge(db.url, { http: { port: 0 }, sinks: { out: { type: 'stdout' } }, routes: [{ from: '*', to: 'out' }] });
    const text = await (await fetch(`http://127.0.0.1:${bridge.http?.address()?.port}/metrics`)).text();
    expect(sample(text, 'sidekick_schedules_due')).toBe(2);
    expect(sample(text, 'sidekick_schedules_oldest_due_seconds')).toBeGreaterThanOrEqual(90);
    expect(sample(text, 'sidekick_schedules_oldest_due_seconds')).toBeLessThan(200);
  });

  it('leaves the database gauges out without failing the scrape when the database is unreachable', async () => {
    // start() waits for the drain's first connection (which never comes): serve /metrics regardless.
    const config = parseConfig(
      {
        database: 'postgres://postgres@127.0.0.1:1/nowhere',
        http: { port: 0 },
        outbox: { enabled: true },
        sinks: { out: { type: 'stdout' } },
        routes: [{ from: '*', to: 'out' }],
      },
      { file: 'test', env: {}, sinks: sinkDefinitions },
    );
    bridge = createBridge({ config, logger: createLogger({ level: 'silent' }) });
    const started = bridge;
    bed.defer(() => started.stop());
    void bridge.start();
    await waitFor(() => bridge?.http?.address() !== undefined, 'the HTTP endpoint');
    const response = await fetch(`http://127.0.0.1:${bridge.http?.address()?.port}/metrics`);
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(sample(text, 'sidekick_outbox_oldest_age_seconds')).toBeNaN();
    // prom-client writes NaN as "Nan".
    expect(text).toMatch(/^sidekick_outbox_oldest_age_seconds NaN$/im);
    expect(text).toMatch(/^sidekick_schedules_due NaN$/im);
  });
});
