/**
 * pglisten's command line, parsed the way glibc's getopt_long parses it (pglisten is a C program):
 * short options may be clustered (`-H0l chan`, `-lchan`), a long option may be abbreviated to any
 * unambiguous prefix (`--list=chan`), a required argument may follow `=` or be the next word, non-options
 * are collected wherever they appear, `--` ends the options, and the options are acted upon in order, so
 * `-V --bogus` prints the version while `--bogus -V` is a usage error. No I/O happens here.
 */

import { getoptLong, type OptionSpec } from '../cli-args/getopt.js';

export const PROGRAM = 'pglisten';

/** What the user asked for, once parsed. */
export interface ListenOptions {
  /** `-l/--listen`, in the order given (duplicates kept: LISTEN twice is harmless). */
  readonly channels: readonly string[];
  /** `-0/--print0`: end each payload with NUL instead of a newline. */
  readonly print0: boolean;
  /** `-H/--context`: prefix each payload with `CHANNEL: (SENDER_PID) `. */
  readonly context: boolean;
  /** `-q/--quiet`: accepted by pglisten and ignored; here it also silences the reconnect notes. */
  readonly quiet: boolean;
  /** `-w/--no-password`: never prompt (this implementation never prompts anyway). */
  readonly noPassword: boolean;
  /** `-d/--dbname`, else the first non-option argument: a name, a conninfo string or a URI. */
  readonly dbname?: string;
  readonly host?: string;
  readonly port?: string;
  /** `-U/--username`, else the second non-option argument. */
  readonly username?: string;
}

export type ParsedArgs =
  | { readonly action: 'help' }
  | { readonly action: 'version' }
  /** A getopt-style complaint; the caller prints it and `Try "pglisten --help"…`, then exits 1. */
  | { readonly action: 'error'; readonly message: string }
  | { readonly action: 'listen'; readonly options: ListenOptions; readonly warnings: readonly string[] };

type OptionKey = 'd' | 'h' | 'l' | 'p' | 'q' | 'U' | 'H' | 'V' | 'w' | '0' | '?';

// Same table as pglisten's (long names, short letters, which ones take an argument).
const SPECS: readonly OptionSpec<OptionKey>[] = [
  { key: 'd', long: 'dbname', takesArgument: true },
  { key: 'h', long: 'host', takesArgument: true },
  { key: 'l', long: 'listen', takesArgument: true },
  { key: 'p', long: 'port', takesArgument: true },
  { key: 'q', long: 'quiet', takesArgument: false },
  { key: 'U', long: 'username', takesArgument: true },
  { key: 'V', long: 'version', takesArgument: false },
  { key: 'w', long: 'no-password', takesArgument: false },
  { key: '?', long: 'help', takesArgument: false },
  { key: 'H', long: 'context', takesArgument: false },
  { key: '0', long: 'print0', takesArgument: false },
];

export function parseListenArgs(argv: readonly string[]): ParsedArgs {
  const channels: string[] = [];
  const opts: { -readonly [K in keyof ListenOptions]?: ListenOptions[K] } = {};
  let print0 = false;
  let context = false;
  let quiet = false;
  let noPassword = false;

  // Applies one option; returns a terminal result (help/version) or undefined to go on.
  const apply = (spec: OptionSpec<OptionKey>, value: string | undefined): ParsedArgs | undefined => {
    switch (spec.key) {
      case 'd':
        opts.dbname = value;
        break;
      case 'h':
        opts.host = value;
        break;
      case 'l':
        channels.push(value as string);
        break;
      case 'p':
        opts.port = value;
        break;
      case 'U':
        opts.username = value;
        break;
      case 'q':
        quiet = true;
        break;
      case 'w':
        noPassword = true;
        break;
      case 'H':
        context = true;
        break;
      case '0':
        print0 = true;
        break;
      case 'V':
        return { action: 'version' };
      case '?':
        return { action: 'help' };
    }
    return undefined;
  };

  const walked = getoptLong(argv, SPECS, apply);
  if (walked.kind === 'done') return walked.result;
  if (walked.kind === 'error') return { action: 'error', message: walked.message };
  const positional = walked.operands;

  // The usage line promises `[DBNAME [USERNAME]]` (as psql does); pglisten itself ignored them.
  const warnings: string[] = [];
  if (positional.length > 0 && opts.dbname === undefined) opts.dbname = positional[0];
  if (positional.length > 1 && opts.username === undefined) opts.username = positional[1];
  for (const extra of positional.slice(2)) warnings.push(`extra command-line argument "${extra}" ignored`);

  return {
    action: 'listen',
    options: { ...opts, channels, print0, context, quiet, noPassword },
    warnings,
  };
}

export function helpText(version: string): string {
  return `${PROGRAM} prints the payload of every notification on the given channels to stdout.
It is pg-sidekick's drop-in for pgsidekick's pglisten (also run as \`sidekick listen\`), version ${version}.

Usage:
  ${PROGRAM} [OPTION]... [DBNAME [USERNAME]]

  -l, --listen=CHANNEL     listen for notifications on this channel (repeatable;
                           case-sensitive: --listen=Jobs hears NOTIFY "Jobs")
  -H, --context            prefix each payload with "CHANNEL: (SENDER_PID) "
  -0, --print0             separate output with an ASCII NUL (character code 0)
  -q, --quiet              don't report lost connections and reconnects on stderr
  -V, --version            output version information, then exit
  -?, --help               show this help, then exit

Connection options:
  -h, --host=HOSTNAME      database server host or socket directory
  -p, --port=PORT          database server port
  -U, --username=USERNAME  database user name
  -d, --dbname=DBNAME      database name, conninfo string ("host=db dbname=app")
                           or URI (postgres://user@host:5432/app)
  -w, --no-password        never prompt for password (this version never prompts)

Without -d, DATABASE_URL (when set) is used as if given with -d. Whatever is still
missing comes from the libpq environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD,
PGDATABASE, PGSSLMODE, ...) and ~/.pgpass.

When the connection is lost, ${PROGRAM} reconnects with backoff, listens again and carries
on (notifications sent while it was disconnected are not seen).
Exit status: 0 when stopped by SIGINT/SIGTERM or when stdout is closed, 1 on a usage
error or a failed LISTEN, 2 when the first connection fails.
`;
}

export function versionText(version: string): string {
  return `${PROGRAM} (pg-sidekick) ${version}\n`;
}
