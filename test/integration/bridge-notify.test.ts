import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { RetriableError } from '../../src/errors.js';
import { defineSink, OK } from '../../src/sink.js';
import { quietLogger } from '../contract/sink-contract.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';

function capture() {
  const out = new PassThrough();
  let text = '';
  out.on('data', (c: Buffer) => {
    text += c.toString();
  });
  return {
    out,
    lines: () =>
      text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('bridge: NOTIFY → router → stdout (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;
  afterEach(async () => {
    await bridge?.stop();
    await db?.drop();
    bridge = undefined;
    db = undefined;
  });

  it('turns each notification into an envelope, routed by channel, case-sensitively', async () => {
    db = await createTestDatabase();
    const { out, lines } = capture();
    const config = parseConfig(
      {
        database: db.url,
        listen: ['Jobs', 'audit'],
        sinks: { console: { type: 'stdout' } },
        routes: [{ from: ['Jobs', 'audit'], to: ['console'] }],
      },
      { env: {}, sinks: sinkDefinitions },
    );
    bridge = createBridge({ config, logger: quietLogger, stdout: out });
    await bridge.start();
    expect(bridge.readiness().ready).toBe(true);
    const c = await db.client();
    await c.query(`SELECT pg_notify('Jobs', '{"job": 1}')`);
    await c.query(`NOTIFY Jobs, 'folded to lower case: not heard'`);
    await c.query(`SELECT pg_notify('audit', 'not json {')`);
    await c.query(`SELECT pg_notify('audit', '')`);
    const got = await waitFor(() => {
      const l = lines();
      return l.length >= 3 ? l : undefined;
    }, 'three envelopes');
    expect(got.map((e) => [e.channel, e.payload])).toEqual([
      ['Jobs', { job: 1 }],
      ['audit', 'not json {'],
      ['audit', ''],
    ]);
    const pid = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p;
    expect(got[0]).toMatchObject({ source: 'notify', pid });
    expect(new Set(got.map((e) => e.id)).size).toBe(3);
  });

  it('reconnects after pg_terminate_backend, LISTENs again and carries on', async () => {
    db = await createTestDatabase();
    const { out, lines } = capture();
    const config = parseConfig(
      {
        database: db.url,
        listen: ['ch'],
        sinks: { console: { type: 'stdout' } },
        routes: [{ from: '*', to: 'console' }],
      },
      { env: {}, sinks: sinkDefinitions },
    );
    bridge = createBridge({ config, logger: quietLogger, stdout: out });
    await bridge.start();
    const c = await db.client();
    await c.query(`SELECT pg_notify('ch', 'before')`);
    await waitFor(() => lines().length === 1, 'first envelope');
    const killed = await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'`);
    expect(killed.rowCount).toBe(1);
    await waitFor(() => !bridge!.readiness().ready, 'readiness to drop');
    await waitFor(() => bridge!.readiness().ready, 'the listener to come back');
    expect((await c.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'`)).rowCount).toBe(1);
    await c.query(`SELECT pg_notify('ch', 'after')`);
    await waitFor(() => lines().length === 2, 'envelope after reconnect');
    expect(lines().map((e) => e.payload)).toEqual(['before', 'after']);
    expect((await bridge.metrics.reconnects.get()).values[0]?.value).toBe(1);
  });

  it('a sink that keeps failing is retried and never blocks the listener or other sinks (in-process failing sink, test double)', async () => {
    db = await createTestDatabase();
    const { out, lines } = capture();
    let attempts = 0;
    // The failing sink is a test double: it stands for any destination that is down.
    const failing = defineSink({
      type: 'always-down',
      description: 'test double',
      options: { note: z.string().optional() },
      create: (_o, ctx) => ({
        name: ctx.name,
        type: 'always-down',
        async start() {},
        async stop() {},
        async send(batch) {
          attempts += batch.length;
          return batch.map(() => ({ ok: false, error: new RetriableError('HTTP_503', 'down') }));
        },
      }),
    });
    const config = parseConfig(
      {
        database: db.url,
        listen: ['ch'],
        sinks: { console: { type: 'stdout' }, down: { type: 'always-down', retry: { attempts: 2, initialDelay: 5, maxDelay: 10 } } },
        routes: [{ from: 'ch', to: ['down', 'console'] }],
      },
      { env: {}, sinks: [...sinkDefinitions, failing] },
    );
    bridge = createBridge({ config, logger: quietLogger, stdout: out });
    await bridge.start();
    const c = await db.client();
    await c.query(`SELECT pg_notify('ch', i::text) FROM generate_series(1, 100) i`);
    await waitFor(() => lines().length === 100, '100 envelopes on stdout');
    expect(lines().map((e) => e.payload)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    await waitFor(
      async () => ((await bridge!.metrics.dead.get()).values.find((v) => v.labels.sink === 'down')?.value ?? 0) === 100,
      'all 100 dead-lettered at the failing sink',
    );
    expect(attempts).toBe(200);
    void OK;
  });
});
