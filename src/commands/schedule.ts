import type pg from 'pg';
import { ConfigError } from '../errors.js';
import {
  addSchedule,
  listSchedules,
  removeSchedule,
  runNow,
  scheduleHistory,
  setEnabled,
  toInterval,
  type NewSchedule,
  type ScheduleRow,
} from '../scheduler/schedules.js';
import { connectDatabase, databaseFor, type DatabaseOptions } from './database.js';
import type { CommandIO } from './io.js';

/** `sidekick schedule …`: add, list, remove, enable, disable, run-now and history of sidekick.schedules. */

async function withClient<T>(options: DatabaseOptions, io: CommandIO, run: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = await connectDatabase(databaseFor(options, io), io, { application_name: 'sidekick schedule' });
  try {
    return await run(client);
  } catch (error) {
    if ((error as { code?: string }).code === '42P01') {
      throw new ConfigError('sidekick.schedules does not exist in this database: run `sidekick install` first');
    }
    throw error;
  } finally {
    await client.end().catch(() => {});
  }
}

export interface AddOptions extends DatabaseOptions {
  at?: string;
  in?: string;
  every?: string;
  cron?: string;
  tz?: string;
  start?: string;
  sql?: string;
  emit?: string;
  payload?: string;
  key?: string;
  missed?: string;
  missedCap?: string;
  overlap?: string;
  timeout?: string;
  attempts?: string;
  retryDelay?: string;
  disabled?: boolean;
  replace?: boolean;
}

function oneOf<T extends string>(option: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!allowed.includes(value as T)) throw new ConfigError(`${option}: "${value}" is not one of ${allowed.join(', ')}`);
  return value as T;
}

function positiveInt(option: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${option}: expected a whole number ≥ 1, got "${value}"`);
  return n;
}

export async function scheduleAddCommand(name: string, options: AddOptions, io: CommandIO): Promise<number> {
  let payload: unknown;
  if (options.payload !== undefined) {
    try {
      payload = JSON.parse(options.payload);
    } catch (error) {
      throw new ConfigError(`--payload: not JSON: ${(error as Error).message}`);
    }
  }
  if (options.at !== undefined && options.in !== undefined) throw new ConfigError('give only one of --at and --in');
  return withClient(options, io, async (client) => {
    let at = options.at;
    if (options.in !== undefined) {
      const { rows } = await client
        .query<{ at: string }>(`SELECT (now() + $1::interval)::text AS at`, [toInterval(options.in)])
        .catch((error: Error) => {
          throw new ConfigError(`--in: ${error.message}`);
        });
      at = rows[0]?.at;
    }
    const spec: NewSchedule = {
      name,
      ...(at !== undefined && { at }),
      ...(options.every !== undefined && { every: options.every }),
      ...(options.cron !== undefined && { cron: options.cron }),
      ...(options.tz !== undefined && { timeZone: options.tz }),
      ...(options.start !== undefined && { start: options.start }),
      ...(options.sql !== undefined && { sql: options.sql }),
      ...(options.emit !== undefined && { emit: options.emit }),
      ...(payload !== undefined && { payload }),
      ...(options.key !== undefined && { key: options.key }),
      ...(options.missed !== undefined && { missed: oneOf('--missed', options.missed, ['skip', 'once', 'all'] as const) }),
      ...(options.missedCap !== undefined && { missedCap: positiveInt('--missed-cap', options.missedCap) }),
      ...(options.overlap !== undefined && { overlap: oneOf('--overlap', options.overlap, ['skip', 'queue'] as const) }),
      ...(options.timeout !== undefined && { timeout: options.timeout }),
      ...(options.attempts !== undefined && { attempts: positiveInt('--attempts', options.attempts) }),
      ...(options.retryDelay !== undefined && { retryDelay: options.retryDelay }),
      enabled: !options.disabled,
      replace: options.replace ?? false,
    };
    const added = await addSchedule(client, spec);
    const when = added.nextRunAt ? `next run ${iso(added.nextRunAt)}` : 'first run being planned by the scheduler';
    io.stdout.write(`schedule "${name}" (id ${added.id}) ${options.replace ? 'saved' : 'added'}: ${when}${options.disabled ? ' (disabled)' : ''}\n`);
    return 0;
  });
}

function iso(d: Date | null): string {
  return d ? d.toISOString().replace(/\.000Z$/, 'Z') : '-';
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return `${rows
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}

function oneLine(text: string, max = 50): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

export async function scheduleListCommand(options: DatabaseOptions & { all?: boolean; json?: boolean }, io: CommandIO): Promise<number> {
  return withClient(options, io, async (client) => {
    const rows = await listSchedules(client, { all: options.all ?? false });
    if (options.json) {
      for (const r of rows) io.stdout.write(`${JSON.stringify(r)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      io.stdout.write('no schedules\n');
      return 0;
    }
    const when = (r: ScheduleRow) =>
      r.kind === 'once' ? `at ${r.spec}` : r.kind === 'every' ? `every ${r.spec}` : `cron ${r.spec}${r.time_zone !== 'UTC' ? ` ${r.time_zone}` : ''}`;
    io.stdout.write(
      table([
        ['ID', 'NAME', 'WHEN', 'NEXT RUN', 'LAST', 'ACTION'],
        ...rows.map((r) => [
          r.id,
          r.name ?? `(${r.origin})`,
          when(r),
          r.enabled ? iso(r.next_run_at) : 'disabled',
          r.last_outcome ? `${r.last_outcome} ${iso(r.last_run_at)}` : '-',
          oneLine(r.action),
        ]),
      ]),
    );
    return 0;
  });
}

export async function scheduleRemoveCommand(ref: string, options: DatabaseOptions, io: CommandIO): Promise<number> {
  return withClient(options, io, async (client) => {
    if (!(await removeSchedule(client, ref))) {
      io.stderr.write(`sidekick schedule: no schedule named "${ref}"\n`);
      return 1;
    }
    io.stdout.write(`schedule "${ref}" removed\n`);
    return 0;
  });
}

export async function scheduleEnableCommand(ref: string, enabled: boolean, options: DatabaseOptions, io: CommandIO): Promise<number> {
  return withClient(options, io, async (client) => {
    if (!(await setEnabled(client, ref, enabled))) {
      io.stderr.write(`sidekick schedule: no schedule named "${ref}"\n`);
      return 1;
    }
    io.stdout.write(`schedule "${ref}" ${enabled ? 'enabled' : 'disabled'}\n`);
    return 0;
  });
}

export async function scheduleRunNowCommand(ref: string, options: DatabaseOptions, io: CommandIO): Promise<number> {
  return withClient(options, io, async (client) => {
    const id = await runNow(client, ref);
    if (id === undefined) {
      io.stderr.write(`sidekick schedule: no schedule named "${ref}"\n`);
      return 1;
    }
    io.stdout.write(`a run of "${ref}" is due now (job ${id}); a running scheduler picks it up within moments\n`);
    return 0;
  });
}

export async function scheduleHistoryCommand(
  ref: string | undefined,
  options: DatabaseOptions & { limit?: string; json?: boolean },
  io: CommandIO,
): Promise<number> {
  const limit = positiveInt('--limit', options.limit) ?? 20;
  return withClient(options, io, async (client) => {
    const rows = await scheduleHistory(client, { ...(ref !== undefined && { ref }), limit });
    if (rows === undefined) {
      io.stderr.write(`sidekick schedule: no schedule or history named "${ref}"\n`);
      return 1;
    }
    if (options.json) {
      for (const r of rows) io.stdout.write(`${JSON.stringify(r)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      io.stdout.write('no runs recorded\n');
      return 0;
    }
    io.stdout.write(
      table([
        ['STARTED', 'SCHEDULE', 'DUE', 'OUTCOME', 'TOOK', 'ERROR'],
        ...rows.map((r) => [
          iso(r.started_at),
          r.name ?? r.schedule_id,
          iso(r.due_at),
          r.attempts > 1 ? `${r.outcome} (attempt ${r.attempts})` : r.outcome,
          r.duration_ms === null ? '-' : `${r.duration_ms.toFixed(1)}ms`,
          oneLine(r.error ?? '', 80),
        ]),
      ]),
    );
    return 0;
  });
}
