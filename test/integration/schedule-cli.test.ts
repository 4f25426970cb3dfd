import { PassThrough } from 'node:stream';
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { CommandIO } from '../../src/commands/io.js';
import { installCommand } from '../../src/commands/install.js';
import {
  scheduleAddCommand,
  scheduleEnableCommand,
  scheduleHistoryCommand,
  scheduleListCommand,
  scheduleRemoveCommand,
  scheduleRunNowCommand,
} from '../../src/commands/schedule.js';
import { ConfigError } from '../../src/errors.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { count, createStack, installedDatabase } from '../support/scheduler-helpers.js';

function captureIO(): CommandIO & { out(): string; err(): string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return { stdout, stderr, env: {}, signal: new AbortController().signal, out: () => out, err: () => err };
}

describe('sidekick schedule … (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let c: pg.Client;
  const stack = createStack();
  afterEach(async () => {
    await stack.stopAll();
    await db?.drop();
    db = undefined;
  });

  it('add, list, run-now, history, disable, remove', async () => {
    ({ db, c } = await installedDatabase());
    await c.query('CREATE TABLE hits (n int)');
    const database = db.url;
    let io = captureIO();
    expect(
      await scheduleAddCommand('cleanup', { database, every: '1h', sql: 'INSERT INTO hits VALUES (1)', start: '2100-01-01T00:00:00Z' }, io),
    ).toBe(0);
    expect(io.out()).toMatch(/schedule "cleanup" \(id \d+\) added: next run 2100-01-01T00:00:00Z/);
    io = captureIO();
    expect(
      await scheduleAddCommand(
        'nightly',
        { database, cron: '0 3 * * *', tz: 'Europe/Paris', sql: 'SELECT 1', missed: 'skip', overlap: 'queue', timeout: '30s' },
        io,
      ),
    ).toBe(0);
    const { rows } = await c.query(
      `SELECT missed, overlap, statement_timeout::text AS t, time_zone, next_run_at FROM sidekick.schedules WHERE name = 'nightly'`,
    );
    expect(rows[0]).toMatchObject({ missed: 'skip', overlap: 'queue', t: '00:00:30', time_zone: 'Europe/Paris' });
    // 03:00 in Paris is 01:00 or 02:00 UTC
    expect([1, 2]).toContain(rows[0].next_run_at.getUTCHours());
    await expect(scheduleAddCommand('cleanup', { database, every: '1h', sql: 'SELECT 1' }, captureIO())).rejects.toThrow(/already exists/);
    await expect(scheduleAddCommand('bad', { database, cron: 'nope', sql: 'SELECT 1' }, captureIO())).rejects.toThrow(ConfigError);
    await expect(scheduleAddCommand('bad', { database, every: '1h' }, captureIO())).rejects.toThrow(/--sql and --emit/);
    await expect(scheduleAddCommand('bad', { database, every: '1h', cron: '* * * * *', sql: 'SELECT 1' }, captureIO())).rejects.toThrow(
      /exactly one of/,
    );
    await expect(scheduleAddCommand('bad', { database, every: 'often', sql: 'SELECT 1' }, captureIO())).rejects.toThrow(/interval/);
    await expect(scheduleAddCommand('bad', { database, every: '1h', sql: 'SELECT 1', missed: 'maybe' }, captureIO())).rejects.toThrow(/--missed/);

    io = captureIO();
    expect(await scheduleListCommand({ database }, io)).toBe(0);
    expect(io.out()).toMatch(/^ID\s+NAME\s+WHEN\s+NEXT RUN\s+LAST\s+ACTION/);
    expect(io.out()).toMatch(/nightly\s+cron 0 3 \* \* \* Europe\/Paris/);
    expect(io.out()).toMatch(/cleanup\s+every 01:00:00\s+2100-01-01T00:00:00Z/);

    // run-now: an extra run, recorded under the schedule; the schedule's own next run is unchanged
    await stack.scheduler(db.url).start();
    io = captureIO();
    expect(await scheduleRunNowCommand('cleanup', { database }, io)).toBe(0);
    await waitFor(async () => (await count(c, 'SELECT 1 FROM hits')) === 1, 'the run-now run');
    io = captureIO();
    expect(await scheduleHistoryCommand('cleanup', { database }, io)).toBe(0);
    expect(io.out()).toMatch(/cleanup\s+\S+\s+succeeded/);
    io = captureIO();
    expect(await scheduleHistoryCommand(undefined, { database, json: true }, io)).toBe(0);
    expect(JSON.parse(io.out().trim().split('\n')[0]!)).toMatchObject({ name: 'cleanup', outcome: 'succeeded' });
    expect((await c.query(`SELECT next_run_at FROM sidekick.schedules WHERE name = 'cleanup'`)).rows[0].next_run_at.toISOString()).toBe(
      '2100-01-01T00:00:00.000Z',
    );

    expect(await scheduleEnableCommand('nightly', false, { database }, captureIO())).toBe(0);
    expect((await c.query(`SELECT enabled FROM sidekick.schedules WHERE name = 'nightly'`)).rows[0].enabled).toBe(false);
    io = captureIO();
    expect(await scheduleRemoveCommand('nightly', { database }, io)).toBe(0);
    io = captureIO();
    expect(await scheduleRemoveCommand('nightly', { database }, io)).toBe(1);
    expect(io.err()).toMatch(/no schedule named "nightly"/);
    io = captureIO();
    expect(await scheduleListCommand({ database, json: true }, io)).toBe(0);
    expect(
      io
        .out()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).name),
    ).toEqual(['cleanup']);
  });

  it('says to run `sidekick install` when the schema is missing', async () => {
    db = await createTestDatabase('sched');
    await expect(scheduleListCommand({ database: db.url }, captureIO())).rejects.toThrow(/sidekick install/);
  });
});

describe('pgcron.sql compatibility: sidekick install --pgcron (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let c: pg.Client;
  const stack = createStack();
  afterEach(async () => {
    await stack.stopAll();
    await db?.drop();
    db = undefined;
  });
  async function setup() {
    db = await createTestDatabase('pgcron');
    c = await db.client();
    const io = captureIO();
    expect(await installCommand({ database: db.url, pgcron: true }, io)).toBe(0);
    expect(io.out()).toMatch(/pgcron compatibility installed: public\.scheduled_events/);
    return db.url;
  }

  it("the seed README's example runs now and then every 20 minutes", async () => {
    const url = await setup();
    await c.query(`CREATE TABLE spool (id int, expires timestamptz)`);
    await c.query(`INSERT INTO spool VALUES (1, now() - interval '1 hour'), (2, now() + interval '1 hour')`);
    // Exactly the seed README's statement.
    await c.query(`insert into scheduled_events (run_at, period, run_action)
    values (current_timestamp, '20 minutes',
            $$delete from spool where expires < current_timestamp$$);`);
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM spool')) === 1, 'the expired spool row to be deleted');
    await waitFor(
      async () => (await count(c, `SELECT 1 FROM scheduled_events WHERE run_at > now() + interval '19 minutes'`)) === 1,
      'the event to move 20 minutes on',
    );
    const { rows } = await c.query(`SELECT period::text, run_action FROM scheduled_events`);
    expect(rows).toEqual([{ period: '00:20:00', run_action: 'delete from spool where expires < current_timestamp' }]);
  });

  it('one-shot events run once and disappear; the nearest event runs first, not the furthest', async () => {
    const url = await setup();
    await c.query('CREATE TABLE log (what text, at timestamptz DEFAULT clock_timestamp())');
    await stack.scheduler(url).start();
    // pgcron.sql armed pglater with the furthest event, so the near one waited for it.
    await c.query(`insert into scheduled_events (run_at, run_action) values (now() + interval '1 hour', $$insert into log values ('far')$$)`);
    await c.query(`insert into scheduled_events (run_at, run_action) values (now() + interval '1 second', $$insert into log values ('near')$$)`);
    await waitFor(async () => (await count(c, `SELECT 1 FROM log WHERE what = 'near'`)) === 1, 'the near event', 5_000);
    expect(await count(c, 'SELECT 1 FROM scheduled_events')).toBe(1);
    expect((await c.query('SELECT run_action FROM scheduled_events')).rows[0].run_action).toMatch(/far/);
  });

  it('a day of backlog is caught up in a loop (no recursion), and the event stays armed across a restart', async () => {
    const url = await setup();
    await c.query('CREATE TABLE log (n int)');
    await c.query(`insert into scheduled_events (run_at, period, run_action)
                   values (now() - interval '1 day', '20 minutes', $$insert into log values (1)$$)`);
    const first = stack.scheduler(url);
    await first.start();
    // 73 occurrences are due (-24h … now, every 20 minutes): the seed's policy ran them all.
    await waitFor(async () => (await count(c, 'SELECT 1 FROM log')) === 73, 'the backlog', 20_000, 50);
    expect((await c.query(`SELECT run_at > now() AS future FROM scheduled_events`)).rows[0].future).toBe(true);
    await first.stop();
    // Still armed: move it to now and start a new scheduler.
    await c.query(`UPDATE scheduled_events SET run_at = now()`);
    await stack.scheduler(url).start();
    await waitFor(async () => (await count(c, 'SELECT 1 FROM log')) === 74, 'the event after the restart');
  });

  it("migrates a table left by the seed's pgcron.sql, and applying twice is harmless", async () => {
    db = await createTestDatabase('pgcron');
    c = await db.client();
    await c.query(`create table scheduled_events (id serial not null, run_at timestamptz not null, period interval, run_action text not null)`);
    await c.query(`create function events_changed() returns trigger as $$ begin return new; end $$ language plpgsql`);
    await c.query(`create trigger events_changed after insert or update on scheduled_events for each statement execute procedure events_changed()`);
    await c.query(
      `insert into scheduled_events (run_at, period, run_action) values (now() + interval '1 hour', '1 day', 'select 1'), (now() + interval '2 ` +
        `hours', null, 'select 2')`,
    );
    expect(await installCommand({ database: db.url, pgcron: true }, captureIO())).toBe(0);
    expect(await installCommand({ database: db.url, pgcron: true }, captureIO())).toBe(0);
    const { rows } = await c.query(`SELECT period::text, run_action FROM scheduled_events ORDER BY run_at`);
    expect(rows).toEqual([
      { period: '1 day', run_action: 'select 1' },
      { period: null, run_action: 'select 2' },
    ]);
    expect((await c.query(`SELECT to_regprocedure('events_changed()') AS f`)).rows[0].f).toBeNull();
    expect((await c.query(`SELECT relkind FROM pg_class WHERE relname = 'scheduled_events'`)).rows[0].relkind).toBe('v');
  });

  it("update and delete through the view; the seed's run_events() answers the seconds to the next event", async () => {
    await setup();
    await c.query(`insert into scheduled_events (run_at, period, run_action) values (now() + interval '1 hour', '1 day', 'select 1')`);
    await c.query(`update scheduled_events set period = '2 days', run_action = 'select 2'`);
    expect((await c.query(`SELECT every::text, sql FROM sidekick.schedules`)).rows).toEqual([{ every: '2 days', sql: 'select 2' }]);
    const { rows } = await c.query('SELECT run_events() AS delta');
    expect(rows[0].delta).toBeGreaterThan(3500);
    expect(rows[0].delta).toBeLessThanOrEqual(3600);
    await c.query('delete from scheduled_events');
    expect(await count(c, 'SELECT 1 FROM sidekick.schedules')).toBe(0);
    await expect(c.query(`insert into scheduled_events (run_at, run_action) values (null, 'select 1')`)).rejects.toThrow(/not-null/);
  });
});
