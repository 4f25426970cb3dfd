import { pino, destination, type Logger } from 'pino';

export type { Logger };

/** Keys whose values never reach a log line, wherever they appear. */
export const REDACT_PATHS = [
  'password', '*.password', 'secret', '*.secret', 'headers.authorization', 'headers.Authorization',
  '*.headers.authorization', '*.headers.Authorization', 'sasl', '*.sasl', 'database', 'connectionString',
];

/**
 * Logs go to stderr as one JSON line per event (stdout belongs to the stdout sink and to `listen`).
 * Level: the config's `log.level`, else LOG_LEVEL, else info.
 */
export function createLogger(options: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = options.level ?? 'info';
  const stream = options.destination ?? destination({ fd: 2, sync: true });
  return pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { pid: process.pid } }, stream);
}

/** Replaces the password in a connection URL, for messages that name a database or broker. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/?#@]*):([^@/?#]*)@/, '//$1:[redacted]@');
}
