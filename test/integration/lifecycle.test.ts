import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { adminUrl, createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres.js';
import { REPO_ROOT } from '../support/services.js';

// These tests run the built CLI as a user would: `node dist/src/cli.js …` in a child process, with
// real signals and exit codes. `npm test` builds first; when run alone, a missing or stale build is
// rebuilt here.
const CLI = join(REPO_ROOT, 'dist', 'src', 'cli.js');

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

beforeAll(() => {
  const built = existsSync(CLI) ? statSync(CLI).mtimeMs : 0;
  const sources = Math.max(newestSource(join(REPO_ROOT, 'src')), newestSource(join(REPO_ROOT, 'sinks')));
  if (built < sources) execFileSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'ignore', timeout: 120_000 });
}, 150_000);

const dir = mkdtempSync(join(tmpdir(), 'sidekick-lifecycle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileSeq = 0;
function configFile(text: string): string {
  const file = join(dir, `config-${++fileSeq}.yaml`);
  writeFileSync(file, text);
  return file;
}

interface Running {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Parsed JSON log lines from stderr. */
  logs(): Record<string, unknown>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function start(args: string[], env: Record<string, string> = {}): Running {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: dir,
    // No DATABASE_URL / PG* from the test runner: each config says where its database is.
    env: { PATH: process.env.PATH ?? '', LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString();
  });
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    logs: () =>
      err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    exited,
  };
}

async function exitOf(run: Running, timeoutMs = 20_000) {
  let timer: NodeJS.Timeout | undefined;
  const result = await Promise.race([
    run.exited,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the CLI did not exit within ${timeoutMs} ms; stderr:\n${run.stderr()}`)), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  return result;
}

/** The port the bridge bound for /metrics (config says port 0), from its log line. */
async function httpBase(run: Running): Promise<string> {
  const line = await waitFor(
    () => run.logs().find((l) => l.msg === 'serving /metrics, /healthz, /readyz'),
    `the HTTP endpoint; stderr:\n${run.stderr()}`,
  );
  return `http://127.0.0.1:${line.port as number}`;
}

async function readyz(base: string): Promise<{ status: number; body: { ready: boolean; checks: Record<string, boolean> } }> {
  const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5_000) });
  return { status: res.status, body: (await res.json()) as { ready: boolean; checks: Record<string, boolean> } };
}

function bridgeConfig(database: string, extra = '', sinkExtra = ''): string {
  return configFile(`database: ${database}
listen: [burst]
sinks:
  console: { type: stdout, format: payload${sinkExtra} }
routes:
  - { from: burst, to: [console] }
http: { port: 0 }
${extra}`);
}

describe('sidekick run: a broken config exits 1 naming the file and the key (built CLI)', () => {
  const cases: [string, string, Record<string, string>, RegExp][] = [
    ['an unknown key', 'sinks:\n  console: { type: stdout, colour: red }\n', {}, /sinks\.console\.colour: unknown key/],
    ['a wrong type', 'sinks:\n  console: { type: stdout, concurrency: many }\n', {}, /sinks\.console\.concurrency: .*number/],
    [
      'a route to a missing sink',
      'sinks:\n  console: { type: stdout }\nroutes:\n  - { from: "*", to: [console, nope] }\n',
      {},
      /routes\[0\]\.to\[1\]: no sink named "nope"/,
    ],
    ['a YAML syntax error', 'sinks:\n  console: { type: stdout\nroutes: []\n', {}, /invalid YAML in .* at line \d+, column \d+/],
    [
      'a missing environment variable',
      'database: ${SIDEKICK_TEST_NO_SUCH_VAR}\nsinks: {}\n',
      {},
      /database: environment variable SIDEKICK_TEST_NO_SUCH_VAR is not set/,
    ],
    ['an unknown LOG_LEVEL', 'sinks: {}\n', { LOG_LEVEL: 'loud' }, /LOG_LEVEL: unknown level "loud"/],
  ];
  it.each(cases)('%s', async (_what, text, env, reason) => {
    const file = configFile(text);
    const run = start(['run', '--config', file], env);
    const { code } = await exitOf(run);
    expect(code).toBe(1);
    expect(run.stderr()).toMatch(reason);
    if (!/LOG_LEVEL/.test(reason.source)) expect(run.stderr()).toContain(file);
    expect(run.stderr()).not.toMatch(/^\s+at /m); // a reason, not a stack trace
    expect(run.stdout()).toBe('');
  });
});

// Issue 16 item 7: no command prints a stack trace for an expected failure. Every command that
// takes a database or a config, with a database that refuses connections and with a broken config.
describe('every command: an unreachable database or a broken config is one line, never a stack (built CLI)', () => {
  const down = 'postgres://nobody@127.0.0.1:1/none';
  const commands: string[][] = [
    ['install'],
    ['uninstall', '--yes'],
    ['status'],
    ['dlq', 'list'],
    ['dlq', 'retry', '--all'],
    ['dlq', 'purge', '--all'],
    ['schedule', 'list'],
    ['schedule', 'add', 'nightly', '--cron', '0 3 * * *', '--sql', 'select 1'],
    ['schedule', 'remove', 'nightly'],
    ['schedule', 'history'],
    ['backfill', 'public.orders'],
    ['triggers', '--apply'],
  ];
  const capture = () => configFile(`database: ${down}\nsinks: {}\ncapture:\n  - { table: public.orders }\n`);
  // A wrong type, an unknown sink type, an unknown key and a route to a missing sink: all reported.
  const broken = () =>
    configFile('lisen: [x]\nsinks:\n  hook: { type: webhook, url: 42 }\n  k: { type: kafak }\nroutes:\n  - { from: "*", to: [nope] }\n');

  it.each(commands)('%s … with the database down', async (...args) => {
    const run = start([...args, ...(args[0] === 'triggers' ? ['--config', capture()] : ['--database', down])]);
    const { code } = await exitOf(run);
    expect(code).not.toBe(0);
    expect(run.stderr()).toMatch(/ECONNREFUSED|Connection refused/);
    expect(run.stderr(), run.stderr()).not.toMatch(/^\s+at /m);
    expect(run.stderr().trim().split('\n')).toHaveLength(1);
  });

  it.each([...commands, ['check'], ['run']])('%s … with a broken config', async (...args) => {
    const file = broken();
    const run = start([...args, '--config', file]);
    const { code } = await exitOf(run);
    expect(code).toBe(1);
    expect(run.stderr()).toContain(file);
    expect(run.stderr()).toContain('lisen: unknown key');
    expect(run.stderr()).toMatch(/sinks\.hook\.url: .*string/);
    expect(run.stderr()).toContain('sinks.k.type: unknown sink type "kafak"');
    expect(run.stderr()).toContain('routes[0].to[0]: no sink named "nope"');
    expect(run.stderr(), run.stderr()).not.toMatch(/^\s+at /m);
  });

  it('a YAML alias bomb is one line naming the file', async () => {
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 8; i++)
      levels.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(',')}]`,
      );
    const file = configFile(`${levels.join('\n')}\nsinks: {}\n`);
    const run = start(['check', '--config', file]);
    expect((await exitOf(run)).code).toBe(1);
    expect(run.stderr()).toMatch(new RegExp(`^sidekick: invalid YAML in ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*alias`, 'm'));
    expect(run.stderr()).not.toMatch(/^\s+at /m);
  });
});

describe('sidekick run: signals and lost connections (built CLI, real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let silent: Server | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    silent?.close();
    silent = undefined;
    await db?.drop();
    db = undefined;
  });

  it('SIGTERM during a burst: exit 0, and every notification the bridge received is printed, in order', async () => {
    db = await createTestDatabase();
    const run = start(['run', '--config', bridgeConfig(db.url, 'shutdown: { timeout: 30s }')]);
    const base = await httpBase(run);
    await waitFor(async () => (await readyz(base)).status === 200, 'the bridge to be ready');

    // A writer keeps notifying until the bridge is gone: 5 000 notifications per transaction (they
    // arrive together at commit) every 200 ms; the signal goes out as the first ones are printed, so
    // it lands while thousands are queued or in flight. (The pause keeps the offered load below
    // maxQueued: ephemeral events beyond it would be dropped by design.)
    const writer = await db.client();
    const chunk = 5_000;
    let sent = 0;
    let writing = true;
    const burst = (async () => {
      while (writing) {
        await writer.query(`SELECT pg_notify('burst', g::text) FROM generate_series($1::int, $2::int) g`, [sent, sent + chunk - 1]);
        sent += chunk;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    await waitFor(() => run.stdout().split('\n').length > 300, 'the burst to start arriving');
    run.child.kill('SIGTERM');
    const { code } = await exitOf(run, 60_000);
    writing = false;
    await burst;

    expect(code).toBe(0);
    const stopped = run.logs().find((l) => l.msg === 'stopped');
    expect(stopped, run.stderr()).toBeDefined();
    const received = stopped!.received as number;
    const printed = run.stdout().split('\n').filter(Boolean);
    expect(received).toBeGreaterThan(300);
    expect(received).toBeLessThanOrEqual(sent);
    expect(stopped).toMatchObject({ delivered: received, deadLettered: 0, dropped: 0 });
    expect(printed).toEqual(Array.from({ length: received }, (_, i) => String(i)));
    const stopping = run
      .logs()
      .find((l) => l.msg === 'stopping: taking no new events, finishing in-flight deliveries (send the signal again to exit at once)');
    expect(stopping).toMatchObject({ signal: 'SIGTERM' });
    expect(stopping!.inFlight).toBeGreaterThan(0);
  });

  it('a second signal forces the exit (130) while the first one is still stopping', async () => {
    // A "database" that accepts connections and never answers: connecting hangs, so the graceful
    // stop has something to wait for (up to shutdown.timeout plus a margin).
    silent = createServer((socket) => {
      sockets.push(socket);
    });
    await new Promise<void>((resolve) => silent!.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as { port: number }).port;
    const run = start(['run', '--config', bridgeConfig(`postgres://nobody@127.0.0.1:${port}/none`, 'shutdown: { timeout: 60s }')]);
    const base = await httpBase(run);
    await waitFor(() => sockets.length > 0, 'the bridge to try connecting');
    run.child.kill('SIGTERM');
    // Still alive and saying it is on its way out: /readyz fails with running=false.
    const stopping = await waitFor(async () => {
      const r = await readyz(base);
      return r.body.checks.running === false ? r : undefined;
    }, '/readyz to report running=false');
    expect(stopping.status).toBe(503);
    expect(run.child.exitCode).toBeNull();
    run.child.kill('SIGINT');
    const { code } = await exitOf(run, 5_000);
    expect(code).toBe(130);
    expect(run.stderr()).toMatch(/SIGINT again: exiting now/);
  });

  it('a lost or unreachable database never ends the process: not ready, reconnects, and stops with 0', async () => {
    db = await createTestDatabase();
    const run = start(['run', '--config', bridgeConfig(db.url)]);
    const base = await httpBase(run);
    await waitFor(async () => (await readyz(base)).status === 200, 'the bridge to be ready');
    const name = db.name;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    try {
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [name]);
      await waitFor(async () => (await readyz(base)).status === 503, '/readyz 503 while the database is unreachable');
      const health = await fetch(`${base}/healthz`);
      expect(health.status).toBe(200);
      expect(run.child.exitCode).toBeNull();
      await admin.query(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`);
    } finally {
      await admin.end();
    }
    await waitFor(async () => (await readyz(base)).status === 200, '/readyz 200 after reconnecting', 20_000, 50);
    const c = await db.client();
    await c.query(`SELECT pg_notify('burst', 'after the outage')`);
    await waitFor(() => run.stdout().includes('after the outage\n'), 'a notification after the reconnect');
    run.child.kill('SIGTERM');
    expect((await exitOf(run)).code).toBe(0);
    expect(run.logs().some((l) => l.msg === 'LISTEN connection lost; reconnecting')).toBe(true);
  });

  it('starts and stays up when the database is down from the start, then stops with 0', async () => {
    const run = start(['run', '--config', bridgeConfig('postgres://nobody@127.0.0.1:1/none')]);
    const base = await httpBase(run);
    const r = await readyz(base);
    expect(r).toMatchObject({ status: 503, body: { ready: false, checks: { listener: false } } });
    await waitFor(() => run.logs().some((l) => l.msg === 'cannot connect to the database; retrying'), 'a retry log line');
    run.child.kill('SIGTERM');
    expect((await exitOf(run)).code).toBe(0);
  });
});

describe('sidekick run: SIGTERM with the database gone (built CLI, a private PostgreSQL stopped under it)', () => {
  let server: PrivatePostgres | undefined;
  let silent: Server | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    silent?.close();
    silent = undefined;
    await server?.stop();
    server = undefined;
  });

  // Issue 16 item 5: with the database stopped, the stop waited on the drain's reconnect sleep, the
  // first LISTEN connect and its own 10 s bound one after the other (25–32 s for a 10 s timeout)
  // and ended without its `stopped` line.
  it('exits within shutdown.timeout plus 2 s, with deliveries hanging and every connection down, and logs `stopped`', async () => {
    server = await startPrivatePostgres();
    // A webhook receiver that accepts connections and never answers: deliveries stay in flight.
    silent = createServer((socket) => {
      sockets.push(socket);
    });
    await new Promise<void>((resolve) => silent!.listen(0, '127.0.0.1', resolve));
    const hook = `http://127.0.0.1:${(silent.address() as { port: number }).port}/hook`;
    const timeoutMs = 3_000;
    const run = start([
      'run',
      '--config',
      configFile(`database: ${server.url}
listen: [burst]
outbox: { enabled: true, pollInterval: 200ms }
scheduler: { enabled: true }
sinks:
  hook: { type: webhook, url: "${hook}", timeout: 60s }
  console: { type: stdout, format: payload }
routes:
  - { from: burst, to: [console] }
  - { from: "*", to: [hook] }
http: { port: 0 }
shutdown: { timeout: ${timeoutMs}ms }
`),
    ]);
    const base = await httpBase(run);
    await waitFor(async () => (await readyz(base)).status === 200, `the bridge to be ready; stderr:\n${run.stderr()}`);
    const c = new pg.Client({ connectionString: server.url });
    await c.connect();
    try {
      await c.query(`SELECT sidekick.publish('orders', jsonb_build_object('n', g)) FROM generate_series(1, 20) g`);
    } finally {
      await c.end();
    }
    await waitFor(() => sockets.length > 0, 'the webhook deliveries to be in flight');
    await server.stop();
    await waitFor(async () => (await readyz(base)).status === 503, '/readyz 503 with the database down');
    // Long enough down that the drain backs off for seconds (5 s, or six failed attempts where
    // its backoff is capped lower): the stop must not wait for the sleep in progress, nor for the
    // connect after it.
    const drainRetries = () => run.logs().filter((l) => l.msg === 'outbox drain cannot connect; retrying');
    await waitFor(
      () => drainRetries().some((l) => Number(l.retryInMs) >= 5_000) || drainRetries().length >= 6,
      'the outbox drain to back off for seconds',
      40_000,
    );

    const signalled = Date.now();
    run.child.kill('SIGTERM');
    const { code } = await exitOf(run, timeoutMs + 20_000);
    const took = Date.now() - signalled;
    expect(took, run.stderr()).toBeLessThan(timeoutMs + 2_000);
    expect(code).toBe(0);
    const stopped = run.logs().find((l) => l.msg === 'stopped');
    expect(stopped, run.stderr()).toBeDefined();
    expect(run.stderr()).not.toMatch(/^\s+at /m);
  });
});

describe('sidekick run: ready again soon after a database outage (built CLI, through a proxy that the test cuts)', () => {
  let db: TestDatabase | undefined;
  let proxy: Server | undefined;
  const links = new Set<Socket>();
  afterEach(async () => {
    for (const s of links) s.destroy();
    links.clear();
    proxy?.close();
    proxy = undefined;
    await db?.drop();
    db = undefined;
  });

  /** A TCP proxy to the test server on `port` (0: any); closing it refuses and cuts every connection. */
  function openProxy(target: URL, port: number): Promise<number> {
    proxy = createServer((client) => {
      const upstream = connect(Number(target.port), target.hostname);
      links.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        links.delete(client);
        links.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    return new Promise((resolve) => proxy!.listen(port, '127.0.0.1', () => resolve((proxy!.address() as { port: number }).port)));
  }

  // Issue 16 item 6: the reconnect backoff grew to ~23 s (cap 30 s), so after a 25 s outage /readyz
  // came back ~20 s after the database. Every database connection (LISTEN, outbox drain, scheduler)
  // now waits at most RECONNECT_MAX_MS between attempts.
  it('/readyz is 200 within 5 s of the database accepting connections again after a 12 s outage', async () => {
    db = await createTestDatabase();
    const target = new URL(db.url);
    const port = await openProxy(target, 0);
    const via = new URL(db.url);
    via.host = `127.0.0.1:${port}`;
    const run = start([
      'run',
      '--config',
      configFile(`database: ${via.toString()}
listen: [burst]
outbox: { enabled: true }
scheduler: { enabled: true }
sinks:
  console: { type: stdout, format: payload }
routes:
  - { from: "*", to: [console] }
http: { port: 0 }
`),
    ]);
    const base = await httpBase(run);
    await waitFor(async () => (await readyz(base)).status === 200, `the bridge to be ready; stderr:\n${run.stderr()}`, 20_000);

    // The outage: connections cut, new ones refused, for long enough that a backoff capped at
    // 30 s would be waiting ~7 s (then ~20 s) by the end of it.
    await new Promise<void>((resolve) => {
      proxy!.close(() => resolve());
      for (const s of links) s.destroy();
    });
    await waitFor(async () => (await readyz(base)).status === 503, '/readyz 503 during the outage');
    await new Promise((resolve) => setTimeout(resolve, 12_000)); // the outage's length is the point here
    await openProxy(target, port);
    const back = Date.now();
    await waitFor(async () => (await readyz(base)).status === 200, '/readyz 200 after the outage', 30_000, 100);
    const readyAfter = Date.now() - back;
    expect(readyAfter, run.stderr()).toBeLessThan(5_000);
    run.child.kill('SIGTERM');
    expect((await exitOf(run)).code).toBe(0);
  }, 90_000);
});

describe('sidekick check (built CLI)', () => {
  let db: TestDatabase | undefined;
  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });

  it('exit 0 with one ok line for the config, the database and each sink', async () => {
    db = await createTestDatabase();
    const run = start(['check', '--config', bridgeConfig(db.url)]);
    expect((await exitOf(run)).code).toBe(0);
    const lines = run.stdout().trim().split('\n');
    expect(lines[0]).toMatch(/^ok +config .*: 1 sink\(s\), 1 route\(s\), 1 channel\(s\)$/);
    expect(lines[1]).toMatch(new RegExp(`^ok +database 127\\.0\\.0\\.1:\\d+/${db.name} \\(PostgreSQL 15`));
    expect(lines[2]).toMatch(/^ok +sink console \(stdout\)/);
    expect(lines).toHaveLength(3);
  });

  it('exit 1 with a FAIL line when the database is unreachable', async () => {
    const run = start(['check', '--config', bridgeConfig('postgres://nobody@127.0.0.1:1/none')]);
    expect((await exitOf(run)).code).toBe(1);
    expect(run.stdout()).toMatch(/^FAIL +database 127\.0\.0\.1:1\/none: .*ECONNREFUSED/m);
    expect(run.stdout()).toMatch(/^ok +sink console \(stdout\)/m);
  });
});
