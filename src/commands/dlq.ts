import pg from 'pg';
import { ConfigError } from '../errors.js';
import { INSTALLATION, rowEnvelope, type EventRow } from '../outbox/queries.js';
import { envelopeJson, type Envelope } from '../envelope.js';
import { databaseFor, type DatabaseOptions } from './database.js';
import type { CommandIO } from './io.js';
import { createProgress } from './progress.js';

export interface DlqOptions extends DatabaseOptions {
  /** Only this sink's dead letters. */
  readonly sink?: string;
}

export interface DlqListOptions extends DlqOptions {
  readonly limit?: number;
  readonly json?: boolean;
}

export interface DlqSelectOptions extends DlqOptions {
  /** Dead-letter ids (the `id` column of `dlq list`). */
  readonly ids: readonly string[];
  readonly all?: boolean;
}

interface DeadRow extends EventRow {
  id: string;
  sink: string;
  failed_at: Date;
  attempts: number;
  error_code: string;
  error: string;
}

async function withClient<T>(options: DatabaseOptions, io: CommandIO, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client(databaseFor(options, io));
  client.on('error', () => {});
  await client.connect();
  try {
    const installed = await client.query<{ ok: boolean }>(`SELECT to_regclass('sidekick.dead_letters') IS NOT NULL AS ok`);
    if (!installed.rows[0]?.ok)
      throw new ConfigError('pg-sidekick is not installed in this database (no sidekick.dead_letters): run `sidekick install`');
    const current = await client.query<{ ok: boolean }>(`SELECT to_regclass('sidekick.installation') IS NOT NULL AS ok`);
    if (!current.rows[0]?.ok)
      throw new ConfigError('the sidekick schema in this database is older than this pg-sidekick: run `sidekick install` to update it');
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

function parseIds(ids: readonly string[]): string[] {
  for (const id of ids) if (!/^\d+$/.test(id)) throw new ConfigError(`not a dead-letter id: "${id}" (see the id column of \`sidekick dlq list\`)`);
  return [...ids];
}

/** Pads columns; the last column is not padded. */
function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** `sidekick dlq list`: the dead letters, newest first, as a table (or JSON with --json). */
export async function dlqListCommand(options: DlqListOptions, io: CommandIO): Promise<number> {
  const limit = options.limit ?? 50;
  if (!Number.isInteger(limit) || limit < 1) throw new ConfigError(`--limit must be a positive whole number, got ${options.limit}`);
  return withClient(options, io, async (c) => {
    const { rows } = await c.query<DeadRow>(
      `
      SELECT id, sink, event_id, event_uid, failed_at, attempts, error_code, error,
             xid::text AS xid, at, source, channel, op, schema_name, table_name, key, new, old, payload
      FROM sidekick.dead_letters WHERE ($1::text IS NULL OR sink = $1)
      ORDER BY id DESC LIMIT $2`,
      [options.sink ?? null, limit],
    );
    const installation = (await c.query<{ id: string }>(INSTALLATION)).rows[0]?.id ?? '';
    const events = rows.map((r) => rowEnvelope(r, installation));
    const total =
      (
        await c.query<{ n: number }>('SELECT count(*)::int AS n FROM sidekick.dead_letters WHERE ($1::text IS NULL OR sink = $1)', [
          options.sink ?? null,
        ])
      ).rows[0]?.n ?? 0;
    if (options.json) {
      io.stdout.write(
        `${JSON.stringify(
          rows.map((r, i) => ({
            id: Number(r.id),
            sink: r.sink,
            failedAt: r.failed_at.toISOString(),
            attempts: r.attempts,
            error: { code: r.error_code, message: r.error },
            event: envelopeJson(events[i] as Envelope),
          })),
          null,
          2,
        )}\n`,
      );
      return 0;
    }
    if (rows.length === 0) {
      io.stdout.write(`no dead letters${options.sink ? ` for sink ${options.sink}` : ''}\n`);
      return 0;
    }
    io.stdout.write(
      `${table(
        ['ID', 'SINK', 'EVENT', 'CHANNEL', 'OP', 'KEY', 'TRIES', 'FAILED AT', 'ERROR'],
        rows.map((r, i) => [
          r.id,
          r.sink,
          (events[i] as Envelope).id,
          r.channel,
          r.op ?? '-',
          oneLine(r.key ?? '-', 24),
          String(r.attempts),
          r.failed_at.toISOString().replace(/\.\d+Z$/, 'Z'),
          `${r.error_code}: ${oneLine(r.error, 80)}`,
        ]),
      )}\n`,
    );
    if (total > rows.length) io.stdout.write(`(${rows.length} of ${total}; --limit to see more)\n`);
    return 0;
  });
}

function selection(options: DlqSelectOptions, verb: string): { ids: string[] | null } {
  if (options.all && options.ids.length > 0) throw new ConfigError(`dlq ${verb}: give ids or --all, not both`);
  if (!options.all && options.ids.length === 0) throw new ConfigError(`dlq ${verb}: give the ids to ${verb} (see \`sidekick dlq list\`) or --all`);
  return { ids: options.all ? null : parseIds(options.ids) };
}

/** `sidekick dlq retry ids… | --all`: sends dead letters back to their sink, under their original event id. */
export async function dlqRetryCommand(options: DlqSelectOptions, io: CommandIO): Promise<number> {
  const { ids } = selection(options, 'retry');
  return withClient(options, io, async (c) => {
    const { rows } = await c.query<{ id: string }>(
      'SELECT id FROM sidekick.dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY ($1::bigint[])) AND ($2::text IS NULL OR sink = $2)',
      [ids, options.sink ?? null],
    );
    const found = rows.map((r) => r.id);
    const missing = ids?.filter((id) => !found.includes(id)) ?? [];
    // In batches of 10 000 (one transaction each), with progress on stderr when there are several.
    const BATCH = 10_000;
    const progress = found.length > BATCH ? createProgress(io.stderr, 'dlq retry', found.length, 'dead letters') : undefined;
    let requeued = 0;
    for (let i = 0; i < found.length || i === 0; i += BATCH) {
      const result = await c.query<{ n: string }>('SELECT sidekick.retry_dead_letters($1::bigint[]) AS n', [found.slice(i, i + BATCH)]);
      requeued += Number(result.rows[0]?.n ?? 0);
      progress?.update(Math.min(found.length, i + BATCH));
    }
    progress?.finish(found.length);
    io.stdout.write(`requeued ${requeued} dead letter(s); a running bridge delivers them to their sink again\n`);
    if (missing.length > 0) {
      io.stdout.write(`not found: ${missing.join(', ')}\n`);
      return 1;
    }
    return 0;
  });
}

/** `sidekick dlq purge ids… | --all`: deletes dead letters for good. */
export async function dlqPurgeCommand(options: DlqSelectOptions, io: CommandIO): Promise<number> {
  const { ids } = selection(options, 'purge');
  return withClient(options, io, async (c) => {
    const { rows } = await c.query<{ id: string }>(
      'DELETE FROM sidekick.dead_letters WHERE ($1::bigint[] IS NULL OR id = ANY ($1::bigint[])) AND ($2::text IS NULL OR sink = $2) RETURNING id',
      [ids, options.sink ?? null],
    );
    const found = rows.map((r) => r.id);
    io.stdout.write(`purged ${found.length} dead letter(s)\n`);
    const missing = ids?.filter((id) => !found.includes(id)) ?? [];
    if (missing.length > 0) {
      io.stdout.write(`not found: ${missing.join(', ')}\n`);
      return 1;
    }
    return 0;
  });
}
