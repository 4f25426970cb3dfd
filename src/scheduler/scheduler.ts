import pg from 'pg';
import type { Logger } from 'pino';
import { errorMessage, SidekickError } from '../errors.js';
import { createListener, type Listener } from '../pg/listener.js';
import { createWakeup } from '../wake.js';
import { createHeartbeat } from '../readiness.js';
import { RECONNECT_MAX_MS, reconnectDelay, settleBy, sleep } from '../wait.js';
import type { SchedulerConfig } from './config.js';
import { runBatch } from './executor.js';
import type { SchedulerMetrics } from './metrics.js';
import { recurrenceOf } from './recurrence.js';

/** The NOTIFY channel sidekick.schedules' trigger wakes schedulers on (a hint; they also poll). */
export const WAKE_CHANNEL = 'sidekick_schedules';

export interface Scheduler {
  /** Starts the loop in the background (a database that is not there yet is retried). */
  start(): Promise<void>;
  /** Stops claiming; waits up to `timeoutMs` for running batches, then closes the connections. Idempotent. */
  stop(timeoutMs?: number): Promise<void>;
  /** Look at the table now (e.g. after inserting a job due soon). */
  wake(): void;
  /** Schema found and the last look at the table succeeded. */
  readonly ready: boolean;
}

export interface SchedulerOptions {
  readonly connection: pg.ClientConfig;
  readonly config: Omit<SchedulerConfig, 'enabled'>;
  readonly logger: Logger;
  readonly metrics?: SchedulerMetrics;
  /** Reconnect backoff cap of the wake-up listener and the loop. Default RECONNECT_MAX_MS (3s). */
  readonly maxBackoffMs?: number;
}

class SchemaMissing extends SidekickError {
  constructor(what: string) {
    super('SCHEMA_MISSING', `${what} does not exist in this database: run \`sidekick install\` (as a role allowed to create the sidekick schema)`);
  }
}

const CLEANUP_EVERY_MS = 60_000;
// When every connection has been inside one batch this long (slow actions), a helper joins.
const SLOW_MS = 1_000;
const CLEANUP_CHUNK = 10_000;
const PLAN_CHUNK = 100;

/**
 * The scheduler loop. `concurrency` workers each: claim and run a batch of due occurrences; while
 * there was work, go again; otherwise ask the database how long until the nearest due time and sleep
 * that long (at most `pollInterval`), or until a NOTIFY on sidekick_schedules wakes them. Worker 0
 * also plans cron rows that plain SQL inserted (next_run_at NULL) and trims old run history.
 */
export function createScheduler(options: SchedulerOptions): Scheduler {
  const { config, metrics } = options;
  const logger = options.logger.child({ component: 'scheduler' });
  const maxBackoff = options.maxBackoffMs ?? RECONNECT_MAX_MS;
  const lifetime = new AbortController();
  const nonTransactional = new Set<string>();
  // A loop that hangs (a query stuck on a lock, a lost promise) must make /readyz fail.
  const heartbeat = createHeartbeat(Math.max(30_000, 3 * config.pollInterval));
  let pool: pg.Pool | undefined;
  let listener: Listener | undefined;
  let listening = false;
  let schemaOk = false;
  let healthy = false;
  const workers = new Set<Promise<void>>();
  // Extra connections for when every worker is held up by slow actions (at most maxHelpers).
  const maxHelpers = Math.max(2, config.concurrency * 2);
  const busySince = new Map<number, number>();
  let helpers = 0;
  let nextIndex = config.concurrency;
  let slowLogged = false;
  let supervisor: NodeJS.Timeout | undefined;
  let stopping: Promise<void> | undefined;
  let lastCleanup = 0;
  let lastPlan = 0;
  let planPending = true;
  // Clients inside a batch, to cut at a forced stop.
  const active = new Set<pg.PoolClient>();
  const guarded = new WeakSet<pg.PoolClient>();

  // Sleeping workers nap until their next due time, a wake-up (a NOTIFY, a reconnect) or the stop;
  // a wake-up while a worker asks for the next due time is not lost (src/wake.ts).
  const wakeup = createWakeup(lifetime.signal);
  function wake(): void {
    planPending = true;
    wakeup.wake();
  }

  async function checkSchema(p: pg.Pool): Promise<void> {
    const { rows } = await p.query<{ s: string | null; r: string | null }>(
      `SELECT to_regclass('sidekick.schedules')::text AS s, to_regclass('sidekick.schedule_runs')::text AS r`,
    );
    if (!rows[0]?.s) throw new SchemaMissing('the table sidekick.schedules');
    if (!rows[0]?.r) throw new SchemaMissing('the table sidekick.schedule_runs');
  }

  async function startListener(): Promise<void> {
    if (listening) return;
    listener ??= createListener({
      connection: options.connection,
      channels: [WAKE_CHANNEL],
      logger,
      applicationName: 'pg-sidekick scheduler',
      maxBackoffMs: maxBackoff,
      onNotification: () => wake(),
      // After a reconnect, whatever changed meanwhile is picked up by looking now.
      onEvent: (event) => {
        if (event.type === 'connected') wake();
      },
    });
    await listener.start();
    listening = true;
  }

  /** Cron rows inserted by plain SQL have no plan yet: compute their first occurrence. */
  async function planUnplanned(p: pg.Pool): Promise<void> {
    const { rows } = await p.query<{
      id: string;
      cron: string | null;
      every: null;
      run_at: null;
      time_zone: string;
      starts_at: Date | null;
      now: Date;
    }>(
      `SELECT id, cron, time_zone, starts_at, now() AS now FROM sidekick.schedules
        WHERE enabled AND next_run_at IS NULL ORDER BY id LIMIT ${PLAN_CHUNK}`,
    );
    for (const row of rows) {
      let next: Date | null = null;
      let problem: string | undefined;
      if (row.cron === null) {
        problem = 'no next run time (an interval or one-shot schedule always has one: was next_run_at cleared by hand?)';
      } else {
        try {
          const rec = recurrenceOf({ runAt: null, every: null, cron: row.cron, timeZone: row.time_zone }, null);
          const from = row.starts_at && row.starts_at > row.now ? new Date(row.starts_at.getTime() - 1) : row.now;
          next = rec.after(from);
          if (next === null) problem = 'the cron expression has no future occurrence';
        } catch (error) {
          problem = `invalid cron expression or time zone: ${errorMessage(error)}`;
        }
      }
      if (problem !== undefined) {
        logger.error({ id: row.id, cron: row.cron, err: problem }, 'schedule disabled');
        await p.query(
          `UPDATE sidekick.schedules SET enabled = false, last_outcome = 'failed', last_error = $2 WHERE id = $1 AND next_run_at IS NULL`,
          [row.id, problem],
        );
      } else {
        await p.query(`UPDATE sidekick.schedules SET due_at = $2, next_run_at = $2 WHERE id = $1 AND next_run_at IS NULL`, [row.id, next]);
      }
    }
    if (rows.length === PLAN_CHUNK) planPending = true;
  }

  async function cleanup(p: pg.Pool): Promise<void> {
    const { rowCount } = await p.query(
      `DELETE FROM sidekick.schedule_runs WHERE id IN (
         SELECT id FROM sidekick.schedule_runs WHERE started_at < now() - make_interval(secs => $1) LIMIT ${CLEANUP_CHUNK})`,
      [config.history.retention / 1000],
    );
    if (rowCount) logger.debug({ deleted: rowCount }, 'old run history deleted');
    // A full chunk: more to do, soon (but not in a tight loop).
    lastCleanup = rowCount === CLEANUP_CHUNK ? Date.now() - CLEANUP_EVERY_MS + 1_000 : Date.now();
  }

  /** Milliseconds until the nearest due occurrence, by the database's clock; capped at pollInterval. */
  async function nextWait(p: pg.Pool): Promise<number> {
    const { rows } = await p.query<{ ms: number | null }>(
      `SELECT (extract(epoch FROM min(next_run_at) - clock_timestamp()) * 1000)::float8 AS ms
         FROM sidekick.schedules WHERE enabled`,
    );
    const ms = rows[0]?.ms;
    if (ms === null || ms === undefined) return config.pollInterval;
    // +1 ms: the timer may fire a hair early, and now() must have reached the due time.
    return Math.min(config.pollInterval, Math.max(0, Math.ceil(ms) + 1));
  }

  function spawn(index: number, p: pg.Pool, helper: boolean): void {
    const w = worker(index, p, helper).finally(() => workers.delete(w));
    workers.add(w);
  }

  /**
   * A slow action holds up its worker (and the rest of its batch). So that it cannot hold up jobs
   * that come due meanwhile, a helper worker is added while every worker has been busy for SLOW_MS;
   * a helper leaves as soon as it finds nothing due.
   */
  function superviseSlowness(p: pg.Pool): void {
    if (lifetime.signal.aborted || !schemaOk) return;
    const now = Date.now();
    let stuck = 0;
    for (const since of busySince.values()) if (now - since > SLOW_MS) stuck++;
    if (stuck < config.concurrency + helpers) {
      if (stuck === 0) slowLogged = false;
      return;
    }
    if (helpers >= maxHelpers) return;
    if (!slowLogged) {
      slowLogged = true;
      logger.warn(
        { busyForMs: SLOW_MS, connections: config.concurrency + helpers },
        'every scheduler connection is busy with slow actions; adding helper connections for jobs that come due meanwhile',
      );
    }
    helpers++;
    spawn(nextIndex++, p, true);
  }

  async function worker(index: number, p: pg.Pool, helper = false): Promise<void> {
    try {
      await workerLoop(index, p, helper);
    } finally {
      busySince.delete(index);
      if (helper) helpers--;
    }
  }

  async function workerLoop(index: number, p: pg.Pool, helper: boolean): Promise<void> {
    let failures = 0;
    while (!lifetime.signal.aborted) {
      try {
        if (index === 0) {
          if (!schemaOk) {
            await checkSchema(p);
            schemaOk = true;
            logger.info({ concurrency: config.concurrency, pollInterval: config.pollInterval }, 'scheduler running');
            wake();
          }
          if (!listening) {
            await startListener().catch((error) => {
              // Polling still works; the listener is tried again on the next round.
              logger.warn({ err: errorMessage(error) }, 'scheduler wake-up LISTEN failed; polling only for now');
            });
          }
          if (planPending || Date.now() - lastPlan > config.pollInterval) {
            planPending = false;
            lastPlan = Date.now();
            await planUnplanned(p);
          }
          if (Date.now() - lastCleanup > CLEANUP_EVERY_MS) await cleanup(p);
        } else if (!schemaOk) {
          await wakeup.nap(config.pollInterval);
          continue;
        }
        const client = await p.connect();
        if (!guarded.has(client)) {
          // A connection that dies mid-batch emits 'error' on the checked-out client; without a
          // listener that would end the process. The failing query reports it instead.
          guarded.add(client);
          client.on('error', () => {});
        }
        active.add(client);
        busySince.set(index, Date.now());
        let result: Awaited<ReturnType<typeof runBatch>>;
        try {
          result = await runBatch(client, {
            logger,
            metrics,
            batchSize: config.batchSize,
            missedAfter: config.missedAfter,
            nonTransactional,
            signal: lifetime.signal,
          });
          active.delete(client);
          client.release();
        } catch (error) {
          // A broken connection must not go back to the pool.
          active.delete(client);
          client.release(error as Error);
          throw error;
        } finally {
          busySince.delete(index);
        }
        if (failures > 0) logger.info({ worker: index }, 'scheduler recovered');
        failures = 0;
        healthy = true;
        heartbeat.beat();
        if (result.claimed > 0) continue;
        if (helper) return;
        const seen = wakeup.count;
        const waitMs = await nextWait(p);
        await wakeup.nap(waitMs, seen);
      } catch (error) {
        if (lifetime.signal.aborted) return;
        failures++;
        healthy = false;
        metrics?.errors.inc();
        const retryInMs = reconnectDelay(failures, maxBackoff);
        if (failures === 1 || failures % 10 === 0) {
          logger.error(
            { worker: index, err: errorMessage(error), code: (error as { code?: string }).code, failures, retryInMs },
            'scheduler failed; retrying',
          );
        }
        if (helper) return;
        await sleep(retryInMs, lifetime.signal);
      }
    }
  }

  return {
    get ready() {
      return schemaOk && healthy && heartbeat.alive();
    },
    wake,
    async start() {
      if (pool) throw new Error('scheduler already started');
      pool = new pg.Pool({
        ...options.connection,
        max: config.concurrency + maxHelpers + 1,
        application_name: 'pg-sidekick scheduler',
        keepAlive: true,
      });
      // An idle client that dies is dropped by the pool; the next query opens a new one.
      pool.on('error', (error) => logger.debug({ err: errorMessage(error) }, 'idle scheduler connection closed'));
      const p = pool;
      for (let i = 0; i < config.concurrency; i++) spawn(i, p, false);
      supervisor = setInterval(() => superviseSlowness(p), 250);
      supervisor.unref();
    },
    stop(timeoutMs = 10_000) {
      stopping ??= (async () => {
        lifetime.abort();
        clearInterval(supervisor);
        await listener?.stop();
        const all = Promise.all([...workers]);
        const finished = (await settleBy(all, Date.now() + timeoutMs)).state !== 'late';
        if (!finished) {
          // Closing the connections rolls the running batches back: their occurrences stay due.
          logger.warn({ timeoutMs }, 'scheduled actions still running at shutdown; rolling them back (they stay due)');
          for (const c of active) (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
        }
        await pool?.end().catch(() => {});
        if (!finished) await all.catch(() => {});
      })();
      return stopping;
    },
  };
}
