import type pg from 'pg';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import type { SinkDefinition } from '../../src/sink.js';
import { migrate } from '../../src/sql/migrate.js';
import type { TestDatabase } from './db.js';

/** A bridge in this process on `url`, from a config document (sinks may use the test-only types). */
export async function startBridge(
  url: string,
  document: Record<string, unknown>,
  extraSinks: readonly SinkDefinition[] = [],
  /** Where its log lines go (at info level), for tests that read them. */
  logTo?: { write(line: string): unknown },
): Promise<Bridge> {
  const config = parseConfig({ database: url, ...document }, { file: 'test', env: {}, sinks: [...sinkDefinitions, ...extraSinks] });
  const logger = logTo
    ? createLogger({ level: 'info', destination: logTo as NodeJS.WritableStream })
    : createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const bridge = createBridge({ config, logger });
  await bridge.start();
  return bridge;
}

/** Installs the sidekick schema on a test database. */
export async function install(client: pg.Client): Promise<void> {
  await migrate(client);
}

/** Creates the capture triggers for config-style entries (as `sidekick triggers --apply` would). */
export async function capture(client: pg.Client, entries: readonly Record<string, unknown>[]): Promise<void> {
  const { captureSpecsFromConfig } = await import('../../src/capture/spec.js');
  const { resolveCaptures } = await import('../../src/capture/catalog.js');
  const { captureStatements } = await import('../../src/capture/sql.js');
  const specs = captureSpecsFromConfig(entries.map((e) => ({ columns: '*', mode: 'statement', ...e })) as never);
  await client.query(captureStatements(await resolveCaptures(client, specs)));
}

/** A client on `db` with the sidekick schema installed, `tables` (DDL) run and capture triggers for `entries`. */
export async function capturedClient(db: TestDatabase, tables: string, entries: readonly Record<string, unknown>[]): Promise<pg.Client> {
  const client = await db.client();
  await install(client);
  await client.query(tables);
  await capture(client, entries);
  return client;
}
