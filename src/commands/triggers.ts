import { readFileSync } from 'node:fs';
import { resolveCaptures, type ResolvedCapture } from '../capture/catalog.js';
import { captureSpecsFromConfig, parseSkorTriggers, type CaptureSpec } from '../capture/spec.js';
import { captureStatements, dropStatements, script } from '../capture/sql.js';
import { ConfigError } from '../errors.js';
import { describeConnection } from '../pg/connection.js';
import { migrate } from '../sql/migrate.js';
import { connectDatabase, databaseFor } from './database.js';
import type { CommandIO } from './io.js';
import { loadConfigFor } from './run.js';

export interface TriggersOptions {
  /** A skor triggers.json; without it the config's `capture:` section is used. */
  readonly file?: string;
  readonly config: string;
  readonly database?: string;
  readonly apply?: boolean;
  readonly drop?: boolean;
}

function readSpecs(options: TriggersOptions, io: CommandIO): { specs: CaptureSpec[]; from: string; database?: string } {
  if (options.file) {
    let document: unknown;
    try {
      document = JSON.parse(readFileSync(options.file, 'utf8'));
    } catch (error) {
      throw new ConfigError(`cannot read ${options.file}: ${(error as Error).message}`, { cause: error });
    }
    return { specs: parseSkorTriggers(document, options.file), from: options.file };
  }
  const config = loadConfigFor(options.config, io);
  if (config.capture.length === 0) {
    throw new ConfigError(`${options.config} has no capture: entries (or pass a skor triggers.json file)`);
  }
  return {
    specs: captureSpecsFromConfig(config.capture, options.config),
    from: options.config,
    ...(config.database ? { database: config.database } : {}),
  };
}

function summary(c: ResolvedCapture): string {
  const ops = Object.keys(c.operations).join(', ');
  const key = c.key.length > 0 ? `key ${c.key.join(', ')}` : 'no key';
  return `${c.schema}.${c.table}: ${ops} (${c.mode}-level, ${key})`;
}

/**
 * `sidekick triggers [triggers.json]`: prints the capture triggers as SQL to review; `--apply` runs
 * them in one transaction (installing the schema first if needed); `--drop` removes them instead.
 */
export async function triggersCommand(options: TriggersOptions, io: CommandIO): Promise<number> {
  const { specs, from, database } = readSpecs(options, io);
  const connection = databaseFor({ database: options.database ?? database }, io);
  const client = await connectDatabase(connection, io);
  try {
    let statements: string;
    let title: string;
    let done: string[];
    if (options.drop) {
      // Tables that are gone need no dropping; fold names the way creation did.
      const targets: { schema: string; table: string; origin: string }[] = [];
      for (const spec of specs) {
        try {
          const [found] = await resolveCaptures(client, [{ ...spec, operations: {} }]);
          if (found) targets.push({ schema: found.schema, table: found.table, origin: spec.origin });
        } catch {
          io.stderr.write(`skipping ${spec.schema}.${spec.table} (${spec.origin}): no such table\n`);
        }
      }
      statements = dropStatements(targets);
      title = `pg-sidekick: remove the capture triggers of ${from}`;
      done = targets.map((t) => `dropped capture triggers of ${t.schema}.${t.table}`);
    } else {
      const resolved = await resolveCaptures(client, specs);
      statements = captureStatements(resolved);
      title = `pg-sidekick capture triggers from ${from}`;
      done = resolved.map((c) => `capturing ${summary(c)}`);
    }
    if (!options.apply) {
      io.stdout.write(script(title, statements));
      io.stderr.write('(printed only: review it, then add --apply to run it in one transaction)\n');
      return 0;
    }
    if (!options.drop) {
      const result = await migrate(client);
      if (result.applied.length > 0) io.stdout.write(`installed the pg-sidekick schema (${result.applied.join(', ')})\n`);
    }
    await client.query('BEGIN');
    try {
      await client.query(statements);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw new Error(`applying the triggers failed, nothing was changed: ${(error as Error).message}`, { cause: error });
    }
    for (const line of done) io.stdout.write(`${line}\n`);
    io.stdout.write(`applied on ${describeConnection(connection, io.env)}\n`);
    return 0;
  } finally {
    await client.end().catch(() => {});
  }
}
