import ms from 'ms';
import type pg from 'pg';
import { ConfigError } from '../errors.js';
import { checkTimeZone, parseCron, type MissedPolicy, type OverlapPolicy } from './recurrence.js';

/**
 * Reading and changing sidekick.schedules from the outside (the `sidekick schedule` commands, tests).
 * Input is validated here with messages that name the option, before PostgreSQL's own checks.
 */

export interface NewSchedule {
  readonly name: string;
  /** Exactly one of at / every / cron. `at`: anything PostgreSQL reads as timestamptz. */
  readonly at?: string;
  /** A duration ("20m", "1h") or a PostgreSQL interval ("20 minutes", "1 month"). */
  readonly every?: string;
  readonly cron?: string;
  readonly timeZone?: string;
  /** First occurrence of an interval schedule (default now); earliest for cron. */
  readonly start?: string;
  /** Exactly one of sql / emit. */
  readonly sql?: string;
  readonly emit?: string;
  readonly payload?: unknown;
  readonly key?: string;
  readonly missed?: MissedPolicy;
  readonly missedCap?: number;
  readonly overlap?: OverlapPolicy;
  /** A duration or PostgreSQL interval. */
  readonly timeout?: string;
  readonly attempts?: number;
  readonly retryDelay?: string;
  readonly enabled?: boolean;
  /** Replace a schedule of the same name instead of failing. */
  readonly replace?: boolean;
  readonly origin?: string;
}

/** "20m" → "1200000 milliseconds"; anything else is left for PostgreSQL's interval parser. */
export function toInterval(text: string): string {
  const parsed = ms(text.trim() as ms.StringValue);
  return typeof parsed === 'number' && Number.isFinite(parsed) ? `${parsed} milliseconds` : text;
}

export async function addSchedule(client: pg.ClientBase, s: NewSchedule): Promise<{ id: string; nextRunAt: Date | null }> {
  const timings = [s.at, s.every, s.cron].filter((v) => v !== undefined).length;
  if (timings !== 1) throw new ConfigError('give exactly one of --at, --in, --every, --cron');
  if ((s.sql === undefined) === (s.emit === undefined)) throw new ConfigError('give exactly one of --sql and --emit');
  if (s.sql !== undefined && s.sql.trim() === '') throw new ConfigError('--sql is empty');
  if (s.emit === undefined && (s.payload !== undefined || s.key !== undefined)) throw new ConfigError('--payload and --key go with --emit');
  if (s.at !== undefined && s.start !== undefined) throw new ConfigError('--start goes with --every or --cron');
  const tz = s.timeZone ?? 'UTC';
  try {
    checkTimeZone(tz);
  } catch {
    throw new ConfigError(`--tz: unknown time zone "${tz}" (use an IANA name such as Europe/Paris, or UTC)`);
  }
  let due: Date | null = null;
  if (s.cron !== undefined) {
    let cron: ReturnType<typeof parseCron>;
    try {
      cron = parseCron(s.cron, tz);
    } catch (error) {
      throw new ConfigError(`--cron: ${(error as Error).message}`);
    }
    // The first occurrence is computed here; rows inserted by plain SQL are planned by the scheduler.
    const { rows } = await client.query<{ start: Date }>('SELECT greatest(now(), $1::timestamptz) AS start', [s.start ?? null]);
    const start = rows[0]?.start as Date;
    due = cron.nextRun(new Date(start.getTime() - 1));
    if (due === null) throw new ConfigError(`--cron: "${s.cron}" never occurs after ${start.toISOString()}`);
  }
  const columns = {
    name: s.name,
    run_at: s.at ?? null,
    every: s.every !== undefined ? toInterval(s.every) : null,
    cron: s.cron ?? null,
    time_zone: tz,
    starts_at: s.start ?? null,
    sql: s.sql ?? null,
    channel: s.emit ?? null,
    payload: s.payload === undefined ? null : JSON.stringify(s.payload),
    key: s.key ?? null,
    missed: s.missed ?? 'once',
    missed_cap: s.missedCap ?? 100,
    overlap: s.overlap ?? 'skip',
    statement_timeout: s.timeout !== undefined ? toInterval(s.timeout) : null,
    max_attempts: s.attempts ?? 1,
    retry_delay: s.retryDelay !== undefined ? toInterval(s.retryDelay) : '10 seconds',
    enabled: s.enabled ?? true,
    origin: s.origin ?? 'cli',
    due_at: due,
    next_run_at: due,
  };
  const names = Object.keys(columns);
  const casts: Record<string, string> = {
    run_at: 'timestamptz',
    every: 'interval',
    starts_at: 'timestamptz',
    payload: 'jsonb',
    statement_timeout: 'interval',
    retry_delay: 'interval',
    due_at: 'timestamptz',
    next_run_at: 'timestamptz',
    missed_cap: 'int',
    max_attempts: 'int',
    enabled: 'boolean',
  };
  const values = names.map((n, i) => `$${i + 1}${casts[n] ? `::${casts[n]}` : ''}`);
  const upsert = s.replace
    ? ` ON CONFLICT (name) DO UPDATE SET ${names
        .filter((n) => n !== 'name')
        .map((n) => `${n} = EXCLUDED.${n}`)
        .join(', ')}, attempt = 0`
    : '';
  try {
    const { rows } = await client.query<{ id: string; next_run_at: Date | null }>(
      `INSERT INTO sidekick.schedules (${names.join(', ')}) VALUES (${values.join(', ')})${upsert} RETURNING id, next_run_at`,
      Object.values(columns),
    );
    const row = rows[0] as { id: string; next_run_at: Date | null };
    return { id: row.id, nextRunAt: row.next_run_at };
  } catch (error) {
    const e = error as { code?: string; constraint?: string; message: string };
    if (e.code === '23505' && e.constraint === 'schedules_name_key') {
      throw new ConfigError(`a schedule named "${s.name}" already exists (remove it, or pass --replace)`);
    }
    if (e.code === '42P01') throw new ConfigError('sidekick.schedules does not exist in this database: run `sidekick install` first');
    if (e.code?.startsWith('22') || e.code?.startsWith('23')) throw new ConfigError(e.message);
    throw error;
  }
}

export interface ScheduleRow {
  id: string;
  name: string | null;
  kind: 'once' | 'every' | 'cron';
  spec: string;
  time_zone: string;
  action: string;
  enabled: boolean;
  origin: string;
  next_run_at: Date | null;
  last_run_at: Date | null;
  last_outcome: string | null;
  last_error: string | null;
  missed: string;
  overlap: string;
}

/** Schedules, soonest first. One-shot jobs from the `later` sink and run-now copies only with `all`. */
export async function listSchedules(client: pg.ClientBase, options: { all?: boolean } = {}): Promise<ScheduleRow[]> {
  const { rows } = await client.query<ScheduleRow>(
    `
    SELECT id, name,
           CASE WHEN run_at IS NOT NULL THEN 'once' WHEN every IS NOT NULL THEN 'every' ELSE 'cron' END AS kind,
           coalesce(to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), every::text, cron) AS spec,
           time_zone,
           coalesce(sql, 'emit ' || channel || coalesce(' ' || payload::text, '')) AS action,
           enabled, origin, next_run_at, last_run_at, last_outcome, last_error, missed, overlap
      FROM sidekick.schedules
     WHERE $1 OR origin NOT IN ('later', 'run-now')
     ORDER BY next_run_at NULLS LAST, id`,
    [options.all ?? false],
  );
  return rows;
}

/** Finds a schedule by name, or by id when `ref` is all digits (and no schedule has that name). */
export async function findSchedule(client: pg.ClientBase, ref: string): Promise<{ id: string; name: string | null } | undefined> {
  const { rows } = await client.query<{ id: string; name: string | null }>(
    `SELECT id, name FROM sidekick.schedules WHERE name = $1
     UNION ALL
     SELECT id, name FROM sidekick.schedules WHERE $1 ~ '^[0-9]{1,18}$' AND id = $1::bigint AND NOT EXISTS (SELECT 1 FROM sidekick.schedules WHERE name = $1)`,
    [ref],
  );
  return rows[0];
}

export async function removeSchedule(client: pg.ClientBase, ref: string): Promise<boolean> {
  const found = await findSchedule(client, ref);
  if (!found) return false;
  const { rowCount } = await client.query('DELETE FROM sidekick.schedules WHERE id = $1', [found.id]);
  return (rowCount ?? 0) > 0;
}

export async function setEnabled(client: pg.ClientBase, ref: string, enabled: boolean): Promise<boolean> {
  const found = await findSchedule(client, ref);
  if (!found) return false;
  await client.query('UPDATE sidekick.schedules SET enabled = $2 WHERE id = $1', [found.id, enabled]);
  return true;
}

/**
 * An extra run now, outside the schedule's own timing: a one-shot copy of its action whose history
 * is recorded under the schedule. Returns the copy's id.
 */
export async function runNow(client: pg.ClientBase, ref: string): Promise<string | undefined> {
  const found = await findSchedule(client, ref);
  if (!found) return undefined;
  const { rows } = await client.query<{ id: string }>(
    `
    INSERT INTO sidekick.schedules (run_at, sql, channel, payload, key, single_statement, statement_timeout, max_attempts, retry_delay, origin, parent_id)
    SELECT clock_timestamp(), sql, channel, payload, key, single_statement, statement_timeout, max_attempts, retry_delay, 'run-now', coalesce(parent_id, id)
      FROM sidekick.schedules WHERE id = $1
    RETURNING id`,
    [found.id],
  );
  return rows[0]?.id;
}

export interface RunRow {
  id: string;
  schedule_id: string;
  name: string | null;
  due_at: Date;
  started_at: Date;
  finished_at: Date | null;
  duration_ms: number | null;
  outcome: string;
  attempts: number;
  error: string | null;
}

/** Run history, newest first; of one schedule (name or id) or of all. */
export async function scheduleHistory(client: pg.ClientBase, options: { ref?: string; limit?: number } = {}): Promise<RunRow[] | undefined> {
  let id: string | null = null;
  let name: string | null = null;
  if (options.ref !== undefined) {
    const found = await findSchedule(client, options.ref);
    if (found) {
      id = found.id;
      name = found.name;
    } else {
      // A removed schedule's history is still there, under its name.
      const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM sidekick.schedule_runs WHERE name = $1', [options.ref]);
      if (!rows[0]?.n) return undefined;
      name = options.ref;
    }
  }
  const { rows } = await client.query<RunRow>(
    `
    SELECT id, schedule_id, name, due_at, started_at, finished_at,
           (extract(epoch FROM duration) * 1000)::float8 AS duration_ms, outcome, attempts, error
      FROM sidekick.schedule_runs
     WHERE ($1::bigint IS NULL AND $2::text IS NULL) OR schedule_id = $1 OR name = $2
     ORDER BY started_at DESC, id DESC
     LIMIT $3`,
    [id, name, options.limit ?? 20],
  );
  return rows;
}
