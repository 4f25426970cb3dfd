import { Writable } from 'node:stream';
import pg from 'pg';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge } from '../bridge.js';
import { parseConfig } from '../config.js';
import { errorMessage } from '../errors.js';
import { createLogger, type Logger } from '../logger.js';
import { describeConnection, resolveConnection, type ResolvedConnection, type ResolveOptions } from '../pg/connection.js';
import { laterUsage, LATER_PROGRAM, parseLaterArgs, type LaterOptions } from '../scheduler/later-args.js';
import { migrate } from '../sql/migrate.js';
import { VERSION } from '../version.js';
import { waitForAbort, type CommandIO } from './io.js';

/** pglater's exit codes. */
const EXIT_FAILURE = 1;
const EXIT_BADCONN = 2;

/**
 * `sidekick later` / `pglater`: pglater's command line on the bridge's engine — LISTEN on one channel,
 * the `later` sink, the scheduler loop. Unlike pglater it keeps any number of jobs, durably, and a bad
 * notification or a failing statement is reported on stderr without ending the program.
 */
export async function laterCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  const parsed = parseLaterArgs(argv);
  if (parsed.action === 'help') {
    io.stdout.write(laterUsage());
    return 0;
  }
  if (parsed.action === 'version') {
    io.stdout.write(`${LATER_PROGRAM} (pg-sidekick) ${VERSION}\n`);
    return 0;
  }
  if (parsed.action === 'error') {
    io.stderr.write(`${LATER_PROGRAM}: ${parsed.message}\nTry "${LATER_PROGRAM} --help" for more information.\n`);
    return EXIT_FAILURE;
  }
  const options = parsed.options;
  const say = (line: string) => io.stderr.write(`${LATER_PROGRAM}: ${line}\n`);
  let connection: pg.ClientConfig;
  try {
    const resolved = laterConnection(options, io.env);
    for (const warning of resolved.warnings) say(`warning: ${warning}`);
    connection = resolved.config;
  } catch (error) {
    say(errorMessage(error));
    return EXIT_BADCONN;
  }
  const where = describeConnection(connection, io.env);

  // Connect once up front, as pglater did: a wrong host or password is reported and ends the program.
  const probe = new pg.Client({ ...connection, application_name: LATER_PROGRAM });
  probe.on('error', () => {});
  try {
    await probe.connect();
  } catch (error) {
    say(`cannot connect to ${where}: ${errorMessage(error)}`);
    return EXIT_BADCONN;
  }
  try {
    const { rows } = await probe.query<{ t: string | null }>(`SELECT to_regclass('sidekick.schedules')::text AS t`);
    if (!rows[0]?.t) {
      if (!options.install) {
        say(`the sidekick schema is not installed in ${where}: run \`sidekick install\` first (or leave out --no-install)`);
        return EXIT_FAILURE;
      }
      // pglater needed nothing in the database; the durable job table is created on first use.
      try {
        const result = await migrate(probe);
        if (options.verbose) say(`installed the sidekick schema in ${where} (${result.applied.length} migration(s))`);
      } catch (error) {
        say(
          `the sidekick schema is not installed in ${where} and could not be created (${errorMessage(error)}): ` +
            'run `sidekick install` once as a role allowed to create it',
        );
        return EXIT_FAILURE;
      }
    }
  } finally {
    await probe.end().catch(() => {});
  }

  const config = parseConfig(
    {
      listen: [options.channel],
      sinks: { [LATER_PROGRAM]: { type: 'later', ...(options.allow.length > 0 && { allow: options.allow }) } },
      routes: [{ from: escapeGlob(options.channel), to: LATER_PROGRAM }],
      scheduler: { enabled: true },
      // pglater only schedules: the outbox belongs to the bridge (`sidekick run`), not to this program.
      outbox: { enabled: false },
    },
    { sinks: sinkDefinitions, env: io.env, file: 'command line' },
  );
  const logger = laterLogger(options, io.stderr);
  if (options.verbose) say(`Listening on channel ${options.channel}`);
  const bridge = createBridge({ config, logger, connection });
  const starting = bridge.start();
  await Promise.race([starting.catch(() => {}), waitForAbort(io.signal)]);
  await waitForAbort(io.signal);
  await bridge.stop();
  return 0;
}

/** Channel names are plain names here; the router reads globs. */
function escapeGlob(name: string): string {
  return name.replace(/[*?[\]{}()!+@\\]/g, (c) => `\\${c}`);
}

/**
 * pglater's connection, resolved as libpq would (the same resolver as `listen` and `run`): -d (a
 * name, a conninfo string or a URI, else DATABASE_URL), -h, -p and -U on top of it (pglater's
 * PQsetdbLogin), then the PG* variables, ~/.pgpass and libpq's defaults. `test`: the resolver's
 * hooks for tests (OS user, socket files, password file).
 */
export function laterConnection(
  options: Pick<LaterOptions, 'dbname' | 'host' | 'port' | 'username'>,
  env: NodeJS.ProcessEnv,
  test: Pick<ResolveOptions, 'osUser' | 'socketExists' | 'homeDir' | 'readPassfile' | 'readFile'> = {},
): ResolvedConnection {
  return resolveConnection({
    explicit: {
      ...(options.host !== undefined && { host: options.host }),
      ...(options.port !== undefined && { port: options.port }),
      ...(options.username !== undefined && { user: options.username }),
    },
    ...(options.dbname !== undefined && { dbname: options.dbname }),
    explicitWins: true,
    env,
    ...test,
  });
}

const QUIET_KEYS = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'component', 'sink', 'source']);

/**
 * Log lines as pglater wrote them: plain text on stderr. Errors always; with -v everything down to
 * each job scheduled and run; otherwise warnings too, unless -q.
 */
function laterLogger(options: LaterOptions, stderr: NodeJS.WritableStream): Logger {
  const level = options.verbose ? 'debug' : options.quiet ? 'error' : 'warn';
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line === '') continue;
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          const fields = Object.entries(entry)
            .filter(([k]) => !QUIET_KEYS.has(k))
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
          stderr.write(`${LATER_PROGRAM}: ${String(entry.msg ?? '')}${fields.length > 0 ? ` (${fields.join(', ')})` : ''}\n`);
        } catch {
          stderr.write(`${line}\n`);
        }
      }
      callback();
    },
  });
  return createLogger({ level, destination });
}
