import { SidekickError } from '../errors.js';

/**
 * Failures a command expects — the database's answer (a missing privilege, a wrong password, a
 * missing table), a database that cannot be reached, a bad config — told as one line with what to
 * do, never as a stack trace (issue 16 item 7). Anything else is a bug and keeps its stack: cli.ts
 * prints `expectedFailure(error) ?? error.stack`.
 */

/** errno codes of a database (or broker) that cannot be reached. */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'ENOENT',
  'EACCES',
  'EADDRNOTAVAIL',
]);

/** node-postgres's own words for a connection that failed or went away (no errno, no SQLSTATE). */
const CLIENT_MESSAGES = new RegExp(
  [
    'Connection terminated',
    'timeout expired',
    'connection timeout',
    'password must be a string',
    'SASL',
    'The server does not support SSL',
    'self[- ]signed certificate',
    'certificate',
  ].join('|'),
  'i',
);

interface ServerError {
  readonly code: string;
  readonly severity: string;
  readonly message: string;
}

/** An error PostgreSQL sent (node-postgres's DatabaseError: a SQLSTATE and a severity). */
export function serverError(error: unknown): ServerError | undefined {
  for (const e of causes(error)) {
    const candidate = e as Partial<ServerError> | null;
    if (typeof candidate?.code === 'string' && /^[0-9A-Z]{5}$/.test(candidate.code) && typeof candidate.severity === 'string') {
      return candidate as ServerError;
    }
  }
  return undefined;
}

function* causes(error: unknown): Generator<unknown> {
  const seen = new Set<unknown>();
  for (let e = error; e !== undefined && e !== null && !seen.has(e); e = (e as { cause?: unknown }).cause) {
    seen.add(e);
    yield e;
  }
}

function unreachable(error: unknown): boolean {
  for (const e of causes(error)) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && UNREACHABLE.has(code)) return true;
    if (e instanceof AggregateError && e.errors.some((inner) => unreachable(inner))) return true;
    if (e instanceof Error && !(e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError) && CLIENT_MESSAGES.test(e.message))
      return true;
  }
  return false;
}

/** What to do about a SQLSTATE, where there is something to say. */
export function hintFor(code: string, message: string): string | undefined {
  if (code === '42501') {
    const db = /permission denied for database "?([^"\s]+)"?/.exec(message)?.[1];
    if (db)
      return (
        `the role needs CREATE on the database: GRANT CREATE ON DATABASE "${db}" TO <role>; or an administrator creates the schema for it: ` +
        `CREATE SCHEMA sidekick AUTHORIZATION <role>`
      );
    if (/schema sidekick/.test(message))
      return (
        "the role needs the sidekick schema's privileges: run the command as the role that ran `sidekick install` (the schema's owner), or see " +
        "docs/operations.md for the bridge role's grants"
      );
    return 'the role lacks a privilege for this: run it as a role that has it (see docs/operations.md for the roles and their grants)';
  }
  if (code === '28P01' || code === '28000') return 'check the user and password: --database, DATABASE_URL, PGUSER/PGPASSWORD or ~/.pgpass';
  if (code === '3D000') return 'check the database name: --database, DATABASE_URL or PGDATABASE';
  if ((code === '42P01' || code === '3F000' || code === '42883') && /sidekick/.test(message))
    return 'pg-sidekick is not installed in this database (or is older than this version): run `sidekick install`';
  if (code === '53300') return 'the server has no connection slot left: try again later or raise max_connections';
  if (code.startsWith('57P')) return 'the server is shutting down or starting up: try again in a moment';
  return undefined;
}

/**
 * The one line to print for an expected failure, or undefined for a bug (which keeps its stack).
 * The message of the error thrown is kept (it often says what was being done: "uninstall failed,
 * nothing was dropped: …"), followed by what to do when the database's SQLSTATE tells.
 */
export function expectedFailure(error: unknown): string | undefined {
  if (error instanceof SidekickError) return error.message;
  if (
    !(error instanceof Error) ||
    error instanceof TypeError ||
    error instanceof RangeError ||
    error instanceof ReferenceError ||
    error instanceof SyntaxError
  )
    return undefined;
  const server = serverError(error);
  if (server) {
    const hint = hintFor(server.code, server.message);
    return `${oneLine(error.message)} (SQLSTATE ${server.code})${hint ? `; ${hint}` : ''}`;
  }
  if (unreachable(error)) {
    const message = oneLine(
      error.message || (error instanceof AggregateError ? error.errors.map((e) => (e as Error).message).join('; ') : error.name),
    );
    return `cannot reach the database: ${message} (is it running, and are --database, DATABASE_URL or the PG* variables right?)`;
  }
  return undefined;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
