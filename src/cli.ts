#!/usr/bin/env node
/**
 * The only module that touches process.argv, the environment, signals and exit codes. Every
 * command is a function of (options, io) returning an exit code, so tests can run them in-process.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { backfillCommand } from './commands/backfill.js';
import { checkCommand } from './commands/check.js';
import { demoCommand } from './commands/demo.js';
import { dlqListCommand, dlqPurgeCommand, dlqRetryCommand } from './commands/dlq.js';
import type { CommandIO } from './commands/io.js';
import { installCommand } from './commands/install.js';
import { listenCommand } from './commands/listen.js';
import { runCommand } from './commands/run.js';
import { statusCommand } from './commands/status.js';
import { triggersCommand } from './commands/triggers.js';
import { uninstallCommand } from './commands/uninstall.js';
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
    // Our own errors (a broken config, a port in use …) carry a message meant for the user;
    // anything else is unexpected and gets its stack.
    if (error instanceof SidekickError) {
      process.stderr.write(`sidekick: ${error.message}\n`);
      code = 1;
    } else {
      process.stderr.write(`sidekick: ${(error as Error)?.stack ?? String(error)}\n`);
      code = 1;
    }
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

  program.command('run')
    .description('run the bridge')
    .option('-c, --config <file>', 'config file (YAML or JSON)', DEFAULT_CONFIG)
    .action((opts: { config: string }) => exitWith(() => runCommand(opts, io())));

  program.command('check')
    .description('validate the config and check that the database and every sink answer (exit 0/1)')
    .option('-c, --config <file>', 'config file (YAML or JSON)', DEFAULT_CONFIG)
    .action((opts: { config: string }) => exitWith(() => checkCommand(opts, io())));

  program.command('listen')
    .description('print notifications to stdout: a drop-in for pgsidekick\'s pglisten (see `sidekick listen --help`)')
    .helpOption(false)
    .allowUnknownOption(true)
    .allowExcessArguments(true)
    .argument('[args...]')
    .action((args: string[]) => exitWith(() => listenCommand(args, io())));

  program.command('install')
    .description('create or upgrade the sidekick schema (idempotent; safe from two processes at once)')
    .option('-d, --database <url>', 'database URL or conninfo (default: the config\'s, DATABASE_URL, PG* variables)')
    .option('-c, --config <file>', 'take the database from this config file')
    .action((opts: { database?: string; config?: string }) => exitWith(() => installCommand(opts, io())));

  program.command('uninstall')
    .description('remove everything pg-sidekick created in the database (capture triggers, the sidekick schema), after listing it')
    .option('-d, --database <url>', 'database URL or conninfo (default: the config\'s, DATABASE_URL, PG* variables)')
    .option('-c, --config <file>', 'take the database from this config file')
    .option('-y, --yes', 'do not ask for confirmation (required without a terminal)')
    .action((opts: { database?: string; config?: string; yes?: boolean }) => {
      const confirm = terminalConfirm();
      return exitWith(() => uninstallCommand({ ...opts, ...(confirm ? { confirm } : {}) }, io()));
    });

  program.command('triggers')
    .description('generate the capture triggers as SQL to review (from the config\'s capture: section or a skor triggers.json); --apply runs it')
    .argument('[file]', 'a skor triggers.json (default: the capture: section of the config)')
    .option('-c, --config <file>', 'config file (YAML or JSON)', DEFAULT_CONFIG)
    .option('-d, --database <url>', 'database URL or conninfo (default: the config\'s, DATABASE_URL, PG* variables)')
    .option('--apply', 'run the SQL in one transaction (installs the sidekick schema first if needed)')
    .option('--drop', 'generate the statements that remove the triggers instead')
    .action((file: string | undefined, opts: { config: string; database?: string; apply?: boolean; drop?: boolean }) =>
      exitWith(() => triggersCommand({ ...opts, ...(file ? { file } : {}) }, io())));

  const dlq = program.command('dlq').description('dead letters: events a sink gave up on (list | retry | purge)');
  const dbOptions = (cmd: Command) => cmd
    .option('-d, --database <url>', 'database URL or conninfo (default: the config\'s, DATABASE_URL, PG* variables)')
    .option('-c, --config <file>', 'take the database from this config file')
    .option('-s, --sink <name>', 'only this sink\'s dead letters');
  dbOptions(dlq.command('list'))
    .description('show dead letters, newest first')
    .option('-n, --limit <n>', 'at most this many', (v) => Number(v), 50)
    .option('--json', 'JSON (with the whole event) instead of a table')
    .action((opts: { database?: string; config?: string; sink?: string; limit: number; json?: boolean }) => exitWith(() => dlqListCommand(opts, io())));
  dbOptions(dlq.command('retry'))
    .description('send dead letters back to their sink (same event id)')
    .argument('[ids...]', 'dead-letter ids (the ID column of dlq list)')
    .option('--all', 'every dead letter (of --sink, if given)')
    .action((ids: string[], opts: { database?: string; config?: string; sink?: string; all?: boolean }) => exitWith(() => dlqRetryCommand({ ...opts, ids }, io())));
  dbOptions(dlq.command('purge'))
    .description('delete dead letters for good')
    .argument('[ids...]', 'dead-letter ids (the ID column of dlq list)')
    .option('--all', 'every dead letter (of --sink, if given)')
    .action((ids: string[], opts: { database?: string; config?: string; sink?: string; all?: boolean }) => exitWith(() => dlqPurgeCommand({ ...opts, ids }, io())));

  program.command('backfill')
    .description('enqueue a table\'s existing rows as op READ events, in key order, in batches (resumable; progress on stderr)')
    .argument('<table>', 'table or schema.table')
    .option('-w, --where <sql>', 'only rows matching this SQL condition')
    .option('-b, --batch <n>', 'rows per batch (one transaction each)', (v) => Number(v), 1000)
    .option('--max-batches <n>', 'stop after this many batches (run again to go on)', (v) => Number(v))
    .option('--restart', 'discard an unfinished backfill of this table and start over')
    .option('-d, --database <url>', 'database URL or conninfo (default: the config\'s, DATABASE_URL, PG* variables)')
    .option('-c, --config <file>', 'take the database, and the table\'s capture key and columns, from this config file')
    .action((table: string, opts: { where?: string; batch: number; maxBatches?: number; restart?: boolean; database?: string; config?: string }) =>
      exitWith(() => backfillCommand({ ...opts, table }, io())));

  program.command('status')
    .description('backlog, oldest event, per-sink backlog and dead letters, due schedules, bridge connections (exit 1 if unreachable or not installed)')
    .option('-d, --database <url>', 'database URL or conninfo (default: the config\'s, DATABASE_URL, PG* variables)')
    .option('-c, --config <file>', 'take the database (and the sink names) from this config file')
    .option('--json', 'machine-readable JSON instead of tables')
    .action((opts: { database?: string; config?: string; json?: boolean }) => exitWith(() => statusCommand(opts, io())));

  program.command('demo')
    .description('zero-setup demo: embedded PostgreSQL, a demo channel, events printed to stdout')
    .option('--once', 'exit after the demo events were delivered')
    .option('--dir <dir>', 'data directory of the embedded PostgreSQL')
    .action((opts: { once?: boolean; dir?: string }) => exitWith(() => demoCommand(opts, io())));

  return program;
}

/** Entry point; `argv` without node and script. */
export async function main(argv: readonly string[]): Promise<void> {
  const program = buildProgram(processIO);
  program.exitOverride((err: CommanderError) => {
    process.exit(err.exitCode);
  });
  // pglisten-style options go through verbatim (commander would otherwise eat --help, -V …).
  if (argv[0] === 'listen') return exitWith(() => listenCommand(argv.slice(1), processIO()));
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
