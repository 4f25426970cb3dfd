import pg from 'pg';
import { errorMessage } from '../errors.js';
import { LOCK_CLASS, PARTITIONS } from '../outbox/queries.js';
import { describeConnection } from '../pg/connection.js';
import { readDatabaseStats, type DatabaseStats } from '../pg/stats.js';
import { listMigrations } from '../sql/migrate.js';
import { databaseFor, type DatabaseOptions } from './database.js';
import type { CommandIO } from './io.js';
import { loadConfigFor } from './run.js';

export interface StatusOptions extends DatabaseOptions {
  readonly json?: boolean;
}

/** What `sidekick status` reports (also its --json form). */
export interface Status {
  readonly database: string;
  readonly schema: { readonly version: number; readonly name: string; readonly latest: number; readonly upToDate: boolean };
  readonly outbox: DatabaseStats['outbox'];
  /** Every sink with something waiting or dead, plus the config's sinks (with zeros). */
  readonly sinks: DatabaseStats['sinks'];
  /** null when the scheduler's tables are not installed. */
  readonly schedules: DatabaseStats['schedules'] | null;
  /** Drain instances (sessions holding outbox partitions) and how many of the 16 partitions are held. */
  readonly drains: { readonly instances: number; readonly partitionsOwned: number; readonly partitions: number };
  /** pg-sidekick's sessions on this database, by application_name. */
  readonly connections: readonly {
    readonly applicationName: string;
    readonly count: number;
    readonly since: string;
    readonly clients: readonly string[];
  }[];
}

/**
 * Sessions opened by pg-sidekick name themselves: `pg-sidekick` (the LISTEN connection, unless
 * PGAPPNAME or application_name overrides it), `pg-sidekick drain`, `pg-sidekick scheduler`,
 * `pg-sidekick stats` (scrape-time metrics).
 */
const CONNECTIONS_SQL = `
SELECT application_name AS name, count(*)::int AS n, min(backend_start) AS since,
       array_agg(DISTINCT coalesce(host(client_addr), 'local')) AS clients
FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'pg-sidekick%' AND pid <> pg_backend_pid()
GROUP BY application_name ORDER BY application_name`;

/** The drains' partition locks (two-key advisory locks: LOCK_CLASS, partition). */
const DRAINS_SQL = `
SELECT count(DISTINCT pid)::int AS instances, count(DISTINCT objid)::int AS owned
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::bigint::oid AND objid < $2
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`;

/** Reads the status; throws a message meant for the user when the schema is not installed. */
export async function readStatus(client: pg.Client, describe: string, configSinks: readonly string[] = []): Promise<Status> {
  const installed = await client.query<{ ok: boolean }>(`SELECT to_regclass('sidekick.migrations') IS NOT NULL AS ok`);
  if (!installed.rows[0]?.ok) throw new NotInstalled(`pg-sidekick is not installed in ${describe} (no sidekick schema): run \`sidekick install\``);
  const version = (
    await client.query<{ id: number | null; name: string | null }>('SELECT id, name FROM sidekick.migrations ORDER BY id DESC LIMIT 1')
  ).rows[0];
  const latest = listMigrations().at(-1)?.id ?? 0;
  const query = async <R extends pg.QueryResultRow>(sql: string, values?: unknown[]) => (await client.query<R>(sql, values)).rows;
  const stats = await readDatabaseStats(query);
  if (!stats.installed) throw new NotInstalled(`pg-sidekick's outbox is not installed in ${describe}: run \`sidekick install\``);
  const sinks = new Map(stats.sinks.map((s) => [s.sink, s]));
  for (const name of configSinks) if (!sinks.has(name)) sinks.set(name, { sink: name, backlog: 0, backlogOldestAgeSeconds: 0, deadLetters: 0 });
  const drains = (await query<{ instances: number; owned: number }>(DRAINS_SQL, [LOCK_CLASS, PARTITIONS]))[0];
  const connections = await query<{ name: string; n: number; since: Date; clients: string[] }>(CONNECTIONS_SQL);
  return {
    database: describe,
    schema: { version: version?.id ?? 0, name: version?.name ?? '', latest, upToDate: (version?.id ?? 0) >= latest },
    outbox: stats.outbox,
    sinks: [...sinks.values()].sort((a, b) => a.sink.localeCompare(b.sink)),
    schedules: stats.schedules ?? null,
    drains: { instances: drains?.instances ?? 0, partitionsOwned: drains?.owned ?? 0, partitions: PARTITIONS },
    connections: connections.map((c) => ({ applicationName: c.name, count: c.n, since: c.since.toISOString(), clients: c.clients })),
  };
}

class NotInstalled extends Error {}

/** 0.4 s, 12 s, 5 min, 3.2 h, 2.1 d. */
export function formatAge(seconds: number): string {
  if (seconds <= 0) return '-';
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86_400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] as number))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].map((l) => `  ${l}`).join('\n');
}

export function formatStatus(s: Status): string {
  const n = (v: number) => v.toLocaleString('en-US');
  const lines: string[] = [];
  lines.push(`pg-sidekick on ${s.database}`);
  lines.push(
    `  schema      ${s.schema.name || 'none'}${s.schema.upToDate ? '' : ` — behind this version (${s.schema.latest}): run \`sidekick install\``}`,
  );
  const o = s.outbox;
  lines.push(
    `  outbox      ${o.estimated ? '~' : ''}${n(o.events)} event(s) waiting in ${o.estimated ? '~' : ''}${n(o.rows)} ` +
      `row(s)${o.events > 0 ? `, oldest ${formatAge(o.oldestAgeSeconds)}` : ''}`,
  );
  lines.push(
    `  drains      ${s.drains.instances} instance(s), ${s.drains.partitionsOwned}/${s.drains.partitions} partitions ` +
      `owned${s.drains.instances === 0 ? ' — no bridge is draining the outbox' : ''}`,
  );
  lines.push(
    `  schedules   ${
      s.schedules
        ? `${n(s.schedules.due)} due${s.schedules.due > 0 ? `, oldest due for ${formatAge(s.schedules.oldestDueSeconds)}` : ''}`
        : 'not installed'
    }`,
  );
  lines.push('');
  if (s.sinks.length === 0) {
    lines.push('sinks: no backlog, no dead letters');
  } else {
    lines.push('sinks:');
    lines.push(
      table(
        ['SINK', 'BACKLOG', 'OLDEST', 'DEAD LETTERS'],
        s.sinks.map((k) => [k.sink, n(k.backlog), formatAge(k.backlogOldestAgeSeconds), n(k.deadLetters)]),
      ),
    );
  }
  lines.push('');
  if (s.connections.length === 0) {
    lines.push('connections: none from pg-sidekick (no bridge running against this database?)');
  } else {
    lines.push('connections:');
    lines.push(
      table(
        ['APPLICATION', 'COUNT', 'SINCE', 'FROM'],
        s.connections.map((c) => [c.applicationName, String(c.count), c.since.replace(/\.\d+Z$/, 'Z'), c.clients.join(', ')]),
      ),
    );
  }
  return `${lines.join('\n')}\n`;
}

/**
 * `sidekick status [--json]`: backlog, oldest event, per-sink backlog and dead letters, due
 * schedules, drain instances and pg-sidekick's connections. Exit 1 (with the reason on stderr) when
 * the database cannot be reached or pg-sidekick is not installed there.
 */
export async function statusCommand(options: StatusOptions, io: CommandIO): Promise<number> {
  const connection = databaseFor(options, io);
  const configSinks = options.config && !options.database ? loadConfigFor(options.config, io).sinks.map((s) => s.name) : [];
  const describe = describeConnection(connection, io.env);
  const client = new pg.Client({
    ...connection,
    connectionTimeoutMillis: connection.connectionTimeoutMillis ?? 5_000,
    application_name: 'sidekick status',
  });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (error) {
    io.stderr.write(`sidekick status: cannot connect to ${describe}: ${errorMessage(error)}\n`);
    return 1;
  }
  try {
    const status = await readStatus(client, describe, configSinks);
    io.stdout.write(options.json ? `${JSON.stringify(status, null, 2)}\n` : formatStatus(status));
    return 0;
  } catch (error) {
    if (error instanceof NotInstalled) {
      io.stderr.write(`sidekick status: ${error.message}\n`);
      return 1;
    }
    throw error;
  } finally {
    await client.end().catch(() => {});
  }
}
