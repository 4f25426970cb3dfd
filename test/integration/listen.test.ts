import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { REPO_ROOT } from '../support/services.js';

// `sidekick listen` and `pglisten` run as the user runs them: the built CLI in a child process,
// against the real PostgreSQL of the test services, stdout compared byte for byte.

const CLI = join(REPO_ROOT, 'dist/src/cli.js');
const PGLISTEN = join(REPO_ROOT, 'dist/src/bin/pglisten.js');

beforeAll(() => {
  // `npm test` builds first; a lone `npx vitest run` of this file may not have.
  if (!existsSync(CLI) || !existsSync(PGLISTEN)) {
    const r = spawnSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'inherit' });
    if (r.status !== 0) throw new Error('npm run build failed');
  }
});

interface Running {
  readonly child: ChildProcess;
  stdout(): Buffer;
  stderr(): string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running: Running[] = [];

/** A clean environment: only what the test gives (no PG* or DATABASE_URL from the developer's shell). */
function baseEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, ...extra };
}

function start(args: string[], options: { bin?: 'sidekick' | 'pglisten'; env?: NodeJS.ProcessEnv } = {}): Running {
  const argv = options.bin === 'pglisten' ? [PGLISTEN, ...args] : [CLI, 'listen', ...args];
  const child = spawn(process.execPath, argv, { env: options.env ?? baseEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout?.on('data', (d: Buffer) => out.push(d));
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  const r: Running = { child, stdout: () => Buffer.concat(out), stderr: () => err, exited };
  running.push(r);
  return r;
}

/** Waits until the listener's backend has run its LISTEN (its last query) and is idle again. */
async function listening(db: TestDatabase, admin: pg.Client): Promise<number> {
  return waitFor(async () => {
    const { rows } = await admin.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
        WHERE datname = $1 AND application_name = 'pglisten' AND state = 'idle' AND query LIKE 'LISTEN %'`,
      [db.name],
    );
    return rows[0]?.pid;
  }, 'the listener to LISTEN');
}

async function exitOf(r: Running, what: string): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let result: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  void r.exited.then((x) => {
    result = x;
  });
  return waitFor(() => result, what);
}

describe('sidekick listen / pglisten (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;

  afterEach(async () => {
    for (const r of running.splice(0)) if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill('SIGKILL');
    await db?.drop();
    db = undefined;
  });

  const payloads = ['hello', 'multi\nline\npayload', '', 'ünïcödé ✓ 😀', 'tab\there', 'quote \' and " and \\', 'x'.repeat(7999)];

  /** Sends `payloads` on channel `a` from one session; returns that session's backend pid. */
  async function sendAll(sender: pg.Client): Promise<number> {
    const { rows } = await sender.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    for (const p of payloads) await sender.query('SELECT pg_notify($1, $2)', ['a', p]);
    await sender.query(`SELECT pg_notify('done', 'end')`);
    return rows[0]?.pid as number;
  }

  for (const [flags, bin] of [
    [[], 'sidekick'],
    [['-0'], 'pglisten'],
    [['-H'], 'sidekick'],
    [['--context', '--print0'], 'pglisten'],
  ] as const) {
    it(`writes exactly pglisten's bytes with ${flags.join(' ') || 'no flags'} (${bin})`, async () => {
      db = await createTestDatabase();
      const admin = await db.client();
      const r = start(['-d', db.url, '--listen=a', '-l', 'done', ...flags], { bin });
      await listening(db, admin);
      const pid = await sendAll(await db.client());
      const terminator = flags.some((f) => f === '-0' || f === '--print0') ? '\0' : '\n';
      const context = flags.some((f) => f === '-H' || f === '--context');
      const line = (channel: string, p: string) => `${context ? `${channel}: (${pid}) ` : ''}${p}${terminator}`;
      const expected = Buffer.from(payloads.map((p) => line('a', p)).join('') + line('done', 'end'));
      await waitFor(() => r.stdout().length >= expected.length, 'all notifications on stdout');
      expect(r.stdout().equals(expected)).toBe(true);
      expect(r.stderr()).toBe('');
    });
  }

  it('hears mixed-case channels exactly as named: pg_notify/quoted NOTIFY yes, unquoted NOTIFY (folded) no', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    const r = start(['-d', db.url, '-l', 'Other', '-l', 'lower', '-l', 'done']);
    await listening(db, admin);
    const s = await db.client();
    await s.query(`NOTIFY Other, 'folded to other: not heard'`);
    await s.query(`NOTIFY "Other", 'quoted'`);
    await s.query(`SELECT pg_notify('Other', 'function')`);
    await s.query(`NOTIFY LOWER, 'folded to lower: heard'`);
    await s.query(`SELECT pg_notify('other', 'lower-case other: not heard')`);
    await s.query(`NOTIFY done, 'end'`);
    const expected = 'quoted\nfunction\nfolded to lower: heard\nend\n';
    await waitFor(() => r.stdout().toString().endsWith('end\n'), 'the last notification');
    expect(r.stdout().toString()).toBe(expected);
  });

  it('delivers 20 000 notifications from one transaction, complete and in order', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    const r = start(['-d', db.url, '-l', 'b'], { bin: 'pglisten' });
    await listening(db, admin);
    await admin.query(`SELECT count(pg_notify('b', i::text)) FROM generate_series(1, 20000) i`);
    const expected = Array.from({ length: 20_000 }, (_, i) => `${i + 1}\n`).join('');
    await waitFor(() => r.stdout().length >= expected.length, '20 000 notifications', 20_000);
    expect(r.stdout().toString()).toBe(expected);
  });

  it('loses nothing when stdout is slow: stops reading the server until stdout drains', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    const r = start(['-d', db.url, '-l', 'big']);
    await listening(db, admin);
    r.child.stdout?.pause(); // nobody reads: the pipe, then the listener's buffers, fill up
    const n = 60_000;
    const pad = 'p'.repeat(100);
    await admin.query(`SELECT count(pg_notify('big', i::text || '${pad}')) FROM generate_series(1, ${n}) i`);
    // With stdout blocked, the listener must stop reading: its backend then waits to write to the socket,
    // and stays so, with the rest still in the server's notification queue (were the listener reading on
    // and buffering, the backend would have sent everything well within the second we watch it).
    const blockedBackend = async () => {
      const { rows } = await admin.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pglisten' AND wait_event = 'ClientWrite'`,
        [db?.name],
      );
      return Number(rows[0]?.n) === 1;
    };
    await waitFor(blockedBackend, 'the listener backend to block on writing');
    await new Promise((resolve) => setTimeout(resolve, 1000)); // an observation window, not a synchronisation
    const stillBlocked = await blockedBackend();
    const queued = Number((await admin.query<{ u: number }>('SELECT pg_notification_queue_usage() AS u')).rows[0]?.u);
    r.child.stdout?.resume();
    const expected = Array.from({ length: n }, (_, i) => `${i + 1}${pad}\n`).join('');
    await waitFor(() => r.stdout().length >= expected.length, 'every notification after stdout resumed', 30_000);
    expect(r.stdout().toString()).toBe(expected);
    expect(stillBlocked).toBe(true);
    expect(queued).toBeGreaterThan(0);
  });

  it('reconnects after pg_terminate_backend, says so on stderr, and hears notifications sent afterwards', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    const r = start(['-d', db.url, '-l', 'a']);
    const pid = await listening(db, admin);
    await admin.query(`SELECT pg_notify('a', 'before')`);
    await waitFor(() => r.stdout().toString() === 'before\n', 'the first notification');
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    await waitFor(() => r.stderr().includes('reconnected'), 'the reconnect note on stderr');
    const newPid = await listening(db, admin);
    expect(newPid).not.toBe(pid);
    await admin.query(`SELECT pg_notify('a', 'after')`);
    await waitFor(() => r.stdout().toString() === 'before\nafter\n', 'the notification after the reconnect');
    expect(r.stderr()).toMatch(
      new RegExp(
        '^pglisten: connection lost \\(.*terminating connection due to administrator command.*\\); reconnecting in \\d+\\.\\d s\\n' +
          'pglisten: reconnected; listening again on "a"',
      ),
    );
    expect(r.child.exitCode).toBe(null);
  });

  it('keeps quiet about reconnects with -q', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    const r = start(['-q', '-d', db.url, '-l', 'a']);
    const pid = await listening(db, admin);
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    const newPid = await waitFor(async () => {
      const p = await listening(db as TestDatabase, admin);
      return p !== pid && p;
    }, 'the new backend');
    expect(newPid).not.toBe(pid);
    await admin.query(`SELECT pg_notify('a', 'after')`);
    await waitFor(() => r.stdout().toString() === 'after\n', 'the notification after the reconnect');
    expect(r.stderr()).toBe('');
  });

  it('exits 2 with one line on stderr when the first connection fails', async () => {
    const r = start(['-h', '127.0.0.1', '-p', '1', '-U', 'postgres', '-l', 'a']);
    const { code } = await exitOf(r, 'the exit');
    expect(code).toBe(2);
    expect(r.stderr()).toBe('pglisten: connection to server at "127.0.0.1", port 1 failed: Connection refused\n');
    expect(r.stdout().length).toBe(0);
  });

  it('exits 2 naming the database that does not exist', async () => {
    const url = new URL(
      (
        await createTestDatabase().then(async (d) => {
          await d.drop();
          return d;
        })
      ).url,
    );
    const r = start(['-d', url.toString(), '-l', 'a'], { bin: 'pglisten' });
    const { code } = await exitOf(r, 'the exit');
    expect(code).toBe(2);
    expect(r.stderr()).toMatch(/^pglisten: connection to server at "127\.0\.0\.1", port \d+ failed: FATAL: {2}database "sk_[^"]+" does not exist\n$/);
  });

  it('connects with the PG* environment variables, a conninfo string, or DATABASE_URL', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    const u = new URL(db.url);
    const pgEnv = { PGHOST: u.hostname, PGPORT: u.port, PGUSER: decodeURIComponent(u.username), PGDATABASE: db.name };
    const viaEnv = start(['-l', 'a'], { env: baseEnv(pgEnv) });
    const viaConninfo = start(['-l', 'a', '-d', `host=${u.hostname} port=${u.port} user=${u.username} dbname='${db.name}'`]);
    const viaUrl = start(['-l', 'a'], { env: baseEnv({ DATABASE_URL: db.url }) });
    await waitFor(async () => {
      const { rows } = await admin.query<{ n: string }>(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pglisten' AND state = 'idle' AND query LIKE 'LISTEN %'`,
        [db?.name],
      );
      return Number(rows[0]?.n) === 3;
    }, 'three listeners');
    await admin.query(`SELECT pg_notify('a', 'to all')`);
    for (const r of [viaEnv, viaConninfo, viaUrl]) {
      await waitFor(() => r.stdout().toString() === 'to all\n', 'the notification');
    }
  });

  it('ends quietly with exit 0 when stdout is closed (| head -n 3)', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    const script = `"${process.execPath}" "${PGLISTEN}" -d "$URL" -l a 2>"$ERR" | head -n 3; echo "status=\${PIPESTATUS[0]}"`;
    const err = join(REPO_ROOT, `.listen-head-${process.pid}-${Date.now()}.err`);
    const shell = spawn('bash', ['-c', script], { env: baseEnv({ URL: db.url, ERR: err }), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    shell.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const done = new Promise<void>((resolve) => shell.on('exit', () => resolve()));
    let finished = false;
    void done.then(() => {
      finished = true;
    });
    await listening(db, admin);
    // head exits after three lines; pglisten notices at its next write.
    for (let i = 1; !finished && i < 500; i++) {
      await admin.query(`SELECT pg_notify('a', $1)`, [`line ${i}`]);
      await new Promise((res) => setTimeout(res, 10));
    }
    await waitFor(() => finished, 'the pipeline to end');
    const { readFileSync, rmSync } = await import('node:fs');
    const stderr = readFileSync(err, 'utf8');
    rmSync(err, { force: true });
    expect(out).toBe('line 1\nline 2\nline 3\nstatus=0\n');
    expect(stderr).toBe('');
  });

  it('ends cleanly with exit 0 on SIGTERM and on SIGINT', async () => {
    db = await createTestDatabase();
    const admin = await db.client();
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const r = start(['-d', db.url, '-l', 'a']);
      await listening(db, admin);
      r.child.kill(signal);
      const { code } = await exitOf(r, `the exit after ${signal}`);
      expect(code).toBe(0);
      expect(r.stderr()).toBe('');
    }
  });

  it('prints --help and --version on stdout with exit 0', async () => {
    const help = start(['--help']);
    expect((await exitOf(help, 'exit')).code).toBe(0);
    expect(help.stdout().toString()).toContain('Usage:\n  pglisten [OPTION]... [DBNAME [USERNAME]]\n');
    expect(help.stdout().toString()).toContain('-l, --listen=CHANNEL');
    const q = start(['-?'], { bin: 'pglisten' });
    expect((await exitOf(q, 'exit')).code).toBe(0);
    expect(q.stdout().toString()).toBe(help.stdout().toString());
    const version = start(['-V'], { bin: 'pglisten' });
    expect((await exitOf(version, 'exit')).code).toBe(0);
    expect(version.stdout().toString()).toMatch(/^pglisten \(pg-sidekick\) \d+\.\d+\.\d+\n$/);
  });

  it('rejects an unknown option like pglisten: getopt message, try --help, exit 1', async () => {
    const r = start(['--bogus', '-l', 'a'], { bin: 'pglisten' });
    expect((await exitOf(r, 'exit')).code).toBe(1);
    expect(r.stderr()).toBe(`pglisten: unrecognized option '--bogus'\nTry "pglisten --help" for more information.\n`);
    const missing = start(['-l']);
    expect((await exitOf(missing, 'exit')).code).toBe(1);
    expect(missing.stderr()).toBe(`pglisten: option requires an argument -- 'l'\nTry "pglisten --help" for more information.\n`);
  });

  it('exits 1 when LISTEN itself fails (an empty channel name)', async () => {
    db = await createTestDatabase();
    const r = start(['-d', db.url, '-l', '']);
    expect((await exitOf(r, 'exit')).code).toBe(1);
    expect(r.stderr()).toMatch(/^pglisten: LISTEN failed: zero-length delimited identifier/);
  });
});
