import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { serviceEnv } from './services.js';

export interface TestDatabase {
  /** postgres:// URL of a database created for this test alone. */
  readonly url: string;
  readonly name: string;
  /** A client on it (opened lazily, closed by drop()). */
  client(): Promise<pg.Client>;
  /** Terminates its connections and drops it. */
  drop(): Promise<void>;
}

export function adminUrl(): string {
  return serviceEnv().DATABASE_URL;
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** Creates a fresh database on the test server (a random name, so tests never share state). */
export async function createTestDatabase(prefix = 'sk'): Promise<TestDatabase> {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl() });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${name}"`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(adminUrl(), name);
  const clients: pg.Client[] = [];
  return {
    url,
    name,
    async client() {
      const c = new pg.Client({ connectionString: url });
      c.on('error', () => {});
      await c.connect();
      clients.push(c);
      return c;
    },
    async drop() {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      const a = new pg.Client({ connectionString: adminUrl() });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes (then throws with `what`). */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 10): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await check();
    if (last) return last as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
