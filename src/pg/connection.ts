import type pg from 'pg';

/**
 * Connection settings for node-postgres. A URL or conninfo string from config wins; otherwise
 * DATABASE_URL; otherwise node-postgres reads the libpq variables (PGHOST, PGPORT, PGUSER,
 * PGPASSWORD, PGDATABASE, PGSSLMODE) by itself.
 */
export function connectionConfig(database: string | undefined, env: NodeJS.ProcessEnv = process.env): pg.ClientConfig {
  const source = database ?? env.DATABASE_URL;
  if (!source) return {};
  if (/^postgres(ql)?:\/\//i.test(source)) return { connectionString: source };
  if (source.includes('=')) return parseConninfo(source);
  return { database: source };
}

const CONNINFO_KEYS: Record<string, keyof pg.ClientConfig | 'sslmode'> = {
  host: 'host', hostaddr: 'host', port: 'port', dbname: 'database', user: 'user', password: 'password',
  application_name: 'application_name', connect_timeout: 'connectionTimeoutMillis', sslmode: 'sslmode',
  options: 'options',
};

/** Parses a libpq keyword/value string: `host=db port=5432 dbname='my db'`. */
export function parseConninfo(text: string): pg.ClientConfig {
  const out: Record<string, unknown> = {};
  const re = /\s*([A-Za-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))/gy;
  let m: RegExpExecArray | null;
  let last = 0;
  while ((m = re.exec(text)) !== null) {
    last = re.lastIndex;
    const key = m[1] as string;
    const value = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : (m[3] as string);
    const target = CONNINFO_KEYS[key];
    if (!target) throw new Error(`unknown connection option "${key}" in "${text}"`);
    if (target === 'port') out.port = Number(value);
    else if (target === 'connectionTimeoutMillis') out.connectionTimeoutMillis = Number(value) * 1000;
    else if (target === 'sslmode') {
      if (value === 'disable') out.ssl = false;
      else if (value === 'require' || value === 'prefer' || value === 'allow') out.ssl = { rejectUnauthorized: false };
      else out.ssl = true;
    } else out[target] = value;
  }
  if (text.slice(last).trim() !== '') throw new Error(`cannot parse connection string "${text}" near "${text.slice(last).trim()}"`);
  return out as pg.ClientConfig;
}

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
