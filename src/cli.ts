#!/usr/bin/env node
/**
 * The only module that touches process.argv, the environment, signals and exit codes. Every
 * command is a function of (options, io) returning an exit code, so tests can run them in-process.
 * Command modules are imported when their command runs: `pglisten` starts without loading the
 * bridge, the sinks and their client libraries.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, type CommanderError } from 'commander';
import type { CommandIO } from './commands/io.js';
import type { AddOptions } from './commands/schedule.js';
import { SidekickError } from './errors.js';
import { VERSION } from './version.js';

const DEFAULT_CONFIG = process.env.SIDEKICK_CONFIG ?? 'sidekick.yaml';

let io: CommandIO | undefined;

/** A yes/no question on the terminal; undefined when stdin is not one (then --yes is needed). */
function terminalConfirm(): ((question: string) => Promise<boolean>) | undefined {
  if (!process.stdin.isTTY) return undefined;
  return async (question) => {
    const { createInterface } = await import('node:readline/promises');
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    try {
      return (await rl.question(question)).trim().toLowerCase() === 'yes';
    } finally {
      rl.close();
    }
  };
}

/**
 * The first SIGINT/SIGTERM aborts `signal`: the command stops gracefully (the bridge finishes
 * in-flight deliveries up to shutdown.timeout, then exits 0). A second one exits 130 at once, for
 * when a graceful stop takes longer than a person or an orchestrator wants to wait.
 */
function processIO(): CommandIO {
  if (io) return io;
  const controller = new AbortController();
  let signals = 0;
  const onSignal = (name: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      controller.abort(new Error(name));
    } else {
      process.stderr.write(`sidekick: ${name} again: exiting now without finishing in-flight deliveries\n`);
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A promise rejected with nobody listening is a bug somewhere (often in a client library after a
  // lost connection). It must not end a bridge that recovers from lost connections: say it loudly
  // and keep running.
  process.on('unhandledRejection', (reason) => {
    process.stderr.write(`sidekick: unhandled promise rejection (a bug; kept running): ${(reason as Error)?.stack ?? String(reason)}\n`);
  });
  io = { stdout: process.stdout, stderr: process.stderr, env: process.env, signal: controller.signal };
  return io;
}

async function exitWith(run: () => Promise<number>): Promise<never> {
  let code: number;
  try {
    code = await run();
  } catch (error) {
    // Our own errors (a broken config, a port in use …) and the database's answers (a missing
    // privilege, a refused connection) carry a message meant for the user: one line. Anything else
    // is a bug and gets its stack.
    const line = error instanceof SidekickError ? error.message : (await import('./commands/failure.js')).expectedFailure(error);
    // Messages may embed a URL (a broker's, a database's): no password or query string, as in logs.
    const { redactLine } = await import('./logger.js');
    process.stderr.write(`sidekick: ${redactLine(line ?? (error as Error)?.stack ?? String(error))}\n`);
    code = 1;
  }
  // Flush stdout before exiting (a pipe may still hold data).
  await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
  process.exit(code);
}

export function buildProgram(io: () => CommandIO): Command {
  const program = new Command('sidekick')
    .description('Let PostgreSQL trigger work outside itself: NOTIFY and row changes → webhooks, Kafka, RabbitMQ, Redis Streams, stdout.')
    .version(VERSION, '-V, --version')
    .showHelpAfterError()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('run')
    .description('run the bridge')
    .option('-c, --config <file>', 'config file (YAML or JSON)', DEFAULT_CONFIG)
    .action((opts: { config: string }) => exitWith(async () => (await import('./commands/run.js')).runCommand(opts, io())));

  program
    .command('check')
    .description('validate the config and check that the database and every sink answer (exit 0/1)')
    .option('-c, --config <file>', 'config file (YAML or JSON)', DEFAULT_CONFIG)
    .action((opts: { config: string }) => exitWith(async () => (await import('./commands/check.js')).checkCommand(opts, io())));

  program
    .command('listen')
    .description("print notifications to stdout: a drop-in for pgsidekick's pglisten (see `sidekick listen --help`)")
    .helpOption(false)
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .argument('[args...]')
    .action((args: string[]) => exitWith(async () => (await import('./commands/listen.js')).listenCommand(args, io())));

  program
    .command('install')
    .description('create or upgrade the sidekick schema (idempotent; safe from two processes at once)')
    .option('-d, --database <url>', "database URL or conninfo (default: the config's, DATABASE_URL, PG* variables)")
    .option('-c, --config <file>', 'take the database from this config file')
    .option('--pgcron [schema]', "also install pgsidekick's pgcron.sql interface (a scheduled_events view; schema default public)")
    .action((opts: { database?: string; config?: string; pgcron?: boolean | string }) =>
      exitWith(async () => (await import('./commands/install.js')).installCommand(opts, io())),
    );

  program
    .command('later')
    .description('run SQL later on "<seconds> <sql>" notifications: a drop-in for pgsidekick\'s pglater (see `sidekick later --help`)')
    .helpOption(false)
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .argument('[args...]')
    .action((args: string[]) => exitWith(async () => (await import('./commands/later.js')).laterCommand(args, io())));

  const schedule = program
    .command('schedule')
    .description('durable schedules in sidekick.schedules: add, list, remove, enable, disable, run-now, history');
  const db = (c: Command) =>
    c
      .option('-d, --database <url>', "database URL or conninfo (default: the config's, DATABASE_URL, PG* variables)")
      .option('-c, --config <file>', 'take the database from this config file');
  db(schedule.command('add <name>'))
    .description('add a schedule: one timing (--at, --in, --every, --cron) and one action (--sql, --emit)')
    .option('--at <time>', 'once, at this time (anything PostgreSQL reads as timestamptz)')
    .option('--in <duration>', 'once, this long from now ("30s", "2h", "1 day")')
    .option('--every <interval>', 'repeatedly: "20m", "1h", "20 minutes", "1 month" (first run: --start, default now)')
    .option('--cron <expression>', 'cron: 5 fields, or 6 with seconds first ("*/10 * * * * *")')
    .option('--tz <zone>', 'time zone for --cron and calendar intervals (default UTC)')
    .option('--start <time>', 'first run of --every, earliest run of --cron')
    .option('--sql <sql>', "SQL to run (as the bridge's role)")
    .option('--emit <channel>', 'publish an event to this channel instead (it flows through the routes)')
    .option('--payload <json>', 'the event payload (default {"schedule": name, "due_at": …})')
    .option('--key <key>', "the event's ordering key")
    .option('--missed <policy>', 'occurrences missed while no bridge ran: skip | once (default) | all')
    .option('--missed-cap <n>', 'with --missed all: run at most this many (the most recent; default 100)')
    .option('--overlap <policy>', 'occurrences due while the previous run still runs: skip (default) | queue')
    .option('--timeout <duration>', 'statement_timeout for the action ("30s")')
    .option('--attempts <n>', 'runs per occurrence before it counts as failed (default 1)')
    .option('--retry-delay <duration>', 'wait between attempts (default 10s)')
    .option('--disabled', 'add it switched off')
    .option('--replace', 'replace a schedule of the same name')
    .action((name: string, opts: AddOptions) => exitWith(async () => (await import('./commands/schedule.js')).scheduleAddCommand(name, opts, io())));
  db(schedule.command('list'))
    .description('list schedules, soonest first')
    .option('--all', 'include pglater jobs and run-now copies')
    .option('--json', 'one JSON object per line')
    .action((opts: { database?: string; config?: string; all?: boolean; json?: boolean }) =>
      exitWith(async () => (await import('./commands/schedule.js')).scheduleListCommand(opts, io())),
    );
  db(schedule.command('remove <name>'))
    .description('remove a schedule (by name or id); its history stays')
    .action((name: string, opts: { database?: string; config?: string }) =>
      exitWith(async () => (await import('./commands/schedule.js')).scheduleRemoveCommand(name, opts, io())),
    );
  db(schedule.command('enable <name>'))
    .description('switch a schedule on')
    .action((name: string, opts: { database?: string; config?: string }) =>
      exitWith(async () => (await import('./commands/schedule.js')).scheduleEnableCommand(name, true, opts, io())),
    );
  db(schedule.command('disable <name>'))
    .description('switch a schedule off (it keeps its place)')
    .action((name: string, opts: { database?: string; config?: string }) =>
      exitWith(async () => (await import('./commands/schedule.js')).scheduleEnableCommand(name, false, opts, io())),
    );
  db(schedule.command('run-now <name>'))
    .description("run a schedule's action once now, besides its own timing")
    .action((name: string, opts: { database?: string; config?: string }) =>
      exitWith(async () => (await import('./commands/schedule.js')).scheduleRunNowCommand(name, opts, io())),
    );
  db(schedule.command('history [name]'))
    .description('recent runs (outcome, duration, error), newest first')
    .option('-n, --limit <n>', 'how many (default 20)')
    .option('--json', 'one JSON object per line')
    .action((name: string | undefined, opts: { database?: string; config?: string; limit?: string; json?: boolean }) =>
      exitWith(async () => (await import('./commands/schedule.js')).scheduleHistoryCommand(name, opts, io())),
    );

  program
    .command('uninstall')
    .description('remove everything pg-sidekick created in the database (capture triggers, the sidekick schema), after listing it')
    .option('-d, --database <url>', "database URL or conninfo (default: the config's, DATABASE_URL, PG* variables)")
    .option('-c, --config <file>', 'take the database from this config file')
    .option('-y, --yes', 'do not ask for confirmation (required without a terminal)')
    .action((opts: { database?: string; config?: string; yes?: boolean }) => {
      const confirm = terminalConfirm();
      return exitWith(async () => (await import('./commands/uninstall.js')).uninstallCommand({ ...opts, ...(confirm ? { confirm } : {}) }, io()));
    });

  program
    .command('triggers')
    .description("generate the capture triggers as SQL to review (from the config's capture: section or a skor triggers.json); --apply runs it")
    .argument('[file]', 'a skor triggers.json (default: the capture: section of the config)')
    .option('-c, --config <file>', 'config file (YAML or JSON)', DEFAULT_CONFIG)
    .option('-d, --database <url>', "database URL or conninfo (default: the config's, DATABASE_URL, PG* variables)")
    .option('--apply', 'run the SQL in one transaction (installs the sidekick schema first if needed)')
    .option('--drop', 'generate the statements that remove the triggers instead')
    .action((file: string | undefined, opts: { config: string; database?: string; apply?: boolean; drop?: boolean }) =>
      exitWith(async () => (await import('./commands/triggers.js')).triggersCommand({ ...opts, ...(file ? { file } : {}) }, io())),
    );

  const dlq = program.command('dlq').description('dead letters: events a sink gave up on (list | retry | purge)');
  const dbOptions = (cmd: Command) =>
    cmd
      .option('-d, --database <url>', "database URL or conninfo (default: the config's, DATABASE_URL, PG* variables)")
      .option('-c, --config <file>', 'take the database from this config file')
      .option('-s, --sink <name>', "only this sink's dead letters");
  dbOptions(dlq.command('list'))
    .description('show dead letters, newest first')
    .option('-n, --limit <n>', 'at most this many', (v) => Number(v), 50)
    .option('--json', 'JSON (with the whole event) instead of a table')
    .action((opts: { database?: string; config?: string; sink?: string; limit: number; json?: boolean }) =>
      exitWith(async () => (await import('./commands/dlq.js')).dlqListCommand(opts, io())),
    );
  dbOptions(dlq.command('retry'))
    .description('send dead letters back to their sink (same event id)')
    .argument('[ids...]', 'dead-letter ids (the ID column of dlq list)')
    .option('--all', 'every dead letter (of --sink, if given)')
    .action((ids: string[], opts: { database?: string; config?: string; sink?: string; all?: boolean }) =>
      exitWith(async () => (await import('./commands/dlq.js')).dlqRetryCommand({ ...opts, ids }, io())),
    );
  dbOptions(dlq.command('purge'))
    .description('delete dead letters for good')
    .argument('[ids...]', 'dead-letter ids (the ID column of dlq list)')
    .option('--all', 'every dead letter (of --sink, if given)')
    .action((ids: string[], opts: { database?: string; config?: string; sink?: string; all?: boolean }) =>
      exitWith(async () => (await import('./commands/dlq.js')).dlqPurgeCommand({ ...opts, ids }, io())),
    );

  program
    .command('backfill')
    .description("enqueue a table's existing rows as op READ events, in key order, in batches (resumable; progress on stderr)")
    .argument('<table>', 'table or schema.table')
    .option('-w, --where <sql>', 'only rows matching this SQL condition')
    .option('-b, --batch <n>', 'rows per batch (one transaction each)', (v) => Number(v), 1000)
    .option('--max-batches <n>', 'stop after this many batches (run again to go on)', (v) => Number(v))
    .option('--restart', 'discard an unfinished backfill of this table and start over')
    .option('-d, --database <url>', "database URL or conninfo (default: the config's, DATABASE_URL, PG* variables)")
    .option('-c, --config <file>', "take the database, and the table's capture key and columns, from this config file")
    .action((table: string, opts: { where?: string; batch: number; maxBatches?: number; restart?: boolean; database?: string; config?: string }) =>
      exitWith(async () => (await import('./commands/backfill.js')).backfillCommand({ ...opts, table }, io())),
    );

  program
    .command('status')
    .description(
      'backlog, oldest event, per-sink backlog and dead letters, due schedules, bridge connections (exit 1 if unreachable or not installed)',
    )
    .option('-d, --database <url>', "database URL or conninfo (default: the config's, DATABASE_URL, PG* variables)")
    .option('-c, --config <file>', 'take the database (and the sink names) from this config file')
    .option('--json', 'machine-readable JSON instead of tables')
    .action((opts: { database?: string; config?: string; json?: boolean }) =>
      exitWith(async () => (await import('./commands/status.js')).statusCommand(opts, io())),
    );

  program
    .command('demo')
    .description('zero-setup demo: embedded PostgreSQL, a demo channel, events printed to stdout')
    .option('--once', 'exit after the demo events were delivered')
    .option('--dir <dir>', 'data directory of the embedded PostgreSQL')
    .action((opts: { once?: boolean; dir?: string }) => exitWith(async () => (await import('./commands/demo.js')).demoCommand(opts, io())));

  return program;
}

/** Entry point; `argv` without node and script. */
export async function main(argv: readonly string[]): Promise<void> {
  const program = buildProgram(processIO);
  program.exitOverride((err: CommanderError) => {
    process.exit(err.exitCode);
  });
  // pglisten-style options go through verbatim (commander would otherwise eat --help, -V …).
  if (argv[0] === 'listen') return exitWith(async () => (await import('./commands/listen.js')).listenCommand(argv.slice(1), processIO()));
  if (argv[0] === 'later') return exitWith(async () => (await import('./commands/later.js')).laterCommand(argv.slice(1), processIO()));
  await program.parseAsync([...argv], { from: 'user' });
}

function invokedDirectly(): boolean {
  try {
    return realpathSync(process.argv[1] ?? '') === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}
if (invokedDirectly()) void main(process.argv.slice(2));
