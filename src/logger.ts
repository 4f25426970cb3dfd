import { pino, destination as pinoDestination, type Logger } from 'pino';
import { build as prettyStream } from 'pino-pretty';

export type { Logger };

/**
 * Key names whose values never reach a log line, at any depth (matched inside the key, any case):
 * `password`, `Authorization`, `headers.Authorization`, `hookSecret`, `apiKey`, `sasl.password` …
 */
const SECRET_KEY = String.raw`[^"\\]*(?:passw(?:or)?d|passphrase|secret|token|authorization|cookie|api[-_]?key|credential|private[-_]?key)[^"\\]*`;
// "key": "string" | ["strings"] (a secret list, for key rotation) | number | true/false/null.
// Objects are walked into, key by key.
const SECRET_ENTRY = new RegExp(String.raw`"(${SECRET_KEY})":(\[(?:"(?:[^"\\]|\\.)*",?)*\]|"(?:[^"\\]|\\.)*"|[-\w.+]+)`, 'gi');
// scheme://user:password@host — the password part (the user name stays: it says which role).
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s"]*):([^@/?#\s"]*)@/gi;
// scheme://token@host — userinfo without a colon is often a token (https://ghp_…@host): all of it.
const URL_USERINFO = /([a-z][a-z0-9+.-]*:\/\/)(?!\[redacted\])([^:/?#@\s"\\]+)@/gi;
// scheme://host/path?query — the query (webhook ?token=…, libpq ?password=…, ?sslpassword=…): all
// of it, up to the end of the URL (a fragment goes with it). In a JSON line a string ends at `"`;
// a backslash starts an escape, which no URL needs.
const URL_QUERY = /([a-z][a-z0-9+.-]*:\/\/[^?#\s"\\]*)[?#][^\s"\\]*/gi;
// libpq conninfo: password=secret or password='se cret'.
const CONNINFO_PASSWORD = /\bpassword\s*=\s*(?:'(?:[^'\\]|\\.)*'|[^\s'"\\]+)/gi;

/**
 * Removes secrets from one serialized log line (or any text): secret-named fields, and of every
 * URL its password (or a userinfo without one) and its query string, whatever option or error
 * message it came from (issue 16: a webhook's ?token=… was in the debug "effective config" line).
 */
export function redactLine(line: string): string {
  return line
    .replace(SECRET_ENTRY, '"$1":"[redacted]"')
    .replace(URL_PASSWORD, '$1:[redacted]@')
    .replace(URL_USERINFO, '$1[redacted]@')
    .replace(URL_QUERY, '$1?[redacted]')
    .replace(CONNINFO_PASSWORD, 'password=[redacted]');
}

/**
 * A URL fit for a message that names a database or broker: the password (or a userinfo without
 * one) and the query string replaced by [redacted]; user, host, port and path stay.
 */
export function redactUrl(url: string): string {
  return url
    .replace(/\/\/([^:/?#@]*):([^@/?#]*)@/, '//$1:[redacted]@')
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)(?!\[redacted\])([^:/?#@]+)@/i, '$1[redacted]@')
    .replace(/^([^?#]*)[?#].*$/s, '$1?[redacted]');
}

export type LogFormat = 'json' | 'pretty';

export interface LoggerOptions {
  /** trace … fatal, silent. Default info. */
  readonly level?: string;
  /** Where lines go. Default: stderr (fd 2, synchronous so nothing is lost at exit). */
  readonly destination?: NodeJS.WritableStream;
  /** json (default): one JSON object per line. pretty: human-readable, for a terminal. */
  readonly format?: LogFormat;
  /** Colours in pretty output. Default false. */
  readonly colorize?: boolean;
}

/**
 * Logs go to stderr (stdout belongs to the stdout sink and to `listen`): one JSON line per event,
 * or pino-pretty's readable form when a person watches a terminal. pino-pretty runs in-process as a
 * plain stream (not a worker-thread transport) so lines are written synchronously, in order, and
 * the last ones before an exit are not lost.
 *
 * Secrets are removed from the finished line, whatever produced it (fields at any depth, child
 * bindings, messages, error stacks): pino's own `redact` only knows fixed paths one wildcard deep,
 * which misses e.g. `sink.options.headers.Authorization`.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  const target: { write(s: string): unknown } =
    options.format === 'pretty'
      ? prettyStream({
          destination: options.destination ?? 2,
          sync: true,
          colorize: options.colorize ?? false,
          translateTime: 'SYS:HH:MM:ss.l',
          ignore: 'pid,hostname',
          singleLine: true,
        })
      : (options.destination ?? pinoDestination({ fd: 2, sync: true }));
  const redacting = { write: (line: string) => target.write(redactLine(line)) };
  return pino({ level, base: { pid: process.pid } }, redacting);
}

/**
 * Picks the format: `configured` (the config's log.format) wins, then LOG_FORMAT, then `auto`,
 * which means pretty on a terminal and JSON otherwise (files, pipes, log collectors).
 */
export function chooseLogFormat(configured: string | undefined, envFormat: string | undefined, isTTY: boolean): LogFormat {
  const wanted = configured ?? envFormat ?? 'auto';
  if (wanted === 'json' || wanted === 'pretty') return wanted;
  return isTTY ? 'pretty' : 'json';
}
