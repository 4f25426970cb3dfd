import pg from 'pg';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import { createSampledGauge, type Metrics } from '../metrics.js';

export interface StatsClient {
  /** Runs one short read-only query (bounded by `timeoutMs`); rejects when the database cannot answer. */
  query<R extends pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<R[]>;
  /** Closes the pool. Idempotent. */
  close(): Promise<void>;
}

/**
 * A tiny pool (one connection at most) for the numbers /metrics reads on scrape, such as
 * pg_notification_queue_usage() or the outbox backlog. The connection is opened on the first scrape
 * and closed again after `idleMs` without one, so a bridge that nobody scrapes holds no extra
 * connection, and every wait is bounded so a scrape never hangs on a database that is down.
 */
export function createStatsClient(params: {
  connection: pg.ClientConfig;
  logger: Logger;
  /** Connect and query timeout. Default 2000 ms. */
  timeoutMs?: number;
  /** Close the connection after this long without a query. Default 10 s. */
  idleMs?: number;
}): StatsClient {
  const timeoutMs = params.timeoutMs ?? 2_000;
  const pool = new pg.Pool({
    ...params.connection,
    max: 1,
    idleTimeoutMillis: params.idleMs ?? 10_000,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    statement_timeout: timeoutMs,
    application_name: 'pg-sidekick stats',
    allowExitOnIdle: true,
  });
  // An idle client that loses its connection emits 'error' on the pool; unhandled, it would end the
  // process. The next query simply opens a new connection.
  pool.on('error', (error) => params.logger.debug({ err: errorMessage(error) }, 'stats connection lost'));
  let closed: Promise<void> | undefined;
  return {
    async query<R extends pg.QueryResultRow>(sql: string, values?: unknown[]): Promise<R[]> {
      if (closed) throw new Error('stats client closed');
      const result = await pool.query<R>(sql, values);
      return result.rows;
    },
    close() {
      closed ??= pool.end().catch((error) => {
        params.logger.debug({ err: errorMessage(error) }, 'closing the stats pool failed');
      });
      return closed;
    },
  };
}

/** Runs one query; the stats pool's `query` and a plain client (`sidekick status`) both fit. */
export type QueryFn = <R extends pg.QueryResultRow>(sql: string, params?: unknown[]) => Promise<R[]>;

/**
 * Outbox rows counted exactly, at most. Beyond it the row count is the planner's estimate
 * (pg_class.reltuples) and the event count is extrapolated from the rows counted, so a huge backlog
 * never turns a scrape into a long scan.
 */
export const OUTBOX_COUNT_CAP = 100_000;

export interface OutboxStats {
  /** Outbox rows waiting (a row holds one statement's changed rows: up to 1000 events). */
  readonly rows: number;
  /** Events in those rows. */
  readonly events: number;
  /** True when the counts went over OUTBOX_COUNT_CAP and are estimates. */
  readonly estimated: boolean;
  /** Age of the oldest waiting event (now − its transaction's start), seconds; 0 when empty. */
  readonly oldestAgeSeconds: number;
}

export interface SinkStats {
  readonly sink: string;
  /** Events in the sink's durable backlog (sidekick.deliveries). */
  readonly backlog: number;
  /** Age of the oldest of them (seconds; 0 when none). */
  readonly backlogOldestAgeSeconds: number;
  readonly deadLetters: number;
}

export interface ScheduleStats {
  /** Enabled schedules whose next run is due now (or overdue) and has not started. */
  readonly due: number;
  /** How long the most overdue of them has been due (seconds; 0 when none). */
  readonly oldestDueSeconds: number;
}

export interface DatabaseStats {
  /** False when there is no sidekick.outbox (not installed): every other field is then empty. */
  readonly installed: boolean;
  readonly outbox: OutboxStats;
  /** Sinks with a backlog or dead letters, by name. */
  readonly sinks: readonly SinkStats[];
  /** Undefined when the scheduler's tables are not installed. */
  readonly schedules: ScheduleStats | undefined;
}

const EMPTY_OUTBOX: OutboxStats = { rows: 0, events: 0, estimated: false, oldestAgeSeconds: 0 };

/**
 * Reads the durable path's numbers: outbox backlog and age, per-sink backlog and dead letters,
 * due schedules. Existence is checked first, in its own query: PostgreSQL rejects a query naming a
 * missing table even in a branch that would never run.
 */
export async function readDatabaseStats(query: QueryFn): Promise<DatabaseStats> {
  const [exists] = await query<{ outbox: boolean; events: boolean; schedules: boolean }>(
    `SELECT to_regclass('sidekick.outbox') IS NOT NULL AND to_regclass('sidekick.deliveries') IS NOT NULL
              AND to_regclass('sidekick.dead_letters') IS NOT NULL AS outbox,
            to_regclass('sidekick.events') IS NOT NULL AS events,
            to_regclass('sidekick.schedules') IS NOT NULL AS schedules`,
  );
  if (!exists?.outbox) return { installed: false, outbox: EMPTY_OUTBOX, sinks: [], schedules: undefined };
  // Every waiting event: sidekick.outbox and sidekick.row_changes.
  const queue = exists.events ? 'sidekick.events' : 'sidekick.outbox';
  // The oldest event: the lowest ids are the oldest (ids follow time closely); the primary key
  // index finds them without a scan. Counting walks at most OUTBOX_COUNT_CAP rows.
  const [outbox] = await query<{ rows: string; events: string; oldest: number | null; estimate: number }>(`
    SELECT count(*) AS rows, coalesce(sum(coalesce(cardinality(o.event_ids), 1)), 0) AS events,
           (SELECT extract(epoch FROM now() - min(f.at))::float8 FROM (SELECT at FROM ${queue} ORDER BY id LIMIT 100) f) AS oldest,
           (SELECT sum(greatest(reltuples, 0))::float8 FROM pg_class
            WHERE oid IN ('sidekick.outbox'::regclass, to_regclass('sidekick.row_changes'))) AS estimate
    FROM (SELECT event_ids FROM ${queue} LIMIT ${OUTBOX_COUNT_CAP}) o`);
  let rows = Number(outbox?.rows ?? 0);
  let events = Number(outbox?.events ?? 0);
  const estimated = rows >= OUTBOX_COUNT_CAP;
  if (estimated) {
    const total = Math.max(rows, Number(outbox?.estimate ?? 0));
    events = Math.round(events * (total / rows));
    rows = Math.round(total);
  }
  const sinkRows = await query<{ sink: string; backlog: string; oldest: number | null; dead: string }>(`
    SELECT sink, sum(backlog) AS backlog, max(oldest) AS oldest, sum(dead) AS dead FROM (
      SELECT sink, count(*) AS backlog, extract(epoch FROM now() - min(at))::float8 AS oldest, 0 AS dead
      FROM sidekick.deliveries GROUP BY sink
      UNION ALL
      SELECT sink, 0, NULL, count(*) FROM sidekick.dead_letters GROUP BY sink
    ) s GROUP BY sink ORDER BY sink`);
  let schedules: ScheduleStats | undefined;
  if (exists.schedules) {
    const [s] = await query<{ due: string; oldest: number | null }>(`
      SELECT count(*) AS due, extract(epoch FROM now() - min(next_run_at))::float8 AS oldest
      FROM sidekick.schedules WHERE enabled AND next_run_at <= now()`);
    schedules = { due: Number(s?.due ?? 0), oldestDueSeconds: Math.max(0, s?.oldest ?? 0) };
  }
  return {
    installed: true,
    outbox: { rows, events, estimated, oldestAgeSeconds: Math.max(0, outbox?.oldest ?? 0) },
    sinks: sinkRows.map((r) => ({
      sink: r.sink,
      backlog: Number(r.backlog),
      backlogOldestAgeSeconds: Math.max(0, r.oldest ?? 0),
      deadLetters: Number(r.dead),
    })),
    schedules,
  };
}

/**
 * The gauges read from readDatabaseStats at scrape time. One read serves every gauge of a scrape
 * (they are collected one after the other within milliseconds; the result is kept for 1 s).
 * Never fails the scrape: see createSampledGauge.
 */
export function registerDatabaseGauges(params: {
  metrics: Metrics;
  stats: Pick<StatsClient, 'query'>;
  /** Configured sinks: reported with 0 when they have nothing waiting. */
  sinks: readonly string[];
  /** False while the durable path is off (then the outbox gauges have no samples). */
  outboxEnabled: () => boolean;
  logger?: Logger;
}): void {
  const { metrics, logger } = params;
  let cached: { at: number; value: Promise<DatabaseStats> } | undefined;
  const read = (): Promise<DatabaseStats> => {
    if (!cached || Date.now() - cached.at > 1_000) {
      cached = { at: Date.now(), value: readDatabaseStats((sql, values) => params.stats.query(sql, values)) };
      // A failed read is not kept: the next gauge (or scrape) tries again.
      cached.value.catch(() => {
        cached = undefined;
      });
    }
    return cached.value;
  };
  createSampledGauge(
    metrics,
    {
      name: 'sidekick_outbox_pending_events',
      help: `Events in sidekick.outbox and sidekick.row_changes not yet handed to every sink (read on scrape; above ${OUTBOX_COUNT_CAP} rows an estimate).`,
    },
    async (set) => {
      if (!params.outboxEnabled()) return;
      set((await read()).outbox.events);
    },
    logger,
  );
  createSampledGauge(
    metrics,
    {
      name: 'sidekick_outbox_oldest_age_seconds',
      help: 'Age of the oldest event waiting in sidekick.outbox or sidekick.row_changes (0 when empty; read on scrape).',
    },
    async (set) => {
      if (!params.outboxEnabled()) return;
      set((await read()).outbox.oldestAgeSeconds);
    },
    logger,
  );
  createSampledGauge(
    metrics,
    {
      name: 'sidekick_sink_backlog_oldest_age_seconds',
      help: "Age of the oldest event in a sink's durable backlog, sidekick.deliveries (0 when empty; read on scrape).",
      labelNames: ['sink'],
    },
    async (set) => {
      if (!params.outboxEnabled()) return;
      const stats = await read();
      for (const name of params.sinks) set(0, { sink: name });
      for (const s of stats.sinks) set(s.backlogOldestAgeSeconds, { sink: s.sink });
    },
    logger,
  );
  createSampledGauge(
    metrics,
    {
      name: 'sidekick_schedules_due',
      help: 'Enabled schedules that are due and not started yet (read on scrape; 0 without the scheduler tables).',
    },
    async (set) => {
      set((await read()).schedules?.due ?? 0);
    },
    logger,
  );
  createSampledGauge(
    metrics,
    {
      name: 'sidekick_schedules_oldest_due_seconds',
      help: 'How long the most overdue schedule has been due without running (scheduler lag; read on scrape).',
    },
    async (set) => {
      set((await read()).schedules?.oldestDueSeconds ?? 0);
    },
    logger,
  );
}
