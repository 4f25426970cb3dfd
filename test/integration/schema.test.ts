import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { migrate } from '../../src/sql/migrate.js';
import { createTestDatabase, type TestDatabase } from '../support/db.js';
import { REPO_ROOT } from '../support/services.js';

const run = promisify(execFile);
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';
/** The installed schema, reviewed: every migration shows up here as a diff. */
const DUMP = join(REPO_ROOT, 'test', 'schema', 'installed.sql');

/**
 * pg_dump of schema sidekick with its privileges, without what differs between runs (header
 * comments, SET lines, the random key of \restrict).
 */
async function dump(url: string): Promise<string> {
  const { stdout } = await run(`${PG_BIN}/pg_dump`, ['--schema-only', '--schema=sidekick', '--no-owner', '--dbname', url], { maxBuffer: 16 << 20 });
  return `${stdout
    .split('\n')
    .filter((l) => !l.startsWith('--') && !/^SET /.test(l) && !/^SELECT pg_catalog\.set_config/.test(l) && !/^\\(un)?restrict /.test(l))
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim()}\n`;
}

describe('the installed schema (real PostgreSQL, pg_dump)', () => {
  let db: TestDatabase | undefined;
  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });

  it('a fresh install is exactly test/schema/installed.sql (UPDATE_SCHEMA_DUMP=1 rewrites it after a reviewed migration)', async () => {
    db = await createTestDatabase();
    await migrate(await db.client());
    const installed = await dump(db.url);
    if (process.env.UPDATE_SCHEMA_DUMP === '1') writeFileSync(DUMP, installed);
    expect(installed).toBe(readFileSync(DUMP, 'utf8'));
  });
});
