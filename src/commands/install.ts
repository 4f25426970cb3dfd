import type pg from 'pg';
import { SidekickError } from '../errors.js';
import { migrate } from '../sql/migrate.js';
import { describeConnection } from '../pg/connection.js';
import { quoteIdent } from '../pg/quote.js';
import { installPgcron } from '../scheduler/compat.js';
import { connectDatabase, databaseFor, type DatabaseOptions } from './database.js';
import { expectedFailure, serverError } from './failure.js';
import type { CommandIO } from './io.js';

/** `sidekick install`: applies pg-sidekick's migrations (idempotent, concurrency-safe). */
export async function installCommand(options: DatabaseOptions & { pgcron?: boolean | string }, io: CommandIO): Promise<number> {
  const connection = databaseFor(options, io);
  const client = await connectDatabase(connection, io);
  try {
    const result = await migrate(client, { onApply: (m) => io.stdout.write(`applying ${m.name} …\n`) }).catch(async (error: unknown) => {
      throw await installFailure(client, error);
    });
    io.stdout.write(
      result.applied.length === 0
        ? `pg-sidekick schema is up to date on ${describeConnection(connection, io.env)} (migration ${result.current})\n`
        : `installed ${result.applied.length} migration(s) on ${describeConnection(connection, io.env)}; now at ${result.current}\n`,
    );
    if (options.pgcron) {
      // pgsidekick's pgcron.sql interface (scheduled_events), on the scheduler.
      const schema = typeof options.pgcron === 'string' ? options.pgcron : 'public';
      await installPgcron(client, schema);
      io.stdout.write(`pgcron compatibility installed: ${schema}.scheduled_events (run by the bridge's scheduler)\n`);
    }
    return 0;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * What a failed install says: for a missing privilege, which one and the two ways to grant it
 * (CREATE on the database, or a schema an administrator made for the role — install then needs
 * no database privilege); for the rest, the migration's own message. A bug keeps its stack.
 */
async function installFailure(client: pg.Client, error: unknown): Promise<unknown> {
  const server = serverError(error);
  if (server?.code === '42501') {
    const who = await client.query<{ role: string; db: string }>('SELECT current_user AS role, current_database() AS db').then(
      (r) => r.rows[0],
      () => undefined,
    );
    const role = quoteIdent(who?.role ?? '<role>');
    const db = quoteIdent(who?.db ?? '<database>');
    if (/permission denied for database/.test(server.message)) {
      return new SidekickError(
        'INSTALL_PRIVILEGE',
        `install: role ${role} may not create the schema sidekick in database ${db} (${server.message}). ` +
          `Fix: GRANT CREATE ON DATABASE ${db} TO ${role}; or have an administrator create the schema for it: CREATE SCHEMA sidekick AUTHORIZATION ${role};`,
        { cause: error },
      );
    }
    if (/schema sidekick/.test(server.message)) {
      return new SidekickError(
        'INSTALL_PRIVILEGE',
        `install: role ${role} may not create objects in the existing schema sidekick (${server.message}). ` +
          `Fix: run install as the schema's owner, or ALTER SCHEMA sidekick OWNER TO ${role};`,
        { cause: error },
      );
    }
  }
  const line = expectedFailure(error);
  // migrate() says plainly what is wrong (a newer schema, a renamed migration): a reason, not a bug.
  if (line !== undefined || (error instanceof Error && error.constructor === Error)) {
    return new SidekickError('INSTALL_FAILED', `install: ${line ?? (error as Error).message}`, { cause: error });
  }
  return error;
}
