import { helpText, parseListenArgs, PROGRAM, versionText } from '../listen/args.js';
import { EXIT_FAILURE, EXIT_OK, runListen } from '../listen/run.js';
import { VERSION } from '../version.js';
import type { CommandIO } from './io.js';

/**
 * `sidekick listen` / `pglisten`: a drop-in for pgsidekick's pglisten (same options, same bytes on
 * stdout, same exit codes), that also survives lost connections. `argv` is everything after `listen`.
 */
export async function listenCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  const parsed = parseListenArgs(argv);
  switch (parsed.action) {
    case 'help':
      io.stdout.write(helpText(VERSION));
      return EXIT_OK;
    case 'version':
      io.stdout.write(versionText(VERSION));
      return EXIT_OK;
    case 'error':
      io.stderr.write(`${PROGRAM}: ${parsed.message}\nTry "${PROGRAM} --help" for more information.\n`);
      return EXIT_FAILURE;
    case 'listen':
      if (!parsed.options.quiet) for (const warning of parsed.warnings) io.stderr.write(`${PROGRAM}: warning: ${warning}\n`);
      return runListen(parsed.options, io);
  }
}
