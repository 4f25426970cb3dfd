import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { capture, capturedClient, install, startBridge } from '../support/bridge.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres.js';

const CLI = resolve('dist/src/cli.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Inserts rows one transaction at a time until `until`, surviving connection loss; returns the committed ids. */
async function writeContinuously(url: string, until: () => boolean): Promise<number[]> {
  const committed: number[] = [];
  let client: pg.Client | undefined;
  while (!until()) {
    try {
      if (!client) {
        client = new pg.Client({ connectionString: url });
        client.on('error', () => {});
        await client.connect();
      }
      const { rows } = await client.query<{ id: number }>('INSERT INTO t (n) VALUES (1) RETURNING id');
      committed.push(rows[0]!.id);
      await sleep(1);
    } catch {
      // The database went away mid-write: that transaction did not (surely) commit. Reconnect.
      await client?.end().catch(() => {});
      client = undefined;
      await sleep(50);
    }
  }
  await client?.end().catch(() => {});
  return committed;
}

describe('outbox: nothing is lost (real PostgreSQL, real processes)', () => {
  let db: TestDatabase | undefined;
  let child: ChildProcess | undefined;
  let server: PrivatePostgres | undefined;
  let bridge: Bridge | undefined;
  afterEach(async () => {
    child?.kill('SIGKILL');
    child = undefined;
    await bridge?.stop();
    bridge = undefined;
    await db?.drop();
    db = undefined;
    await server?.stop();
    server = undefined;
  });

  it('every row arrives although the bridge (node dist/src/cli.js run) is killed with SIGKILL again and again', async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    db = await createTestDatabase();
    const _c = await capturedClient(db, 'CREATE TABLE t (id serial PRIMARY KEY, n int)', [{ table: 't' }]);
    const dir = mkdtempSync(join(tmpdir(), 'sk-kill-'));
    const config = join(dir, 'sidekick.yaml');
    writeFileSync(
      config,
      [
        `database: ${db.url}`,
        'log: { level: info }',
        'outbox: { pollInterval: 200ms, batchSize: 100 }',
        'sinks:',
        '  out: { type: stdout, format: json }',
        'routes:',
        '  - { from: public.t, to: out }',
      ].join('\n'),
    );
    // The bridge's stdout is a pipe this test reads slowly: deliveries back up inside the bridge, so a
    // kill catches events in flight, and only what reached the pipe counts as delivered.
    const outputs: string[] = [];
    /** Starts the bridge; resolves once it drains (its log says so), so every kill hits a working bridge. */
    const startBridgeProcess = () =>
      new Promise<void>((resolveStarted, reject) => {
        const proc = spawn(process.execPath, [CLI, 'run', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
        child = proc;
        const index = outputs.push('') - 1;
        proc.stdout?.on('data', (d: Buffer) => {
          outputs[index] += String(d);
        });
        // Half of the time the pipe is not read (while rows are written); a full pipe blocks the bridge.
        const throttle = setInterval(() => {
          if (!writing) return;
          proc.stdout?.pause();
          setTimeout(() => proc.stdout?.resume(), 100).unref();
        }, 200);
        proc.once('exit', () => clearInterval(throttle));
        let log = '';
        const timer = setTimeout(() => reject(new Error(`the bridge did not start within 30 s:\n${log}`)), 30_000);
        proc.stderr?.on('data', (d: Buffer) => {
          log += String(d);
          if (log.includes('draining outbox partitions')) {
            clearTimeout(timer);
            resolveStarted();
          }
        });
      });
    let writing = true;
    await startBridgeProcess();
    const written = writeContinuously(db.url, () => !writing);
    // Kill it at unpredictable moments while it drains, restart it after a short outage.
    let kills = 0;
    for (; kills < 3; kills++) {
      await sleep(50 + Math.random() * 600);
      const dying = child as ChildProcess;
      dying.kill('SIGKILL');
      // Whatever it had written into the pipe before it died was delivered: read it all.
      await new Promise((r) => dying.once('close', r));
      await sleep(Math.random() * 300);
      await startBridgeProcess();
    }
    await sleep(300);
    writing = false;
    const committed = await written;
    expect(kills).toBe(3);
    expect(committed.length).toBeGreaterThan(100);
    const seenIds = () => {
      const ids = new Set<number>();
      for (const line of outputs.join('\n').split('\n')) {
        if (!line) continue;
        try {
          ids.add((JSON.parse(line) as { new: { id: number } }).new.id);
        } catch {
          // A line cut by SIGKILL mid-write: the event is delivered again after the restart.
        }
      }
      return ids;
    };
    await waitFor(() => committed.every((id) => seenIds().has(id)), `all ${committed.length} committed rows`, 30_000, 200);
    child?.kill('SIGTERM');
    await new Promise((r) => child?.once('exit', r));
    child = undefined;
    expect(committed.filter((id) => !seenIds().has(id))).toEqual([]);
  }, 120_000);

  it('every row arrives although a bridge with a slow asynchronous sink is killed with SIGKILL while events are in flight', async () => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
    db = await createTestDatabase();
    const _c = await capturedClient(db, 'CREATE TABLE t (id serial PRIMARY KEY, n int)', [{ table: 't' }]);
    const output = join(mkdtempSync(join(tmpdir(), 'sk-kill-')), 'events.jsonl');
    writeFileSync(output, '');
    const startChild = () =>
      new Promise<void>((resolveStarted, reject) => {
        const proc = spawn(process.execPath, [resolve('test/support/bridge-child.mjs'), db!.url, output], { stdio: ['ignore', 'ignore', 'pipe'] });
        child = proc;
        let log = '';
        const timer = setTimeout(() => reject(new Error(`the bridge did not start within 30 s:\n${log}`)), 30_000);
        proc.stderr?.on('data', (d: Buffer) => {
          log += String(d);
          if (log.includes('draining outbox partitions')) {
            clearTimeout(timer);
            resolveStarted();
          }
        });
      });
    let writing = true;
    await startChild();
    const written = writeContinuously(db.url, () => !writing);
    for (let kill = 0; kill < 4; kill++) {
      await sleep(100 + Math.random() * 500);
      const dying = child as ChildProcess;
      dying.kill('SIGKILL');
      await new Promise((r) => dying.once('exit', r));
      await startChild();
    }
    await sleep(300);
    writing = false;
    const committed = await written;
    expect(committed.length).toBeGreaterThan(100);
    const seen = () =>
      new Set(
        readFileSync(output, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => (JSON.parse(l) as { new: { id: number } }).new.id),
      );
    await waitFor(() => committed.every((id) => seen().has(id)), `all ${committed.length} committed rows`, 30_000, 200);
  }, 120_000);

  it('every row arrives although the database crashes and restarts while rows are written and drained', async () => {
    server = await startPrivatePostgres();
    const c = new pg.Client({ connectionString: server.url });
    await c.connect();
    await install(c);
    await c.query('CREATE TABLE t (id serial PRIMARY KEY, n int)');
    await capture(c, [{ table: 't' }]);
    await c.end();
    const memory = createMemorySinks();
    bridge = await startBridge(
      server.url,
      { outbox: { pollInterval: '200ms', batchSize: 50 }, sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] },
      [memory.definition],
    );
    const deadline = Date.now() + 4000;
    const writing = writeContinuously(server.url, () => Date.now() > deadline);
    await sleep(1000);
    await server.restart('immediate');
    await sleep(1000);
    await server.restart('fast');
    const committed = await writing;
    expect(committed.length).toBeGreaterThan(200);
    const out = memory.get('out');
    const seen = () => new Set(out.received.map((e) => (e.new as { id: number }).id));
    await waitFor(() => committed.every((id) => seen().has(id)), `all ${committed.length} committed rows`, 30_000, 100);
    expect(bridge.readiness().checks.outbox).toBe(true);
  });
});
