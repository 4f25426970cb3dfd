import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir, userInfo } from 'node:os';
import type { ConnectionOptions } from 'node:tls';
import type pg from 'pg';
import { ConfigError, errorMessage } from '../errors.js';
import { preferSsl } from './ssl-prefer.js';

/** host:port/db for messages, without credentials. */
export function describeConnection(config: pg.ClientConfig, env: NodeJS.ProcessEnv = process.env): string {
  if (config.connectionString) {
    try {
      const u = new URL(config.connectionString);
      return `${u.hostname || 'localhost'}:${u.port || 5432}${u.pathname || '/'}`;
    } catch {
      return 'the configured database';
    }
  }
  const host = config.host ?? env.PGHOST ?? 'localhost';
  const port = config.port ?? env.PGPORT ?? 5432;
  const db = config.database ?? env.PGDATABASE ?? config.user ?? env.PGUSER ?? 'postgres';
  return `${host}:${port}/${db}`;
}

// ---------------------------------------------------------------------------------------------
// libpq-compatible resolution, for every command: `run`, `later`, `listen` and the one-shot ones
// resolve a database the way a libpq program (psql, pglisten, pglater) would.
// ---------------------------------------------------------------------------------------------

/** libpq connection keywords (`host`, `port`, `dbname`, `user`, `sslmode`, …) and their values. */
export type ConnectionParams = Record<string, string>;

// The keywords this implementation acts on.
const SUPPORTED_KEYWORDS = new Set([
  'host',
  'hostaddr',
  'port',
  'dbname',
  'user',
  'password',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'application_name',
  'fallback_application_name',
  'connect_timeout',
  'options',
  'client_encoding',
  'passfile',
]);
// libpq keywords accepted so that existing connection strings keep working, with no effect here
// (node-postgres has no equivalent; the defaults are what a single-host client wants).
const IGNORED_KEYWORDS = new Set([
  'keepalives',
  'keepalives_idle',
  'keepalives_interval',
  'keepalives_count',
  'tcp_user_timeout',
  'target_session_attrs',
  'load_balance_hosts',
  'gssencmode',
  'krbsrvname',
  'gsslib',
  'channel_binding',
  'sslcompression',
  'sslcrl',
  'sslcrldir',
  'sslsni',
  'sslpassword',
  'ssl_min_protocol_version',
  'ssl_max_protocol_version',
  'requirepeer',
  'require_auth',
]);

// Environment variables libpq reads for each keyword (when the keyword is not given).
const ENV_KEYWORDS: ReadonlyArray<readonly [string, string]> = [
  ['host', 'PGHOST'],
  ['hostaddr', 'PGHOSTADDR'],
  ['port', 'PGPORT'],
  ['dbname', 'PGDATABASE'],
  ['user', 'PGUSER'],
  ['password', 'PGPASSWORD'],
  ['sslmode', 'PGSSLMODE'],
  ['sslrootcert', 'PGSSLROOTCERT'],
  ['sslcert', 'PGSSLCERT'],
  ['sslkey', 'PGSSLKEY'],
  ['application_name', 'PGAPPNAME'],
  ['connect_timeout', 'PGCONNECT_TIMEOUT'],
  ['options', 'PGOPTIONS'],
  ['client_encoding', 'PGCLIENTENCODING'],
  ['passfile', 'PGPASSFILE'],
];

/** A connection string libpq would expand: a URI or a `keyword=value` list (else it is a database name). */
export function isConnectionString(text: string): boolean {
  return /^postgres(ql)?:\/\//i.test(text) || text.includes('=');
}

/** Parses a URI or a keyword/value connection string into libpq keywords. Throws on bad syntax. */
export function parseConnectionString(text: string): ConnectionParams {
  const params = /^postgres(ql)?:\/\//i.test(text) ? parseUri(text) : parseKeywordList(text);
  for (const key of Object.keys(params)) {
    if (!SUPPORTED_KEYWORDS.has(key) && !IGNORED_KEYWORDS.has(key)) throw new Error(`invalid connection option "${key}"`);
  }
  return params;
}

/** `host=db port=5432 dbname='my db'`: whitespace-separated pairs, values quoted with '…' (\' and \\ escape). */
function parseKeywordList(text: string): ConnectionParams {
  const out: ConnectionParams = {};
  let i = 0;
  const n = text.length;
  const isSpace = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
  while (i < n) {
    while (i < n && isSpace(text[i])) i++;
    if (i >= n) break;
    const keyStart = i;
    while (i < n && text[i] !== '=' && !isSpace(text[i])) i++;
    const key = text.slice(keyStart, i);
    while (i < n && isSpace(text[i])) i++;
    if (text[i] !== '=') throw new Error(`missing "=" after "${key}" in connection info string`);
    i++;
    while (i < n && isSpace(text[i])) i++;
    let value = '';
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= n) throw new Error('unterminated quoted string in connection info string');
        const c = text[i] as string;
        if (c === '\\' && i + 1 < n) {
          value += text[i + 1];
          i += 2;
          continue;
        }
        if (c === "'") {
          i++;
          break;
        }
        value += c;
        i++;
      }
    } else {
      while (i < n && !isSpace(text[i])) {
        const c = text[i] as string;
        if (c === '\\' && i + 1 < n) {
          value += text[i + 1];
          i += 2;
          continue;
        }
        value += c;
        i++;
      }
    }
    out[key] = value;
  }
  return out;
}

/** `postgres://user:pass@host:port/dbname?keyword=value`, percent-encoded parts decoded. */
function parseUri(text: string): ConnectionParams {
  const out: ConnectionParams = {};
  const decode = (s: string, what: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new Error(`invalid percent-encoded token in the ${what} of URI "${redactUrl(text)}"`);
    }
  };
  let rest = text.replace(/^postgres(ql)?:\/\//i, '');
  const q = rest.indexOf('?');
  const query = q === -1 ? '' : rest.slice(q + 1);
  if (q !== -1) rest = rest.slice(0, q);
  const slash = rest.indexOf('/');
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  if (slash !== -1 && rest.length > slash + 1) out.dbname = decode(rest.slice(slash + 1), 'database name');
  const at = authority.lastIndexOf('@');
  const hostPart = at === -1 ? authority : authority.slice(at + 1);
  if (at !== -1) {
    const userInfo = authority.slice(0, at);
    const colon = userInfo.indexOf(':');
    const user = colon === -1 ? userInfo : userInfo.slice(0, colon);
    if (user) out.user = decode(user, 'user name');
    if (colon !== -1) out.password = decode(userInfo.slice(colon + 1), 'password');
  }
  if (hostPart.includes(',')) throw new Error('a URI with several hosts is not supported; give one host');
  let host = hostPart;
  let port = '';
  const v6 = /^\[([^\]]*)\](?::(.*))?$/.exec(hostPart);
  if (v6) {
    host = v6[1] as string;
    port = v6[2] ?? '';
  } else {
    const colon = hostPart.lastIndexOf(':');
    if (colon !== -1) {
      host = hostPart.slice(0, colon);
      port = hostPart.slice(colon + 1);
    }
  }
  if (host) out.host = decode(host, 'host');
  if (port) out.port = port;
  if (query) {
    for (const pair of query.split('&')) {
      if (!pair) continue;
      const eq = pair.indexOf('=');
      if (eq === -1) throw new Error(`missing "=" after "${pair}" in URI query parameter`);
      const key = decode(pair.slice(0, eq), 'query');
      const value = decode(pair.slice(eq + 1), 'query');
      // libpq's one JDBC compatibility rule.
      if (key === 'ssl' && value === 'true') out.sslmode = 'require';
      else out[key] = value;
    }
  }
  return out;
}

/** The URI for an error message: no password, no query string (libpq takes ?password=… too). */
function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/?#@]*):([^@/?#]*)@/, '//$1:[redacted]@').replace(/^([^?#]*)[?#].*$/s, '$1?[redacted]');
}

/** What a client needs to connect, resolved once from flags, connection strings and environment. */
export interface ResolvedConnection {
  /**
   * node-postgres settings, for a Client or a Pool alike. With sslmode=prefer (libpq's default) it
   * has `ssl: false` and a `stream` that asks the server for SSL on each connection (see ssl-prefer.ts).
   */
  readonly config: pg.ClientConfig;
  /** libpq's words for the target, for messages: `server at "db", port 5432` or `server on socket "…"`. */
  readonly target: string;
  /** Things libpq would warn about (an unsafe password file), for the caller to print. */
  readonly warnings: readonly string[];
}

export interface ResolveOptions {
  /** Keywords given one by one (pglisten's -h, -p, -U). */
  readonly explicit?: ConnectionParams;
  /**
   * -d or the DBNAME operand: a database name, or a connection string whose settings override the
   * explicit ones (libpq's `expand_dbname`, in pglisten's keyword order).
   */
  readonly dbname?: string;
  /**
   * The explicit keywords win over a connection string in `dbname` too, as with libpq's
   * PQsetdbLogin (pglater's -h/-p/-U). Default false: the connection string wins, as with
   * PQconnectdbParams and expand_dbname (pglisten).
   */
  readonly explicitWins?: boolean;
  /** DATABASE_URL is used like `dbname` when none is given, except that explicit keywords win over it. */
  readonly env?: NodeJS.ProcessEnv;
  readonly fallbackApplicationName?: string;
  /** For tests: whether a Unix socket file exists (default: fs.existsSync). */
  readonly socketExists?: (path: string) => boolean;
  /** For tests: the operating-system user name, libpq's default user (default: os.userInfo()). */
  readonly osUser?: () => string;
  /** For tests: reads a certificate/key file (default: fs.readFileSync as text). */
  readonly readFile?: (path: string) => string;
  /** For tests: the home directory (~/.postgresql/…, ~/.pgpass). */
  readonly homeDir?: string;
  /** For tests: reads the password file: its text and permission bits, or undefined if there is none. */
  readonly readPassfile?: (path: string) => { text: string; mode: number } | undefined;
}

// Socket directories libpq builds tend to use (Debian's first, upstream's second).
const SOCKET_DIRS = ['/var/run/postgresql', '/tmp'];

/**
 * Resolves connection settings the way libpq does: explicit keywords, then the expanded -d
 * connection string (or DATABASE_URL), then PG* environment variables, then libpq's defaults (Unix
 * socket if one exists, port 5432, the OS user, a database named like the user, sslmode=prefer).
 * The password, when none is given, comes from ~/.pgpass (PGPASSFILE, passfile=). Throws with
 * libpq's wording on invalid values.
 */
export function resolveConnection(options: ResolveOptions = {}): ResolvedConnection {
  const env = options.env ?? process.env;
  const explicit = dropEmpty(options.explicit ?? {});
  for (const key of Object.keys(explicit)) {
    if (!SUPPORTED_KEYWORDS.has(key) && !IGNORED_KEYWORDS.has(key)) throw new Error(`invalid connection option "${key}"`);
  }
  let params: ConnectionParams;
  const dbname = options.dbname || undefined;
  if (dbname !== undefined) {
    if (!isConnectionString(dbname)) params = { ...explicit, dbname };
    else if (options.explicitWins) params = { ...dropEmpty(parseConnectionString(dbname)), ...explicit };
    else params = { ...explicit, ...dropEmpty(parseConnectionString(dbname)) };
  } else if (env.DATABASE_URL) {
    params = { ...dropEmpty(parseConnectionString(env.DATABASE_URL)), ...explicit };
  } else {
    params = { ...explicit };
  }
  for (const [key, variable] of ENV_KEYWORDS) {
    const value = env[variable];
    if (params[key] === undefined && value) params[key] = value;
  }

  const port = params.port ?? '5432';
  if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw new Error(`invalid integer value "${port}" for connection option "port"`);
  }
  let host = params.hostaddr ?? params.host;
  if (host === undefined) {
    const exists = options.socketExists ?? existsSync;
    host = SOCKET_DIRS.find((dir) => exists(`${dir}/.s.PGSQL.${port}`)) ?? 'localhost';
  }
  if (host.includes(',')) throw new Error('several hosts are not supported; give one host');
  const onSocket = host.startsWith('/');
  const user = params.user ?? (options.osUser ?? (() => userInfo().username))();

  const config: pg.ClientConfig = {
    host,
    port: Number(port),
    user,
    database: params.dbname ?? user,
  };
  const warnings: string[] = [];
  if (params.password !== undefined) {
    config.password = params.password;
  } else {
    // Looked up here, as libpq does, rather than by node-postgres (whose lookup is deprecated and says so on stderr).
    const file = params.passfile ?? `${options.homeDir ?? homedir()}/.pgpass`;
    const found = (options.readPassfile ?? readPassfile)(file);
    if (found && (found.mode & 0o077) !== 0) {
      warnings.push(`password file "${file}" has group or world access; permissions should be u=rw (0600) or less`);
    } else if (found) {
      const password = pgpassLookup(found.text, { host: params.host ?? host, port, database: params.dbname ?? user, user });
      if (password !== undefined) config.password = password;
    }
    // No password: say so to node-postgres in a way that skips its own (deprecated) .pgpass lookup.
    config.password ??= async () => undefined as unknown as string;
  }
  if (params.application_name) config.application_name = params.application_name;
  const fallbackName = params.fallback_application_name ?? options.fallbackApplicationName;
  if (fallbackName) config.fallback_application_name = fallbackName;
  if (params.connect_timeout) {
    const seconds = Number(params.connect_timeout);
    if (!Number.isInteger(seconds)) throw new Error(`invalid integer value "${params.connect_timeout}" for connection option "connect_timeout"`);
    // libpq: 0 means wait forever, and anything shorter than 2 s is taken as 2 s.
    if (seconds > 0) config.connectionTimeoutMillis = Math.max(seconds, 2) * 1000;
  }
  const startupOptions = [params.options, params.client_encoding ? `-c client_encoding=${params.client_encoding}` : undefined]
    .filter(Boolean)
    .join(' ');
  if (startupOptions) config.options = startupOptions;

  const sslmode = params.sslmode ?? 'prefer';
  const { ssl, prefer } = sslConfig(sslmode, params, onSocket, options);
  config.ssl = ssl;
  if (prefer) config.stream = preferSsl(prefer);

  const target = onSocket ? `server on socket "${host}/.s.PGSQL.${port}"` : `server at "${host}", port ${port}`;
  return { config, target, warnings };
}

/**
 * The database of the bridge or of a command: `database` (a URI, a conninfo string or a database
 * name; default DATABASE_URL), completed from the PG* variables, ~/.pgpass and libpq's defaults like
 * any libpq program. A setting libpq would refuse is a ConfigError naming it.
 */
export function databaseConnection(database: string | undefined, env: NodeJS.ProcessEnv = process.env): ResolvedConnection {
  try {
    return resolveConnection({ ...(database !== undefined && { dbname: database }), env });
  } catch (error) {
    throw new ConfigError(`database: ${errorMessage(error)}`, { cause: error });
  }
}

function readPassfile(path: string): { text: string; mode: number } | undefined {
  try {
    const stat = statSync(path);
    if (!stat.isFile()) return undefined;
    return { text: readFileSync(path, 'utf8'), mode: stat.mode };
  } catch {
    return undefined;
  }
}

/**
 * The password for a connection from a .pgpass text: `hostname:port:database:username:password` lines,
 * `*` matching anything, `\:` and `\\` escaped, the first matching line wins. A connection over the
 * default Unix socket directory matches `localhost`, as in libpq.
 */
export function pgpassLookup(text: string, c: { host: string; port: string; database: string; user: string }): string | undefined {
  const host = c.host.startsWith('/') && SOCKET_DIRS.includes(c.host) ? 'localhost' : c.host;
  const wanted = [host, c.port, c.database, c.user];
  for (const raw of text.split(/\r?\n/)) {
    if (raw === '' || raw.startsWith('#')) continue;
    const fields: string[] = [];
    let current = '';
    for (let i = 0; i < raw.length; i++) {
      const ch = raw[i] as string;
      if (ch === '\\' && i + 1 < raw.length) current += raw[++i];
      else if (ch === ':' && fields.length < 4) {
        fields.push(current);
        current = '';
      } else current += ch;
    }
    fields.push(current);
    if (fields.length < 5) continue;
    if (wanted.every((value, i) => fields[i] === '*' || fields[i] === value)) return fields[4];
  }
  return undefined;
}

/**
 * node-postgres's `ssl` for an sslmode; for prefer, `ssl: false` and the TLS options to ask the
 * server with on each connection (`prefer`).
 */
function sslConfig(
  mode: string,
  params: ConnectionParams,
  onSocket: boolean,
  options: ResolveOptions,
): { ssl: pg.ClientConfig['ssl']; prefer?: ConnectionOptions } {
  const modes = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];
  if (!modes.includes(mode)) throw new Error(`invalid sslmode value: "${mode}"`);
  // libpq never uses SSL over a Unix socket; `allow` starts without SSL, which is all a client needs.
  if (onSocket || mode === 'disable' || mode === 'allow') return { ssl: false };
  const home = options.homeDir ?? homedir();
  const read = options.readFile ?? ((path: string) => readFileSync(path, 'utf8'));
  const exists = (path: string) => {
    try {
      read(path);
      return true;
    } catch {
      return false;
    }
  };
  const tls: Record<string, unknown> = {};
  const cert = params.sslcert ?? `${home}/.postgresql/postgresql.crt`;
  const key = params.sslkey ?? `${home}/.postgresql/postgresql.key`;
  if (params.sslcert || exists(cert)) tls.cert = read(cert);
  if (tls.cert && (params.sslkey || exists(key))) tls.key = read(key);
  const rootCert = params.sslrootcert ?? `${home}/.postgresql/root.crt`;
  // `sslrootcert=system` means the system's trusted CAs (Node's bundled list).
  const hasRoot = rootCert !== 'system' && (params.sslrootcert !== undefined || exists(rootCert));
  if (hasRoot) tls.ca = read(rootCert);
  if (mode === 'verify-full') return { ssl: { ...tls, rejectUnauthorized: true } };
  // require with a root certificate behaves like verify-ca (libpq).
  if (mode === 'verify-ca' || (mode === 'require' && hasRoot)) {
    return { ssl: { ...tls, rejectUnauthorized: true, checkServerIdentity: () => undefined } };
  }
  if (mode === 'prefer') return { ssl: false, prefer: { ...tls, rejectUnauthorized: false } };
  return { ssl: { ...tls, rejectUnauthorized: false } };
}

function dropEmpty(params: ConnectionParams): ConnectionParams {
  // libpq: an empty value is the same as not giving the keyword.
  return Object.fromEntries(Object.entries(params).filter(([, v]) => v !== ''));
}

const ERRNO_TEXT: Record<string, string> = {
  ECONNREFUSED: 'Connection refused',
  ENOENT: 'No such file or directory',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  ENETUNREACH: 'Network is unreachable',
  ECONNRESET: 'Connection reset by peer',
  EACCES: 'Permission denied',
  EADDRNOTAVAIL: 'Cannot assign requested address',
};

/**
 * One line in libpq's words for a failed connection attempt, e.g.
 * `connection to server at "127.0.0.1", port 5432 failed: Connection refused`.
 */
export function connectFailureMessage(error: unknown, resolved: Pick<ResolvedConnection, 'target' | 'config'>): string {
  const e = error as { code?: string; severity?: string; message?: string; hostname?: string } | undefined;
  let reason: string;
  if (e?.code === 'ENOTFOUND' || e?.code === 'EAI_AGAIN') {
    return (
      `could not translate host name "${e.hostname ?? resolved.config.host}" to address: ` +
      `${e.code === 'ENOTFOUND' ? 'Name or service not known' : 'Temporary failure in name resolution'}`
    );
  } else if (e?.code && ERRNO_TEXT[e.code]) {
    reason = ERRNO_TEXT[e.code] as string;
  } else if (e?.severity) {
    reason = `${e.severity}:  ${e.message ?? ''}`; // libpq puts two spaces after the severity
  } else if (/terminated unexpectedly/i.test(e?.message ?? '')) {
    reason = 'server closed the connection unexpectedly';
  } else if (/timeout/i.test(e?.message ?? '')) {
    reason = 'timeout expired';
  } else if (/password must be a string|no password/i.test(e?.message ?? '')) {
    reason = 'fe_sendauth: no password supplied';
  } else {
    reason = e?.message || String(error);
  }
  return `connection to ${resolved.target} failed: ${reason}`.replace(/\s*\n\s*/g, ' ').trim();
}
