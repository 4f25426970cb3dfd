import pg from 'pg';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.js';

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
