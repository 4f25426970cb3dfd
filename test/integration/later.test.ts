import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { count, createStack, installedDatabase } from '../support/scheduler-helpers.js';

/** The pglater channel as the seed's users use it, through a whole bridge (LISTEN → router → later sink → scheduler). */
describe('later sink: pglater notifications through the bridge (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let c: pg.Client;
  const stack = createStack();
  afterEach(async () => {
    await stack.stopAll();
    await db?.drop();
    db = undefined;
  });
  async function setup() {
    ({ db, c } = await installedDatabase());
    await c.query('CREATE TABLE t (n int, at timestamptz DEFAULT clock_timestamp())');
    return db.url;
  }
  const notify = (payload: string, channel = 'pglater') => c.query('SELECT pg_notify($1, $2)', [channel, payload]);
  const ready = (b: { readiness(): { ready: boolean } }) => waitFor(() => b.readiness().ready, 'the bridge to be ready');

  it('two jobs at +2 s and +60 s: the near one runs at about 2 s, the far one stays pending', async () => {
    const url = await setup();
    const bridge = stack.bridge(url, { scheduler: { pglater: true, pollInterval: 500 } });
    await bridge.start();
    await ready(bridge);
    const { rows } = await c.query<{ now: Date }>('SELECT clock_timestamp() AS now');
    await notify('60 insert into t values (60)');
    await notify('2 insert into t values (2)');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM t')) === 1, 'the +2 s job', 10_000);
    const ran = (await c.query<{ n: number; at: Date }>('SELECT n, at FROM t')).rows[0]!;
    expect(ran.n).toBe(2);
    const after = ran.at.getTime() - rows[0]!.now.getTime();
    expect(after).toBeGreaterThanOrEqual(1900);
    expect(after).toBeLessThan(4000);
    expect(await count(c, `SELECT 1 FROM sidekick.schedules WHERE origin = 'later' AND sql = 'insert into t values (60)'`)).toBe(1);
  });

  it('the seed README\'s example payload ("30 select some_function()") is scheduled 30 s out', async () => {
    const url = await setup();
    await c.query('CREATE FUNCTION some_function() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$');
    const bridge = stack.bridge(url, { scheduler: { pglater: true } });
    await bridge.start();
    await ready(bridge);
    await notify('30 select some_function()');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedules')) === 1, 'the job row');
    const { rows } = await c.query(`SELECT sql, extract(epoch FROM run_at - now()) AS secs FROM sidekick.schedules`);
    expect(rows[0].sql).toBe('select some_function()');
    expect(Number(rows[0].secs)).toBeGreaterThan(25);
    expect(Number(rows[0].secs)).toBeLessThanOrEqual(30.5);
  });

  it('hostile and malformed payloads are logged and counted, never fatal; good jobs keep running', async () => {
    const url = await setup();
    const bridge = stack.bridge(url, { scheduler: { pglater: true, pollInterval: 200 } });
    await bridge.start();
    await ready(bridge);
    const bad = ['', 'garbage', '30', '30select 1', '1.5 select 1', '- 5 select 1', '99999999999 select 1', 'x'.repeat(7999), '{"json": true}'];
    for (const p of bad) await notify(p);
    // Valid pglater jobs that are hostile to a scheduler: ending its transaction, killing its own connection.
    await notify('0 rollback');
    await notify('0 commit');
    await notify('0 select pg_terminate_backend(pg_backend_pid())');
    await notify('0 insert into t values (1)');
    await notify('1 insert into t values (2)');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM t WHERE n = 2')) === 1, 'the later good job', 15_000);
    expect(await count(c, 'SELECT 1 FROM t WHERE n = 1')).toBe(1);
    const text = await bridge.metrics.registry.metrics();
    expect(text).toMatch(new RegExp(`sidekick_events_dead_lettered_total\\{sink="pglater"\\} ${bad.length}\\b`));
    expect(bridge.readiness().ready).toBe(true);
    // Nothing stuck: every job ran (or failed) and left the table.
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedules')) === 0, 'no job left behind', 15_000);
  });

  it('an allow-list refuses other SQL, and a second statement cannot ride along', async () => {
    const url = await setup();
    await c.query('CREATE SCHEMA my_schema; CREATE FUNCTION my_schema.f(n int) RETURNS void LANGUAGE sql AS $$ INSERT INTO t (n) VALUES (n) $$');
    const bridge = stack.bridge(url, { scheduler: { pglater: { allow: ['^select my_schema\\.'] }, pollInterval: 200 } });
    await bridge.start();
    await ready(bridge);
    await notify('0 delete from t');
    await notify('0 select my_schema.f(2); drop table t');
    await notify('0 select my_schema.f(1)');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM t WHERE n = 1')) === 1, 'the allowed job');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedule_runs')) === 2, 'both allowed-looking jobs to run');
    // refused at the door: never stored
    expect(await count(c, `SELECT 1 FROM sidekick.schedule_runs r WHERE r.error IS NULL`)).toBe(1);
    const { rows } = await c.query(`SELECT outcome, error FROM sidekick.schedule_runs WHERE outcome = 'failed'`);
    expect(rows[0].error).toMatch(/cannot insert multiple commands into a prepared statement/);
    expect(await count(c, 'SELECT 1 FROM t')).toBe(1);
    const text = await bridge.metrics.registry.metrics();
    expect(text).toMatch(/sidekick_events_dead_lettered_total\{sink="pglater"\} 1\b/);
  });

  it('a restart loses no pending job', async () => {
    const url = await setup();
    const first = stack.bridge(url, { scheduler: { pglater: true, pollInterval: 200 } });
    await first.start();
    await ready(first);
    await notify('2 insert into t values (2)');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedules')) === 1, 'the job to be stored');
    await first.stop();
    const second = stack.bridge(url, { scheduler: { pglater: true, pollInterval: 200 } });
    await second.start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM t WHERE n = 2')) === 1, 'the job after the restart', 10_000);
  });

  it('two bridges listening on pglater schedule each notification once', async () => {
    const url = await setup();
    const a = stack.bridge(url, { scheduler: { pglater: true, pollInterval: 200 } });
    const b = stack.bridge(url, { scheduler: { pglater: true, pollInterval: 200 } });
    await Promise.all([a.start(), b.start()]);
    await Promise.all([ready(a), ready(b)]);
    for (let i = 0; i < 20; i++) await notify(`0 insert into t values (${i})`);
    await waitFor(async () => (await count(c, 'SELECT 1 FROM t')) >= 20, 'twenty jobs');
    // Each once: a sentinel job scheduled after them runs, and no twin of an earlier one ran before it.
    await notify('0 insert into t values (999)');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM t WHERE n = 999')) === 1, 'the sentinel job');
    expect(await count(c, 'SELECT 1 FROM t')).toBe(21);
    // The standby takes over when the leader goes.
    await a.stop();
    await notify('0 insert into t values (100)');
    await waitFor(async () => (await count(c, 'SELECT 1 FROM t WHERE n = 100')) === 1, 'the standby to take over', 10_000);
  });
});

describe('sidekick later / pglater as a process (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let child: ChildProcess | undefined;
  afterEach(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((r) => child!.once('exit', r));
    }
    child = undefined;
    await db?.drop();
    db = undefined;
  });

  it('runs "1 insert into t values (1)" sent with pg_notify, on a database without the schema yet', async () => {
    const bin = join(PACKAGE_ROOT, 'dist', 'src', 'bin', 'pglater.js');
    expect(existsSync(bin), `${bin} is missing: run \`npm run build\` first`).toBe(true);
    const { createTestDatabase } = await import('../support/db.js');
    db = await createTestDatabase('later');
    const c = await db.client();
    await c.query('CREATE TABLE t (n int)');
    let stderr = '';
    child = spawn(process.execPath, [bin, '-v', '-d', db.url], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    await waitFor(() => stderr.includes('scheduler running'), `pglater to start (stderr so far: ${stderr})`, 20_000, 50);
    await waitFor(
      async () =>
        (await c.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg-sidekick listen' AND datname = $1`, [db!.name])).rowCount,
      'its LISTEN connection',
      10_000,
    );
    await c.query(`SELECT pg_notify('pglater', 'not a job')`);
    await c.query(`SELECT pg_notify('pglater', '1 insert into t values (1)')`);
    await waitFor(async () => (await c.query('SELECT 1 FROM t WHERE n = 1')).rowCount, 'the job to run', 10_000);
    expect(stderr).toMatch(/malformed pglater notification "not a job"/);
    expect(child.exitCode).toBeNull();
    child.kill('SIGTERM');
    const code = await new Promise((r) => child!.once('exit', r));
    expect(code).toBe(0);
  });

  it('exits 2 when it cannot connect, like pglater', async () => {
    const bin = join(PACKAGE_ROOT, 'dist', 'src', 'bin', 'pglater.js');
    child = spawn(process.execPath, [bin, '-h', '127.0.0.1', '-p', '1', '-d', 'nowhere'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise((r) => child!.once('exit', r));
    expect(code).toBe(2);
    expect(stderr).toMatch(/pglater: cannot connect/);
  });
});
