import pg from 'pg';
import { migrate } from '../sql/migrate.js';
import { describeConnection } from '../pg/connection.js';
import { installPgcron } from '../scheduler/compat.js';
import { databaseFor, type DatabaseOptions } from './database.js';
import type { CommandIO } from './io.js';

/** `sidekick install`: applies pg-sidekick's migrations (idempotent, concurrency-safe). */
export async function installCommand(options: DatabaseOptions & { pgcron?: boolean | string }, io: CommandIO): Promise<number> {
  const connection = databaseFor(options, io);
  const client = new pg.Client(connection);
  await client.connect();
  try {
    const result = await migrate(client, { onApply: (m) => io.stdout.write(`applying ${m.name} …\n`) });
    io.stdout.write(result.applied.length === 0
      ? `pg-sidekick schema is up to date on ${describeConnection(connection, io.env)} (migration ${result.current})\n`
      : `installed ${result.applied.length} migration(s) on ${describeConnection(connection, io.env)}; now at ${result.current}\n`);
    if (options.pgcron) {
      // pgsidekick's pgcron.sql interface (scheduled_events), on the scheduler.
      const schema = typeof options.pgcron === 'string' ? options.pgcron : 'public';
      await installPgcron(client, schema);
      io.stdout.write(`pgcron compatibility installed: ${schema}.scheduled_events (run by the bridge's scheduler)\n`);
    }
    return 0;
  } finally {
    await client.end();
  }
}
