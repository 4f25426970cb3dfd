import type pg from 'pg';
import { connectionConfig } from '../pg/connection.js';
import type { CommandIO } from './io.js';
import { loadConfigFor } from './run.js';

/** Options of every command that only needs the database: --database, else the config's, else env. */
export interface DatabaseOptions {
  readonly database?: string;
  readonly config?: string;
}

export function databaseFor(options: DatabaseOptions, io: Pick<CommandIO, 'env'>): pg.ClientConfig {
  if (options.database) return connectionConfig(options.database, io.env);
  if (options.config) return connectionConfig(loadConfigFor(options.config, io).database, io.env);
  return connectionConfig(undefined, io.env);
}
