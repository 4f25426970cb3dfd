/**
 * pglater's command line, read the way its getopt_long read it: short options may be clustered
 * (`-vl chan`, `-lchan`), a long option may be abbreviated to an unambiguous prefix, an argument may
 * follow `=` or be the next word, non-options are collected wherever they appear (`[DBNAME
 * [USERNAME]]`), `--` ends the options. Two long-only options are ours: `--allow=REGEX` (repeatable)
 * and `--no-install`. No I/O here.
 * The walking is src/cli-args/getopt.ts, shared with pglisten's parser.
 */
import { getoptLong, type OptionSpec } from '../cli-args/getopt.js';

export const LATER_PROGRAM = 'pglater';

export interface LaterOptions {
  /** `-l/--listen`: the channel (pglater takes one; the last one given wins, as in pglater). Default pglater. */
  readonly channel: string;
  /** `-v/--verbose`: activity on stderr. */
  readonly verbose: boolean;
  /** `-q/--quiet`: accepted and ignored by pglater; here it hides warnings too (errors still show). */
  readonly quiet: boolean;
  /** `-w/--no-password`: never prompt (this implementation never prompts anyway). */
  readonly noPassword: boolean;
  readonly dbname?: string;
  readonly host?: string;
  readonly port?: string;
  readonly username?: string;
  /** `--allow=REGEX`: only SQL matching one of these is scheduled. */
  readonly allow: readonly string[];
  /** `--no-install`: do not create the sidekick schema when it is missing. */
  readonly install: boolean;
}

export type LaterArgs =
  | { readonly action: 'help' }
  | { readonly action: 'version' }
  | { readonly action: 'error'; readonly message: string }
  | { readonly action: 'run'; readonly options: LaterOptions };

const SPECS: readonly OptionSpec[] = [
  { key: 'd', long: 'dbname', takesArgument: true },
  { key: 'h', long: 'host', takesArgument: true },
  { key: 'l', long: 'listen', takesArgument: true },
  { key: 'p', long: 'port', takesArgument: true },
  { key: 'q', long: 'quiet', takesArgument: false },
  { key: 'v', long: 'verbose', takesArgument: false },
  { key: 'U', long: 'username', takesArgument: true },
  { key: 'V', long: 'version', takesArgument: false },
  { key: 'w', long: 'no-password', takesArgument: false },
  { key: '?', long: 'help', takesArgument: false },
  { key: 'allow', long: 'allow', takesArgument: true },
  { key: 'no-install', long: 'no-install', takesArgument: false },
];

export function parseLaterArgs(argv: readonly string[]): LaterArgs {
  const allow: string[] = [];
  const o: {
    channel?: string;
    verbose: boolean;
    quiet: boolean;
    noPassword: boolean;
    install: boolean;
    dbname?: string;
    host?: string;
    port?: string;
    username?: string;
  } = {
    verbose: false,
    quiet: false,
    noPassword: false,
    install: true,
  };
  // Options act in order: `-V --bogus` prints the version, `--bogus -V` is an error.
  const apply = (spec: OptionSpec, value: string | undefined): LaterArgs | undefined => {
    switch (spec.key) {
      case 'd':
        o.dbname = value;
        break;
      case 'h':
        o.host = value;
        break;
      case 'l':
        o.channel = value;
        break;
      case 'p':
        o.port = value;
        break;
      case 'U':
        o.username = value;
        break;
      case 'q':
        o.quiet = true;
        break;
      case 'v':
        o.verbose = true;
        break;
      case 'w':
        o.noPassword = true;
        break;
      case 'allow':
        allow.push(value as string);
        break;
      case 'no-install':
        o.install = false;
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
  if (o.channel === '') return { action: 'error', message: 'the channel name (-l) is empty' };
  if (o.dbname === undefined && positional[0] !== undefined) o.dbname = positional[0];
  if (o.username === undefined && positional[1] !== undefined) o.username = positional[1];
  const { channel, ...rest } = o;
  return { action: 'run', options: { ...rest, channel: channel ?? 'pglater', allow } };
}

export function laterUsage(): string {
  return `${LATER_PROGRAM} runs SQL later: a notification "<seconds> <sql>" on its channel runs <sql>
after <seconds> (zero or less: now), as this connection's role. Jobs are kept in sidekick.schedules,
so a restart loses none, and any number may be pending.

Usage:
  ${LATER_PROGRAM} [OPTION]... [DBNAME [USERNAME]]

  -l, --listen=CHANNEL     listen for notifications on this channel (default pglater)
      --help               show this help, then exit
  -v, --verbose            log activity to stderr
      --version            output version information, then exit
      --allow=REGEX        only schedule SQL matching REGEX (repeatable; /re/flags for flags)
      --no-install         do not create the sidekick schema if it is missing

Connection options:
  -h, --host=HOSTNAME      database server host or socket directory
  -p, --port=PORT          database server port
  -U, --username=USERNAME  database user name
  -d, --dbname=DBNAME      database name to connect to (or a conninfo string or URI)
  -w, --no-password        never prompt for password

Any role that can connect can NOTIFY, and so run SQL as this program's role: give that role the
least privilege that does the job, and consider --allow.
`;
}
