import { spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { createMetrics } from '../../src/metrics.js';
import { createHeartbeat } from '../../src/readiness.js';
import { adminUrl, createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';

const quiet = createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, cb) => cb() }) });

/** `name{labels} value` lines of the Prometheus text format → a map (label order as printed). */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

async function get(base: string, path: string, init?: RequestInit): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`${base}${path}`, { ...init, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

async function withAdmin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

describe('HTTP endpoint: /metrics, /healthz, /readyz (real bridge, real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;
  afterEach(async () => {
    await bridge?.stop();
    bridge = undefined;
    if (db) await withAdmin((c) => c.query(`ALTER DATABASE "${db!.name}" ALLOW_CONNECTIONS true`)).catch(() => {});
    await db?.drop();
    db = undefined;
  });

  function startBridge(url: string, extra: Record<string, unknown> = {}) {
    const stdout = new PassThrough();
    let text = '';
    stdout.on('data', (c: Buffer) => {
      text += c.toString();
    });
    const config = parseConfig(
      {
        database: url,
        listen: ['jobs', 'stray'],
        sinks: { console: { type: 'stdout', format: 'json' } },
        routes: [{ from: 'jobs', to: ['console'] }],
        http: { port: 0 },
        ...extra,
      },
      { file: 'http-test.yaml', env: {}, sinks: sinkDefinitions },
    );
    const b = createBridge({ config, logger: quiet, metrics: createMetrics({ defaultMetrics: true }), stdout });
    return { bridge: b, lines: () => text.split('\n').filter(Boolean) };
  }

  it('serves counters that match what the stdout sink received, plus process and database gauges', async () => {
    db = await createTestDatabase();
    const started = startBridge(db.url);
    bridge = started.bridge;
    await bridge.start();
    const address = bridge.http?.address();
    expect(address?.host).toBe('127.0.0.1');
    const base = `http://127.0.0.1:${address?.port}`;

    const c = await db.client();
    for (let i = 0; i < 60; i++) await c.query(`SELECT pg_notify('jobs', $1)`, [JSON.stringify({ n: i })]);
    for (let i = 0; i < 3; i++) await c.query(`SELECT pg_notify('stray', 'x')`);
    await waitFor(() => started.lines().length >= 60, '60 lines on the stdout sink');

    const res = await get(base, '/metrics');
    expect(res.status).toBe(200);
    expect(res.type).toMatch(/^text\/plain; version=0\.0\.4/);
    const m = parseMetrics(res.text);
    const printed = started.lines().length;
    expect(printed).toBe(60);
    expect(m.get('sidekick_events_received_total{source="notify",channel="jobs"}')).toBe(60);
    expect(m.get('sidekick_events_received_total{source="notify",channel="stray"}')).toBe(3);
    expect(m.get('sidekick_events_unrouted_total{channel="stray"}')).toBe(3);
    expect(m.get('sidekick_events_delivered_total{sink="console"}')).toBe(printed);
    expect(m.get('sidekick_delivery_latency_seconds_count{sink="console"}')).toBe(printed);
    expect(m.get('sidekick_listener_connected')).toBe(1);
    const usage = m.get('sidekick_notification_queue_usage');
    expect(usage).toBeGreaterThanOrEqual(0);
    expect(usage).toBeLessThan(1);
    // Node's default process metrics are there (createMetrics({ defaultMetrics: true })).
    expect(m.get('process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect([...m.keys()].some((k) => k.startsWith('sidekick_build_info{version='))).toBe(true);

    const health = await get(base, '/healthz');
    expect(health).toMatchObject({ status: 200, text: 'ok\n' });
    expect((await get(base, '/nope')).status).toBe(404);
    expect((await get(base, '/metrics', { method: 'POST' })).status).toBe(405);
    const head = await fetch(`${base}/readyz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
  });

  // Issue 16 item 10: per-sink series appeared only at their first increment (an alert on
  // increase(…dead_lettered_total[15m]) missed each sink's first dead letter), and `promtool check
  // metrics` failed on prom-client's nodejs_active_*_total gauges.
  it('the real /metrics passes `promtool check metrics`, with every per-sink series at 0 before any event', async () => {
    db = await createTestDatabase();
    const started = startBridge(db.url, {
      sinks: { console: { type: 'stdout', format: 'json' }, audit: { type: 'stdout', format: 'payload' } },
      routes: [{ from: 'jobs', to: ['console', 'audit'] }],
      outbox: { enabled: true },
    });
    bridge = started.bridge;
    await bridge.start();
    const res = await get(`http://127.0.0.1:${bridge.http?.address()?.port}`, '/metrics');
    expect(res.status).toBe(200);
    const m = parseMetrics(res.text);
    for (const sink of ['console', 'audit']) {
      for (const name of [
        'sidekick_events_delivered_total',
        'sidekick_events_retried_total',
        'sidekick_events_dead_lettered_total',
        'sidekick_events_dropped_total',
        'sidekick_outbox_spilled_total',
      ]) {
        expect(m.get(`${name}{sink="${sink}"}`), `${name}{sink="${sink}"}`).toBe(0);
      }
      expect(m.get(`sidekick_delivery_failures_total{sink="${sink}",retriable="true"}`)).toBe(0);
      expect(m.get(`sidekick_delivery_failures_total{sink="${sink}",retriable="false"}`)).toBe(0);
    }
    // Debian's promtool (prometheus package), installed by `scripts/services.sh up tools`.
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: res.text, encoding: 'utf8' });
    expect(promtool.error, 'promtool is missing: run scripts/services.sh up tools').toBeUndefined();
    expect(`${promtool.stdout}${promtool.stderr}`).toBe('');
    expect(promtool.status).toBe(0);
    // The checker is real: a gauge named like a counter fails it.
    const bad = spawnSync('promtool', ['check', 'metrics'], { input: '# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n', encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(`${bad.stdout}${bad.stderr}`).toMatch(/non-counter metrics should not have "_total" suffix/);
  });

  it('/readyz is 200 while connected, 503 naming the listener once the database is unreachable, 200 again after', async () => {
    db = await createTestDatabase();
    bridge = startBridge(db.url).bridge;
    await bridge.start();
    const base = `http://127.0.0.1:${bridge.http?.address()?.port}`;

    const ready = await get(base, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.type).toBe('application/json');
    expect(JSON.parse(ready.text)).toEqual({ ready: true, checks: { 'sink:console': true, listener: true, running: true } });
    // A scrape opens the stats connection, so the outage below must cut that one too.
    expect((await get(base, '/metrics')).status).toBe(200);

    // The database goes away for this bridge: no new connections, the existing ones killed.
    const name = db.name;
    await withAdmin(async (c) => {
      await c.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
      await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [name]);
    });
    const down = await waitFor(async () => {
      const r = await get(base, '/readyz');
      return r.status === 503 ? r : undefined;
    }, '/readyz to answer 503');
    expect(JSON.parse(down.text)).toEqual({
      ready: false,
      checks: { 'sink:console': true, listener: false, running: true },
      failing: ['listener'],
    });
    // /healthz stays 200 (the process is alive), and /metrics still answers, without the database's numbers.
    expect((await get(base, '/healthz')).status).toBe(200);
    const scrape = await get(base, '/metrics');
    expect(scrape.status).toBe(200);
    const m = parseMetrics(scrape.text);
    expect(m.get('sidekick_listener_connected')).toBe(0);
    expect(m.get('sidekick_notification_queue_usage')).toBeNaN();
    // The failed read is counted during that scrape, so it shows from the next one on.
    const again = parseMetrics((await get(base, '/metrics')).text);
    expect(again.get('sidekick_metric_read_errors_total{metric="sidekick_notification_queue_usage"}')).toBeGreaterThanOrEqual(1);

    await withAdmin((c) => c.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`));
    await waitFor(async () => (await get(base, '/readyz')).status === 200, '/readyz back to 200 after the database returns', 20_000, 50);
  });

  it('lets a source add its own check (a heartbeat that goes stale fails /readyz)', async () => {
    db = await createTestDatabase();
    bridge = startBridge(db.url).bridge;
    await bridge.start();
    const base = `http://127.0.0.1:${bridge.http?.address()?.port}`;
    let now = 1_000;
    const heartbeat = createHeartbeat(5_000, () => now);
    const remove = bridge.registerReadinessCheck('outbox', heartbeat.alive);
    expect(JSON.parse((await get(base, '/readyz')).text)).toMatchObject({ ready: false, failing: ['outbox'] });
    heartbeat.beat();
    expect((await get(base, '/readyz')).status).toBe(200);
    now += 5_001;
    expect(JSON.parse((await get(base, '/readyz')).text)).toMatchObject({ ready: false, failing: ['outbox'] });
    remove();
    expect((await get(base, '/readyz')).status).toBe(200);
  });

  it('is off without an http section, and a port in use fails start() with a clear message', async () => {
    db = await createTestDatabase();
    const config = parseConfig({ database: db.url, sinks: { console: { type: 'stdout' } } }, { env: {}, sinks: sinkDefinitions });
    const quietBridge = createBridge({ config, logger: quiet, stdout: new PassThrough() });
    expect(quietBridge.http).toBeUndefined();
    await quietBridge.stop();

    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      bridge = startBridge(db.url, { http: { port } }).bridge;
      await expect(bridge.start()).rejects.toThrow(new RegExp(`cannot serve /metrics on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*set http\\.port`));
    } finally {
      blocker.close();
    }
  });
});
