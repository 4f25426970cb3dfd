import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import type { SchedulerConfig } from '../../src/scheduler/config.js';
import { createSchedulerMetrics } from '../../src/scheduler/metrics.js';
import { createScheduler, type Scheduler } from '../../src/scheduler/scheduler.js';
import { migrate } from '../../src/sql/migrate.js';
import { quietLogger } from '../contract/sink-contract.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import type pg from 'pg';

/** A fresh database with the sidekick schema installed, and a client on it. */
export async function installedDatabase(): Promise<{ db: TestDatabase; c: pg.Client }> {
  const db = await createTestDatabase('sched');
  const c = await db.client();
  await migrate(c);
  return { db, c };
}

export const testSchedulerConfig = (over: Partial<SchedulerConfig> = {}): Omit<SchedulerConfig, 'enabled'> => ({
  pollInterval: 250,
  concurrency: 2,
  batchSize: 50,
  missedAfter: 60_000,
  history: { retention: 7 * 86_400_000 },
  ...over,
});

/** Things to stop after each test, in reverse order. */
export function createStack() {
  const stoppers: (() => Promise<void>)[] = [];
  return {
    scheduler(url: string, over: Partial<SchedulerConfig> = {}): Scheduler {
      const s = createScheduler({
        connection: { connectionString: url },
        config: testSchedulerConfig(over),
        logger: quietLogger,
        metrics: createSchedulerMetrics(),
      });
      stoppers.push(() => s.stop(5_000));
      return s;
    },
    bridge(url: string, doc: Record<string, unknown>, extra: { stdout?: NodeJS.WritableStream } = {}): Bridge {
      const config = parseConfig({ ...doc, database: url }, { sinks: sinkDefinitions, file: 'test' });
      const b = createBridge({ config, logger: quietLogger, ...extra });
      stoppers.push(() => b.stop());
      return b;
    },
    defer(stop: () => Promise<void>) {
      stoppers.push(stop);
    },
    async stopAll() {
      for (const stop of stoppers.splice(0).reverse()) await stop().catch(() => {});
    },
  };
}

export async function count(c: pg.Client, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM (${sql}) AS q`, params);
  return rows[0]?.n ?? 0;
}
