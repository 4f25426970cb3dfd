import type { CommandIO } from './io.js';

/** `sidekick listen` / `pglisten` — placeholder until the drop-in lands. */
export async function listenCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  io.stderr.write(`sidekick listen: not implemented yet (${argv.join(' ')})\n`);
  return 2;
}
