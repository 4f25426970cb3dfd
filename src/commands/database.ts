import pg from 'pg';
import { SidekickError } from '../errors.js';
import { databaseConnection, describeConnection } from '../pg/connection.js';
import { hintFor, serverError } from './failure.js';
import type { CommandIO } from './io.js';
import { loadConfigFor } from './run.js';

/** Options of every command that only needs the database: --database, else the config's, else env. */
export interface DatabaseOptions {
  readonly database?: string;
  readonly config?: string;
}

export function databaseFor(options: DatabaseOptions, io: Pick<CommandIO, 'env' | 'stderr'>): pg.ClientConfig {
  const database = options.database || (options.config ? loadConfigFor(options.config, io).database : undefined);
  const resolved = databaseConnection(database, io.env);
  for (const warning of resolved.warnings) io.stderr.write(`warning: ${warning}\n`);
  return resolved.config;
}

/**
 * A connected client for a one-shot command. A database that cannot be reached or refuses the
 * login is an expected failure: one line naming the database (never its password) and what to
 * check, not a stack trace.
 */
export async function connectDatabase(connection: pg.ClientConfig, io: Pick<CommandIO, 'env'>, extra: pg.ClientConfig = {}): Promise<pg.Client> {
  const client = new pg.Client({ ...connection, ...extra });
  // A connection lost mid-command fails the query in progress; unhandled, the 'error' event would
  // end the process with a stack instead.
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (error) {
    await client.end().catch(() => {});
    const server = serverError(error);
    const hint = server ? hintFor(server.code, server.message) : 'is it running, and are --database, DATABASE_URL or the PG* variables right?';
    const reason = (error as Error)?.message || String(error);
    throw new SidekickError(
      'DATABASE_UNREACHABLE',
      `cannot connect to ${describeConnection(connection, io.env)}: ${reason}${hint ? ` (${hint})` : ''}`,
      { cause: error },
    );
  }
  return client;
}
