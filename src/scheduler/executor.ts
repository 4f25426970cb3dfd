import pg from 'pg';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';
import type { SchedulerMetrics } from './metrics.js';
import {
  nextAfterRun,
  planOccurrence,
  recurrenceOf,
  type MissedPolicy,
  type OverlapPolicy,
  type PgInterval,
  type Recurrence,
  type Skipped,
} from './recurrence.js';

/**
 * One batch of due work, in one transaction:
 *
 *   BEGIN → claim due rows (FOR UPDATE SKIP LOCKED, nearest first) → for each, under a savepoint:
 *   the action + its history row → one bookkeeping statement (advance, delete, history) → COMMIT
 *
 * An action commits together with the record of having run and with the schedule's advance, so a
 * crash, a lost connection or a second bridge can never make an occurrence run twice: either all of
 * it committed, or none of it did and it is still due. (schedule_id, due_at) is unique in the
 * history as a second guard: recording an occurrence twice fails and rolls that run back.
 *
 * Statements that refuse to run in a transaction block (VACUUM, CREATE INDEX CONCURRENTLY …) are
 * noticed by their error (SQLSTATE 25001) and run alone after the commit instead: claimed and
 * recorded as "running" first, so they too run at most once.
 */

const { escapeLiteral } = pg as unknown as { escapeLiteral: (s: string) => string };

export interface ExecutorContext {
  readonly logger: Logger;
  readonly metrics?: SchedulerMetrics | undefined;
  readonly batchSize: number;
  /** An occurrence later than this (ms) counts as missed. */
  readonly missedAfter: number;
  /** Stop starting new runs in a batch after this long (ms); the rest is released for others. */
  readonly batchBudgetMs?: number;
  /**
   * Ids of schedules whose SQL must run alone, outside the batch's transaction: it refused a
   * transaction block (VACUUM …), or a batch broke while it ran (it ended the transaction, or
   * terminated its own connection). Learnt as they happen; run at most once from then on.
   */
  readonly nonTransactional: Set<string>;
  readonly signal?: AbortSignal;
}

export interface BatchResult {
  readonly claimed: number;
  readonly handled: number;
}

interface Row {
  id: string;
  name: string | null;
  history_name: string | null;
  run_at: Date | null;
  every: PgInterval | null;
  cron: string | null;
  time_zone: string;
  sql: string | null;
  channel: string | null;
  payload: unknown;
  key: string | null;
  single_statement: boolean;
  missed: MissedPolicy;
  missed_cap: number;
  overlap: OverlapPolicy;
  timeout_ms: number | null;
  max_attempts: number;
  retry_delay_ms: number;
  origin: string;
  parent_id: string | null;
  due_at: Date;
  attempt: number;
  db_now: Date;
}

const CLAIM = `
SELECT s.id, s.name, coalesce(s.name, (SELECT p.name FROM sidekick.schedules p WHERE p.id = s.parent_id)) AS history_name,
       s.run_at, s.every, s.cron, s.time_zone, s.sql, s.channel, s.payload, s.key, s.single_statement,
       s.missed, s.missed_cap, s.overlap,
       (extract(epoch FROM s.statement_timeout) * 1000)::float8 AS timeout_ms,
       s.max_attempts, (extract(epoch FROM s.retry_delay) * 1000)::float8 AS retry_delay_ms,
       s.origin, s.parent_id, coalesce(s.due_at, s.next_run_at) AS due_at, s.attempt, now() AS db_now
  FROM sidekick.schedules s
 WHERE s.enabled AND s.next_run_at <= now()
 ORDER BY s.next_run_at, s.id
 LIMIT $1
   FOR UPDATE OF s SKIP LOCKED`;

const BOOKKEEPING = `
WITH upd AS (
  UPDATE sidekick.schedules s
     SET due_at = u.due_at, next_run_at = u.next_run_at, attempt = u.attempt, enabled = u.enabled,
         last_run_at = coalesce(u.last_run_at, s.last_run_at),
         last_outcome = coalesce(u.last_outcome, s.last_outcome),
         last_error = CASE WHEN u.last_outcome IS NULL THEN s.last_error ELSE u.last_error END
    FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::int[], $5::boolean[], $6::timestamptz[], $7::text[], $8::text[])
         AS u(id, due_at, next_run_at, attempt, enabled, last_run_at, last_outcome, last_error)
   WHERE s.id = u.id
), del AS (
  DELETE FROM sidekick.schedules WHERE id = ANY($9::bigint[])
), runs AS (
  INSERT INTO sidekick.schedule_runs (schedule_id, name, due_at, started_at, finished_at, outcome, attempts, error)
  SELECT * FROM unnest($10::bigint[], $11::text[], $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::text[], $16::int[], $17::text[])
  ON CONFLICT (schedule_id, due_at) DO UPDATE
     SET started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome,
         attempts = EXCLUDED.attempts, error = EXCLUDED.error
   WHERE sidekick.schedule_runs.outcome = 'failed'
)
SELECT 1`;

interface Update {
  id: string;
  due: Date | null;
  next: Date | null;
  attempt: number;
  enabled: boolean;
  lastRunAt: Date | null;
  lastOutcome: string | null;
  lastError: string | null;
}
interface RunRecord {
  scheduleId: string;
  name: string | null;
  due: Date;
  started: Date;
  finished: Date | null;
  outcome: 'succeeded' | 'failed' | 'skipped' | 'running';
  attempts: number;
  error: string | null;
}
interface Deferred {
  row: Row;
  due: Date;
  runKey: string;
}

interface Outcome {
  readonly ok: boolean;
  readonly started: Date;
  readonly finished: Date;
  readonly error?: string;
  readonly code?: string;
  /** The occurrence was already recorded as run: nothing ran now. */
  readonly duplicate?: boolean;
  /** Must run outside a transaction block (SQLSTATE 25001): deferred to after the commit. */
  readonly deferred?: boolean;
}

const lit = (v: string | null | undefined) => (v === null || v === undefined ? 'NULL' : escapeLiteral(v));
const tsLit = (d: Date) => `${escapeLiteral(d.toISOString())}::timestamptz`;

function truncate(text: string, max = 300): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** The SQL an event action runs: publish to the channel through the outbox (durable, in this transaction). */
export function actionSql(row: Pick<Row, 'sql' | 'channel' | 'payload' | 'key' | 'name' | 'id'>, due: Date): string {
  if (row.sql !== null) return row.sql;
  const payload = row.payload ?? { schedule: row.name ?? row.id, due_at: due.toISOString() };
  return `SELECT sidekick.publish(${lit(row.channel)}, ${lit(JSON.stringify(payload))}::jsonb, ${lit(row.key)})`;
}

function describeSkip(reason: string, s: Skipped): string {
  const count = `${s.count}${s.atLeast ? '+' : ''}`;
  return s.count === 1
    ? `${reason}: the occurrence due ${s.from.toISOString()} was not run`
    : `${reason}: ${count} occurrences due ${s.from.toISOString()} … ${s.to.toISOString()} were not run`;
}

function pgCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Runs one batch on `client` (which must not be in a transaction). */
export async function runBatch(client: pg.ClientBase, ctx: ExecutorContext): Promise<BatchResult> {
  const { logger } = ctx;
  const budget = ctx.batchBudgetMs ?? 250;
  await client.query(`BEGIN; SELECT set_config('sidekick.scheduler', 'on', true)`);
  const updates: Update[] = [];
  const deletes: string[] = [];
  const runs: RunRecord[] = [];
  const deferred: Deferred[] = [];
  let claimed = 0;
  let handled = 0;
  let executing: Row | undefined;
  try {
    const { rows } = await client.query<Row>(CLAIM, [ctx.batchSize]);
    claimed = rows.length;
    if (rows.length === 0) {
      await client.query('COMMIT');
      return { claimed: 0, handled: 0 };
    }
    const batchStart = Date.now();
    for (const row of rows) {
      // Rows not reached are released by the commit, for this or another worker to take.
      if (handled > 0 && (Date.now() - batchStart > budget || ctx.signal?.aborted)) break;
      handled++;
      executing = row;
      await handleRow(client, row, ctx, { updates, deletes, runs, deferred });
      executing = undefined;
    }
    await client.query(BOOKKEEPING, bookkeepingParams(updates, deletes, runs));
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    if (executing) {
      // The batch broke while this action ran (it ended the transaction, or its connection): it is
      // rolled back and still due. Next time it runs alone, so it cannot take a batch down again.
      ctx.nonTransactional.add(executing.id);
      logger.error(
        { schedule: executing.history_name ?? executing.id, err: errorMessage(error), sql: truncate(executing.sql ?? '') },
        'the scheduler transaction broke while this action ran; it will run on its own next time',
      );
    }
    throw error;
  }
  for (const d of deferred) await runDeferred(client, d, ctx);
  // An action's SET ROLE / SET search_path … (not LOCAL) would outlive its transaction: start clean.
  if (handled > 0) await client.query('DISCARD ALL');
  if (logger.isLevelEnabled('debug')) logger.debug({ claimed, handled }, 'scheduler batch committed');
  return { claimed, handled };
}

async function handleRow(
  client: pg.ClientBase,
  row: Row,
  ctx: ExecutorContext,
  out: { updates: Update[]; deletes: string[]; runs: RunRecord[]; deferred: Deferred[] },
): Promise<void> {
  const { logger, metrics } = ctx;
  const runKey = row.parent_id ?? row.id;
  const oneShot = row.run_at !== null;
  let rec: Recurrence;
  try {
    rec = recurrenceOf({ runAt: row.run_at, every: row.every, cron: row.cron, timeZone: row.time_zone }, row.due_at);
  } catch (error) {
    // A schedule whose occurrences cannot be computed is switched off, with the reason, not retried forever.
    const message = `cannot compute the occurrences of this schedule: ${errorMessage(error)}`;
    logger.error({ schedule: row.name ?? row.id, err: message }, 'schedule disabled');
    out.updates.push({ id: row.id, due: null, next: null, attempt: 0, enabled: false, lastRunAt: null, lastOutcome: 'failed', lastError: message });
    metrics?.runs.inc({ outcome: 'failed' });
    return;
  }
  const plan = planOccurrence({
    recurrence: rec,
    due: row.due_at,
    now: row.db_now,
    missed: row.missed,
    cap: row.missed_cap,
    graceMs: ctx.missedAfter,
    retry: row.attempt > 0,
    overlap: row.overlap,
  });
  if (plan.skipped) {
    const note = describeSkip(`missed-run policy "${row.missed}"`, plan.skipped);
    out.runs.push({
      scheduleId: runKey,
      name: row.history_name,
      due: plan.skipped.from,
      started: row.db_now,
      finished: row.db_now,
      outcome: 'skipped',
      attempts: 0,
      error: note,
    });
    metrics?.runs.inc({ outcome: 'skipped' }, plan.skipped.count);
    logger.info({ schedule: row.history_name ?? row.id, skipped: plan.skipped.count }, note);
  }
  if (plan.run === null) {
    const next = rec.after(plan.resumeAfter as Date);
    if (next === null && oneShot) out.deletes.push(row.id);
    else
      out.updates.push({ id: row.id, due: next, next, attempt: 0, enabled: next !== null, lastRunAt: null, lastOutcome: 'skipped', lastError: null });
    return;
  }
  const due = plan.run;
  const attempts = row.attempt + 1;
  const outcome =
    ctx.nonTransactional.has(row.id) || (row.sql !== null && controlsTransactions(row.sql))
      ? { ok: true, deferred: true, started: row.db_now, finished: row.db_now }
      : await execute(client, row, due, runKey, attempts, ctx);
  if (outcome.deferred) {
    ctx.nonTransactional.add(row.id);
    out.deferred.push({ row, due, runKey });
    out.runs.push({
      scheduleId: runKey,
      name: row.history_name,
      due,
      started: row.db_now,
      finished: null,
      outcome: 'running',
      attempts,
      error: null,
    });
  } else if (outcome.duplicate) {
    metrics?.runs.inc({ outcome: 'duplicate' });
    logger.warn({ schedule: row.history_name ?? row.id, due: due.toISOString() }, 'this occurrence is already recorded as run; not running it again');
  } else {
    metrics?.runs.inc({ outcome: outcome.ok ? 'succeeded' : 'failed' });
    metrics?.lag.observe(Math.max(0, outcome.started.getTime() - due.getTime()) / 1000);
  }
  if (!outcome.ok) {
    const retry = attempts < row.max_attempts;
    logger.warn(
      {
        schedule: row.history_name ?? row.id,
        id: row.id,
        due: due.toISOString(),
        attempt: attempts,
        maxAttempts: row.max_attempts,
        code: outcome.code,
        err: outcome.error,
        sql: truncate(row.sql ?? actionSql(row, due)),
        ...(retry ? { retryInMs: row.retry_delay_ms } : {}),
      },
      retry ? 'scheduled action failed; will retry' : 'scheduled action failed',
    );
    out.runs.push({
      scheduleId: runKey,
      name: row.history_name,
      due,
      started: outcome.started,
      finished: outcome.finished,
      outcome: 'failed',
      attempts,
      error: outcome.error ?? 'failed',
    });
    if (retry) {
      const next = new Date(outcome.finished.getTime() + row.retry_delay_ms);
      out.updates.push({
        id: row.id,
        due,
        next,
        attempt: attempts,
        enabled: true,
        lastRunAt: outcome.started,
        lastOutcome: 'failed',
        lastError: outcome.error ?? null,
      });
      return;
    }
  } else if (logger.isLevelEnabled('debug') && !outcome.deferred) {
    logger.debug(
      { schedule: row.history_name ?? row.id, due: due.toISOString(), lagMs: outcome.started.getTime() - due.getTime() },
      'scheduled action ran',
    );
  }
  const { next, skipped } = nextAfterRun({ recurrence: rec, ran: due, started: outcome.started, finished: outcome.finished, overlap: row.overlap });
  if (skipped) {
    const note = describeSkip('overlap policy "skip" (the previous run was still going)', skipped);
    out.runs.push({
      scheduleId: runKey,
      name: row.history_name,
      due: skipped.from,
      started: outcome.finished,
      finished: outcome.finished,
      outcome: 'skipped',
      attempts: 0,
      error: note,
    });
    metrics?.runs.inc({ outcome: 'skipped' }, skipped.count);
  }
  const lastOutcome = outcome.deferred ? 'running' : outcome.ok ? 'succeeded' : 'failed';
  if (next === null && oneShot) {
    out.deletes.push(row.id);
  } else {
    out.updates.push({
      id: row.id,
      due: next,
      next,
      attempt: 0,
      enabled: next !== null,
      lastRunAt: outcome.started,
      lastOutcome,
      lastError: outcome.ok ? null : (outcome.error ?? null),
    });
  }
}

const SAVEPOINT = 'sk_run';

// A statement that begins or ends transactions would end the batch's transaction. Matched at the
// start of the text or after a semicolon; a false match only means the action runs on its own.
const TRANSACTION_CONTROL = /(?:^|;)\s*(?:commit|rollback|abort|end|begin|start\s+transaction|savepoint|release|prepare\s+transaction)\b/i;
export function controlsTransactions(sql: string): boolean {
  return TRANSACTION_CONTROL.test(sql);
}

/** Runs one occurrence under a savepoint, together with its history row. */
async function execute(client: pg.ClientBase, row: Row, due: Date, runKey: string, attempts: number, ctx: ExecutorContext): Promise<Outcome> {
  const sql = actionSql(row, due);
  const setTimeout = row.timeout_ms !== null ? `SET LOCAL statement_timeout = ${Math.max(1, Math.round(row.timeout_ms))};\n` : '';
  const resetTimeout = row.timeout_ms !== null ? 'SET LOCAL statement_timeout TO DEFAULT;\n' : '';
  // A retry replaces the failed attempt's row; a succeeded row is never replaced: the insert fails instead.
  const record = (started: string) =>
    `${attempts > 1 ? `DELETE FROM sidekick.schedule_runs WHERE schedule_id = ${runKey} AND due_at = ${tsLit(due)} AND outcome = 'failed';\n` : ''}` +
    `INSERT INTO sidekick.schedule_runs (schedule_id, name, due_at, started_at, finished_at, outcome, attempts) ` +
    `VALUES (${runKey}, ${lit(row.history_name)}, ${tsLit(due)}, ${started}, clock_timestamp(), 'succeeded', ${attempts})`;
  let started: Date | undefined;
  try {
    if (row.single_statement) {
      // Extended protocol: PostgreSQL refuses a second statement in the string.
      const r1 = await client.query<{ started: Date }>(`SAVEPOINT ${SAVEPOINT};\n${setTimeout}SELECT clock_timestamp() AS started`);
      started = lastRows(r1)[0]?.started as Date;
      await client.query({ text: sql, queryMode: 'extended' } as pg.QueryConfig);
      const r3 = await client.query<{ finished: Date }>(
        `${resetTimeout}${record(tsLit(started))} RETURNING finished_at AS finished;\nRELEASE SAVEPOINT ${SAVEPOINT}`,
      );
      return { ok: true, started, finished: rowsOf(r3, -2)[0]?.finished as Date };
    }
    // One round trip: the SQL verbatim (pglater ran it with PQexec, so several statements are fine),
    // on its own lines so a trailing "-- comment" cannot swallow what follows.
    const result = await client.query<{ started: Date; finished: Date }>(
      `SAVEPOINT ${SAVEPOINT};\n${setTimeout}${sql}\n;\n${resetTimeout}${record('statement_timestamp()')}` +
        ` RETURNING started_at AS started, finished_at AS finished;\nRELEASE SAVEPOINT ${SAVEPOINT}`,
    );
    const times = rowsOf(result, -2)[0] as { started: Date; finished: Date };
    return { ok: true, started: times.started, finished: times.finished };
  } catch (error) {
    const code = pgCode(error);
    let finished: Date;
    try {
      const r = await client.query<{ finished: Date }>(
        `ROLLBACK TO SAVEPOINT ${SAVEPOINT}; RELEASE SAVEPOINT ${SAVEPOINT}; SELECT clock_timestamp() AS finished`,
      );
      finished = lastRows(r)[0]?.finished as Date;
    } catch (rollbackError) {
      if (pgCode(rollbackError) === '25P01' || pgCode(rollbackError) === '3B001') {
        ctx.logger.error(
          { schedule: row.history_name ?? row.id, sql: truncate(sql) },
          "a scheduled action ended the scheduler's transaction (COMMIT or ROLLBACK in a scheduled action is not supported)",
        );
      }
      throw rollbackError;
    }
    const startedAt = started ?? finished;
    if (code === '23505' && (error as { constraint?: string }).constraint === 'schedule_runs_occurrence') {
      return { ok: true, duplicate: true, started: startedAt, finished };
    }
    if (code === '25001') return { ok: true, deferred: true, started: startedAt, finished };
    let message = errorMessage(error);
    if (code === '42883' && row.channel !== null && /sidekick\.publish/.test(message)) {
      message = `${message} (sidekick.publish is missing: upgrade the schema with \`sidekick install\`)`;
    }
    return { ok: false, started: startedAt, finished, error: message, ...(code ? { code } : {}) };
  }
}

/** Statements that cannot run in a transaction block: alone, after the claim committed (at most once). */
async function runDeferred(client: pg.ClientBase, d: Deferred, ctx: ExecutorContext): Promise<void> {
  const { row, due, runKey } = d;
  const sql = actionSql(row, due);
  let error: unknown;
  const started = Date.now();
  try {
    if (row.timeout_ms !== null) await client.query(`SET statement_timeout = ${Math.max(1, Math.round(row.timeout_ms))}`);
    await client.query(sql);
  } catch (e) {
    error = e;
  } finally {
    if (row.timeout_ms !== null) await client.query('RESET statement_timeout').catch(() => {});
  }
  ctx.metrics?.runs.inc({ outcome: error ? 'failed' : 'succeeded' });
  ctx.metrics?.lag.observe(Math.max(0, started - due.getTime()) / 1000);
  if (error) {
    ctx.logger.warn(
      { schedule: row.history_name ?? row.id, due: due.toISOString(), code: pgCode(error), err: errorMessage(error), sql: truncate(sql) },
      'scheduled action failed (run outside a transaction block: not retried)',
    );
  }
  const message = error ? errorMessage(error) : null;
  await client.query(
    `UPDATE sidekick.schedule_runs SET outcome = $3, finished_at = clock_timestamp(), error = $4 WHERE schedule_id = $1 AND due_at = $2`,
    [runKey, due, error ? 'failed' : 'succeeded', message],
  );
  await client.query(`UPDATE sidekick.schedules SET last_outcome = $2, last_error = $3 WHERE id = $1 AND last_outcome = 'running'`, [
    row.id,
    error ? 'failed' : 'succeeded',
    message,
  ]);
}

function lastRows<T extends pg.QueryResultRow>(result: pg.QueryResult<T> | pg.QueryResult<T>[]): T[] {
  return rowsOf(result, -1);
}

/** The rows of one statement of a multi-statement query (`at` counts from the end when negative). */
function rowsOf<T extends pg.QueryResultRow>(result: pg.QueryResult<T> | pg.QueryResult<T>[], at: number): T[] {
  return Array.isArray(result) ? (result.at(at) as pg.QueryResult<T>).rows : result.rows;
}

function bookkeepingParams(updates: Update[], deletes: string[], runs: RunRecord[]): unknown[] {
  return [
    updates.map((u) => u.id),
    updates.map((u) => u.due),
    updates.map((u) => u.next),
    updates.map((u) => u.attempt),
    updates.map((u) => u.enabled),
    updates.map((u) => u.lastRunAt),
    updates.map((u) => u.lastOutcome),
    updates.map((u) => u.lastError),
    deletes,
    runs.map((r) => r.scheduleId),
    runs.map((r) => r.name),
    runs.map((r) => r.due),
    runs.map((r) => r.started),
    runs.map((r) => r.finished),
    runs.map((r) => r.outcome),
    runs.map((r) => r.attempts),
    runs.map((r) => r.error),
  ];
}
