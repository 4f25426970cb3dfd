import { PassThrough } from 'node:stream';
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { addSchedule } from '../../src/scheduler/schedules.js';
import { waitFor, type TestDatabase } from '../support/db.js';
import { count, createStack, installedDatabase } from '../support/scheduler-helpers.js';

describe('scheduler (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let c: pg.Client;
  const stack = createStack();
  afterEach(async () => {
    await stack.stopAll();
    await db?.drop();
    db = undefined;
  });
  async function setup(sql = 'CREATE TABLE hits (job int, at timestamptz DEFAULT clock_timestamp())') {
    ({ db, c } = await installedDatabase());
    await c.query(sql);
    return db.url;
  }

  it('1 000 due one-shots, two scheduler instances: each job runs exactly once', async () => {
    const url = await setup('CREATE TABLE hits (job int, pid int)');
    await c.query(`INSERT INTO sidekick.schedules (run_at, sql)
                   SELECT now(), format('INSERT INTO hits (job, pid) VALUES (%s, pg_backend_pid())', g) FROM generate_series(1, 1000) g`);
    const a = stack.scheduler(url, { concurrency: 2, batchSize: 20 });
    const b = stack.scheduler(url, { concurrency: 2, batchSize: 20 });
    await Promise.all([a.start(), b.start()]);
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedules')) === 0, 'every job to be claimed', 30_000, 50);
    expect(await count(c, 'SELECT * FROM hits')).toBe(1000);
    expect(await count(c, 'SELECT DISTINCT job FROM hits')).toBe(1000);
    expect(await count(c, `SELECT 1 FROM sidekick.schedule_runs WHERE outcome = 'succeeded'`)).toBe(1000);
    // Several connections did part of the work (claims with SKIP LOCKED, not one locking the rest out).
    expect(await count(c, 'SELECT DISTINCT pid FROM hits')).toBeGreaterThanOrEqual(2);
  });

  it('runs due jobs nearest first, and a near job is not held up by a far one', async () => {
    const url = await setup();
    const s = stack.scheduler(url);
    await s.start();
    await c.query(`INSERT INTO sidekick.schedules (run_at, sql) VALUES
      (now() + interval '60 seconds', 'INSERT INTO hits (job) VALUES (60)'),
      (now() + interval '1 second', 'INSERT INTO hits (job) VALUES (1)'),
      (now() - interval '1 second', 'INSERT INTO hits (job) VALUES (0)')`);
    const t0 = Date.now();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits WHERE job = 1')) === 1, 'the +1 s job', 10_000);
    expect(Date.now() - t0).toBeGreaterThan(700);
    const { rows } = await c.query<{ job: number }>('SELECT job FROM hits ORDER BY at');
    expect(rows.map((r) => r.job)).toEqual([0, 1]);
  });

  it('slow actions holding every connection do not hold up jobs that come due meanwhile', async () => {
    const url = await setup();
    await stack.scheduler(url, { concurrency: 2, batchSize: 1 }).start();
    await c.query(`INSERT INTO sidekick.schedules (run_at, sql) VALUES (now(), 'SELECT pg_sleep(4)'), (now(), 'SELECT pg_sleep(4)')`);
    await waitFor(
      async () =>
        (await count(
          c,
          `SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(4)%' AND state = 'active' AND datname = current_database() AND pid <> pg_backend_pid()`,
        )) === 2,
      'both sleepers running',
    );
    await c.query(`INSERT INTO sidekick.schedules (run_at, sql) VALUES (now() + interval '500 milliseconds', 'INSERT INTO hits (job) VALUES (1)')`);
    const t0 = Date.now();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits')) === 1, 'the job due meanwhile', 10_000, 20);
    // A helper connection joined after about a second; the sleepers still had ~2.5 s to go.
    expect(Date.now() - t0).toBeLessThan(3_000);
  });

  it('a cron schedule with seconds runs every second', async () => {
    const url = await setup();
    await addSchedule(c, { name: 'tick', cron: '* * * * * *', sql: 'INSERT INTO hits (job) VALUES (1)' });
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits')) >= 2, 'two ticks', 5_000, 50);
    const { rows } = await c.query<{ due_at: Date }>(`SELECT due_at FROM sidekick.schedule_runs WHERE name = 'tick' ORDER BY due_at`);
    expect(rows.length).toBeGreaterThanOrEqual(2);
    // Occurrences on whole seconds, one second apart.
    expect(rows[0]!.due_at.getMilliseconds()).toBe(0);
    expect(rows[1]!.due_at.getTime() - rows[0]!.due_at.getTime()).toBe(1000);
  });

  it('plans cron rows inserted with plain SQL (PostgreSQL cannot), and disables a bad one with the reason', async () => {
    const url = await setup();
    await c.query(`INSERT INTO sidekick.schedules (name, cron, sql) VALUES ('plain', '* * * * * *', 'INSERT INTO hits (job) VALUES (7)')`);
    await c.query(`INSERT INTO sidekick.schedules (name, cron, sql) VALUES ('broken', 'every tuesday', 'SELECT 1')`);
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits WHERE job = 7')) >= 1, 'the plain-SQL cron row to run', 5_000, 50);
    await waitFor(
      async () => (await count(c, `SELECT 1 FROM sidekick.schedules WHERE name = 'broken' AND NOT enabled`)) === 1,
      'the broken row to be disabled',
    );
    const { rows } = await c.query(`SELECT last_error FROM sidekick.schedules WHERE name = 'broken'`);
    expect(rows[0].last_error).toMatch(/invalid cron expression/);
  });

  it('plain SQL inserts get defaults, and check constraints refuse nonsense', async () => {
    await setup();
    const { rows } = await c.query(`INSERT INTO sidekick.schedules (every, sql) VALUES ('5 minutes', 'SELECT 1')
                                    RETURNING missed, overlap, enabled, max_attempts, next_run_at IS NOT NULL AS planned`);
    expect(rows[0]).toEqual({ missed: 'once', overlap: 'skip', enabled: true, max_attempts: 1, planned: true });
    await expect(c.query(`INSERT INTO sidekick.schedules (sql) VALUES ('SELECT 1')`)).rejects.toThrow(/schedules_one_timing/);
    await expect(c.query(`INSERT INTO sidekick.schedules (every, sql, channel) VALUES ('1 minute', 'SELECT 1', 'x')`)).rejects.toThrow(
      /schedules_one_action/,
    );
    await expect(c.query(`INSERT INTO sidekick.schedules (every, sql) VALUES ('-1 minute', 'SELECT 1')`)).rejects.toThrow(/every_check/);
    await expect(c.query(`INSERT INTO sidekick.schedules (every, sql, missed) VALUES ('1 minute', 'SELECT 1', 'sometimes')`)).rejects.toThrow(
      /missed_check/,
    );
    await expect(c.query(`INSERT INTO sidekick.schedules (every, sql, time_zone) VALUES ('1 minute', 'SELECT 1', 'Mars/Olympus')`)).rejects.toThrow(
      /time zone/,
    );
  });

  it('a statement that returns no rows is a success; a failing one is recorded with its error and the loop goes on', async () => {
    const url = await setup();
    await c.query(`INSERT INTO sidekick.schedules (name, run_at, sql) VALUES
      ('insert', now(), 'INSERT INTO hits (job) VALUES (1)'),
      ('update', now(), 'UPDATE hits SET job = job WHERE false'),
      ('broken', now(), 'SELECT * FROM no_such_table'),
      ('after', now() + interval '300 milliseconds', 'INSERT INTO hits (job) VALUES (2)')`);
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits WHERE job = 2')) === 1, 'the job after the failure');
    const { rows } = await c.query(`SELECT name, outcome, error FROM sidekick.schedule_runs ORDER BY name`);
    expect(rows).toEqual([
      { name: 'after', outcome: 'succeeded', error: null },
      { name: 'broken', outcome: 'failed', error: 'relation "no_such_table" does not exist' },
      { name: 'insert', outcome: 'succeeded', error: null },
      { name: 'update', outcome: 'succeeded', error: null },
    ]);
  });

  it('retries a failing occurrence when configured, and records the attempts', async () => {
    const url = await setup('CREATE SEQUENCE tries; CREATE TABLE hits (job int)');
    // Fails twice (the sequence is not rolled back with the failure), then succeeds.
    await addSchedule(c, {
      name: 'flaky',
      at: 'now',
      attempts: 3,
      retryDelay: '100ms',
      sql: "INSERT INTO hits SELECT 1 / (CASE WHEN nextval('tries') < 3 THEN 0 ELSE 1 END)",
    });
    await addSchedule(c, { name: 'hopeless', at: 'now', attempts: 2, retryDelay: '100ms', sql: 'SELECT 1 / 0' });
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedules')) === 0, 'both to finish', 10_000);
    const { rows } = await c.query(`SELECT name, outcome, attempts, error FROM sidekick.schedule_runs ORDER BY name`);
    expect(rows).toEqual([
      { name: 'flaky', outcome: 'succeeded', attempts: 3, error: null },
      { name: 'hopeless', outcome: 'failed', attempts: 2, error: 'division by zero' },
    ]);
    expect(await count(c, 'SELECT * FROM hits')).toBe(1);
  });

  it('applies statement_timeout per schedule', async () => {
    const url = await setup();
    await addSchedule(c, { name: 'slow', at: 'now', timeout: '100ms', sql: 'SELECT pg_sleep(2)' });
    await addSchedule(c, { name: 'quick', at: 'now', sql: 'SELECT pg_sleep(0.2)' });
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedule_runs')) === 2, 'both runs');
    const { rows } = await c.query(`SELECT name, outcome, error FROM sidekick.schedule_runs ORDER BY name`);
    expect(rows).toEqual([
      { name: 'quick', outcome: 'succeeded', error: null },
      { name: 'slow', outcome: 'failed', error: 'canceling statement due to statement timeout' },
    ]);
  });

  it('runs statements that refuse a transaction block (VACUUM) on their own', async () => {
    const url = await setup();
    await addSchedule(c, { name: 'vacuum', at: 'now', sql: 'VACUUM hits' });
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, `SELECT 1 FROM sidekick.schedule_runs WHERE outcome = 'succeeded'`)) === 1, 'vacuum to run');
    // Cumulative statistics are flushed about once a second.
    await waitFor(
      async () => (await count(c, `SELECT 1 FROM pg_stat_user_tables WHERE relname = 'hits' AND vacuum_count > 0`)) === 1,
      'the vacuum to show in pg_stat_user_tables',
      10_000,
      200,
    );
  });

  it('missed-run policies: skip drops a late one-shot, once runs it; all catches up at most missed_cap', async () => {
    const url = await setup();
    await addSchedule(c, {
      name: 'late-skip',
      at: `${new Date(Date.now() - 120_000).toISOString()}`,
      missed: 'skip',
      sql: 'INSERT INTO hits (job) VALUES (1)',
    });
    await addSchedule(c, {
      name: 'late-once',
      at: `${new Date(Date.now() - 120_000).toISOString()}`,
      missed: 'once',
      sql: 'INSERT INTO hits (job) VALUES (2)',
    });
    // Every second since 10.5 s ago: 11 occurrences due; `all` with cap 3 runs the 3 most recent.
    const start = new Date(Date.now() - 10_500).toISOString();
    await addSchedule(c, { name: 'backlog-all', every: '1s', start, missed: 'all', missedCap: 3, sql: 'INSERT INTO hits (job) VALUES (3)' });
    await addSchedule(c, { name: 'backlog-once', every: '1s', start, missed: 'once', sql: 'INSERT INTO hits (job) VALUES (4)' });
    await stack.scheduler(url, { missedAfter: 30_000 }).start();
    await waitFor(
      async () => (await count(c, `SELECT 1 FROM sidekick.schedule_runs WHERE name = 'backlog-all' AND outcome = 'succeeded'`)) >= 3,
      'the backlog',
    );
    await waitFor(async () => (await count(c, `SELECT 1 FROM sidekick.schedule_runs WHERE name LIKE 'late%'`)) === 2, 'the late one-shots');
    const runs = async (name: string) =>
      (await c.query(`SELECT outcome, due_at, error FROM sidekick.schedule_runs WHERE name = $1 ORDER BY due_at`, [name])).rows;
    expect((await runs('late-skip')).map((r) => r.outcome)).toEqual(['skipped']);
    expect((await runs('late-once')).map((r) => r.outcome)).toEqual(['succeeded']);
    const all = await runs('backlog-all');
    expect(all[0]).toMatchObject({ outcome: 'skipped' });
    expect(all[0].error).toMatch(/8 occurrences/);
    const ran = all.filter((r) => r.outcome === 'succeeded');
    // The three most recent, one second apart, oldest first.
    expect(ran[1].due_at - ran[0].due_at).toBe(1000);
    expect(ran[2].due_at - ran[1].due_at).toBe(1000);
    const once = await runs('backlog-once');
    expect(once[0]).toMatchObject({ outcome: 'skipped' });
    expect(once[0].error).toMatch(/10 occurrences/);
    expect(once[1]).toMatchObject({ outcome: 'succeeded' });
  });

  it('overlap policy: skip leaves out occurrences due while a run was going, queue runs them after', async () => {
    const url = await setup();
    await addSchedule(c, { name: 'skip', every: '200ms', overlap: 'skip', sql: `INSERT INTO hits (job) VALUES (1); SELECT pg_sleep(0.5)` });
    await addSchedule(c, { name: 'queue', every: '200ms', overlap: 'queue', sql: `INSERT INTO hits (job) VALUES (2); SELECT pg_sleep(0.5)` });
    // One worker per schedule, so that neither waits for the other.
    await stack.scheduler(url, { concurrency: 2, batchSize: 1 }).start();
    await waitFor(
      async () => (await count(c, `SELECT 1 FROM sidekick.schedule_runs WHERE name = 'skip' AND outcome = 'succeeded'`)) >= 3,
      'three runs of skip',
      15_000,
      50,
    );
    await waitFor(
      async () => (await count(c, `SELECT 1 FROM sidekick.schedule_runs WHERE name = 'queue' AND outcome = 'succeeded'`)) >= 3,
      'three runs of queue',
      15_000,
      50,
    );
    const skip = (await c.query(`SELECT outcome, due_at FROM sidekick.schedule_runs WHERE name = 'skip' ORDER BY due_at`)).rows;
    expect(skip.some((r) => r.outcome === 'skipped')).toBe(true);
    const ranSkip = skip.filter((r) => r.outcome === 'succeeded');
    // A run takes 0.5 s: the next one that runs is due at least 0.4 s later (two 200 ms occurrences skipped).
    expect(ranSkip[1].due_at - ranSkip[0].due_at).toBeGreaterThanOrEqual(400);
    const queue = (await c.query(`SELECT outcome, due_at FROM sidekick.schedule_runs WHERE name = 'queue' ORDER BY due_at`)).rows;
    // Queued: consecutive occurrences, none skipped (within the missed-run grace).
    expect(queue.filter((r) => r.outcome === 'skipped')).toEqual([]);
    expect(queue[1].due_at - queue[0].due_at).toBe(200);
  });

  it('an event action is published through sidekick.publish and flows through the routes to a sink', async () => {
    const url = await setup();
    await addSchedule(c, { name: 'beat', at: 'now', emit: 'heartbeat', key: 'k1' });
    await addSchedule(c, { name: 'custom', at: 'now', emit: 'heartbeat', payload: { hello: 'world' } });
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => {
      text += d.toString();
    });
    const bridge = stack.bridge(
      url,
      {
        scheduler: { pollInterval: 200 },
        sinks: { console: { type: 'stdout', format: 'json' } },
        routes: [{ from: 'heartbeat', to: 'console' }],
      },
      { stdout: out },
    );
    await bridge.start();
    await waitFor(() => text.trim().split('\n').filter(Boolean).length >= 2, 'both events on the stdout sink', 15_000);
    const events = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l))
      .sort((a, b) => String(a.key).localeCompare(String(b.key)));
    expect(events[0]).toMatchObject({ source: 'publish', channel: 'heartbeat', key: 'k1', payload: { schedule: 'beat' } });
    expect(events[0].payload.due_at).toMatch(/^\d{4}-/);
    expect(events[1]).toMatchObject({ source: 'publish', channel: 'heartbeat', payload: { hello: 'world' } });
    expect(await count(c, `SELECT 1 FROM sidekick.schedule_runs WHERE outcome = 'succeeded'`)).toBe(2);
  });

  it('a restart loses nothing: jobs pending at a stop run after the next start, once', async () => {
    const url = await setup();
    const first = stack.scheduler(url);
    await first.start();
    await c.query(`INSERT INTO sidekick.schedules (run_at, sql) VALUES
      (now() + interval '200 milliseconds', 'INSERT INTO hits (job) VALUES (1)'),
      (now() + interval '1500 milliseconds', 'INSERT INTO hits (job) VALUES (2)')`);
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits WHERE job = 1')) === 1, 'the first job');
    await first.stop();
    expect(await count(c, 'SELECT 1 FROM hits WHERE job = 2')).toBe(0);
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits WHERE job = 2')) === 1, 'the second job after the restart');
    expect(await count(c, 'SELECT * FROM hits')).toBe(2);
  });

  it('keeps run history for the retention period only', async () => {
    const url = await setup();
    await c.query(`INSERT INTO sidekick.schedule_runs (schedule_id, due_at, started_at, finished_at, outcome)
                   VALUES (1, now() - interval '10 days', now() - interval '10 days', now() - interval '10 days', 'succeeded'),
                          (2, now() - interval '1 hour', now() - interval '1 hour', now() - interval '1 hour', 'succeeded')`);
    await stack.scheduler(url, { history: { retention: 86_400_000 } }).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM sidekick.schedule_runs')) === 1, 'old history to go');
    expect((await c.query('SELECT schedule_id FROM sidekick.schedule_runs')).rows).toEqual([{ schedule_id: '2' }]);
  });

  it('waits for the schema and says so; starts once `sidekick install` ran', async () => {
    const { createTestDatabase } = await import('../support/db.js');
    db = await createTestDatabase('sched');
    c = await db.client();
    const s = stack.scheduler(db.url, { pollInterval: 100 });
    await s.start();
    await new Promise((r) => setTimeout(r, 300));
    expect(s.ready).toBe(false);
    const { migrate } = await import('../../src/sql/migrate.js');
    await migrate(c);
    await waitFor(() => s.ready, 'the scheduler to become ready', 15_000);
  });
});
