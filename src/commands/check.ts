import pg from 'pg';
import { errorMessage } from '../errors.js';
import { redactLine } from '../logger.js';
import { databaseConnection, describeConnection } from '../pg/connection.js';
import { bounded } from '../wait.js';
import type { CommandIO } from './io.js';
import { loadConfigFor, loggerFor } from './run.js';

const TIMEOUT_MS = 10_000;

/**
 * `sidekick check`: validates the config (a broken one throws ConfigError → exit 1 with the
 * reason), then tries the database and each sink, one line each; exit 0 only if all answer.
 */
export async function checkCommand(options: { config: string }, io: CommandIO): Promise<number> {
  const config = loadConfigFor(options.config, io);
  const logger = loggerFor(config, io).child({ command: 'check' });
  // A sink's detail or error may name its URL: printed like a log line, without secrets.
  const out = (line: string) => io.stdout.write(`${redactLine(line)}\n`);
  out(`ok    config ${config.file}: ${config.sinks.length} sink(s), ${config.routes.length} route(s), ${config.listen.length} channel(s)`);
  let failures = 0;

  const resolved = databaseConnection(config.database, io.env);
  for (const warning of resolved.warnings) out(`warn  database: ${warning}`);
  const connection = resolved.config;
  const client = new pg.Client({ ...connection, connectionTimeoutMillis: TIMEOUT_MS });
  client.on('error', () => {});
  try {
    await client.connect();
    const { rows } = await client.query<{ v: string; u: string }>("SELECT current_setting('server_version') AS v, current_user AS u");
    out(`ok    database ${describeConnection(connection, io.env)} (PostgreSQL ${rows[0]?.v}, as ${rows[0]?.u})`);
  } catch (error) {
    failures++;
    out(`FAIL  database ${describeConnection(connection, io.env)}: ${errorMessage(error)}`);
  } finally {
    await client.end().catch(() => {});
  }

  for (const entry of config.sinks) {
    const sink = entry.definition.create(entry.options as never, { name: entry.name, logger, database: connection });
    const controller = new AbortController();
    try {
      const detail = await bounded(
        (async () => {
          if (sink.check) return sink.check(controller.signal);
          await sink.start(controller.signal);
          return undefined;
        })(),
        { ms: TIMEOUT_MS, keepAlive: true, timedOut: () => new Error(`sink ${entry.name}: no answer within ${TIMEOUT_MS / 1000}s`) },
      );
      out(`ok    sink ${entry.name} (${entry.type})${detail ? `: ${detail}` : ''}`);
    } catch (error) {
      failures++;
      out(`FAIL  sink ${entry.name} (${entry.type}): ${errorMessage(error)}`);
    } finally {
      controller.abort();
      await sink.stop().catch(() => {});
    }
  }
  return failures === 0 ? 0 : 1;
}
