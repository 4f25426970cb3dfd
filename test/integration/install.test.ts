import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { ROW_CHANGE_COLUMNS } from '../../src/capture/sql.js';
import { installCommand } from '../../src/commands/install.js';
import type { CommandIO } from '../../src/commands/io.js';
import { SidekickError } from '../../src/errors.js';
import { listMigrations, migrate } from '../../src/sql/migrate.js';
import { adminUrl, createTestDatabase, type TestDatabase } from '../support/db.js';

describe('sidekick install (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });

  it('applies every migration once, records it, and is idempotent', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    const first = await migrate(c);
    expect(first.applied).toEqual(listMigrations().map((m) => m.name));
    const second = await migrate(c);
    expect(second.applied).toEqual([]);
    const { rows } = await c.query('SELECT name FROM sidekick.migrations ORDER BY id');
    expect(rows.map((r) => r.name)).toEqual(first.applied);
  });

  it("gives sidekick.row_changes exactly the columns, in order, that a capture trigger's one-row insert names", async () => {
    // The generated one-row insert names every column in table order so that PostgreSQL can drop a
    // scan node from its plan; a migration that adds a column must add it there too.
    db = await createTestDatabase();
    const c = await db.client();
    await migrate(c);
    const { rows } = await c.query(
      `SELECT attname FROM pg_attribute WHERE attrelid = 'sidekick.row_changes'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
    );
    expect(rows.map((r) => r.attname)).toEqual(ROW_CHANGE_COLUMNS);
  });

  it('is safe from several processes at once', async () => {
    db = await createTestDatabase();
    const clients = await Promise.all([db.client(), db.client(), db.client()]);
    const results = await Promise.all(clients.map((c) => migrate(c)));
    const total = results.reduce((n, r) => n + r.applied.length, 0);
    expect(total).toBe(listMigrations().length);
  });

  it('refuses a database installed by a newer version', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    await migrate(c);
    await c.query(`INSERT INTO sidekick.migrations (id, name) VALUES (999, '999_future')`);
    await expect(migrate(c)).rejects.toThrow(/newer pg-sidekick/);
  });

  it('rolls back a failing migration and names it', async () => {
    db = await createTestDatabase();
    const c = await db.client();
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'mig-'));
    writeFileSync(join(dir, '001_ok.sql'), 'CREATE TABLE sidekick.t1 (id int);');
    writeFileSync(join(dir, '002_bad.sql'), 'CREATE TABLE sidekick.t2 (id int); SELECT nope;');
    await expect(migrate(c, { dir })).rejects.toThrow(/migration 002_bad failed: column "nope" does not exist/);
    const t2 = await c.query(`SELECT to_regclass('sidekick.t2') AS t`);
    expect(t2.rows[0].t).toBeNull();
    const rec = await c.query('SELECT name FROM sidekick.migrations');
    expect(rec.rows.map((r) => r.name)).toEqual(['001_ok']);
    void pg;
  });
});

describe('sidekick install by a role without CREATE on the database (real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let role: string | undefined;
  afterEach(async () => {
    await db?.drop();
    db = undefined;
    if (role) {
      const admin = new pg.Client({ connectionString: adminUrl() });
      await admin.connect();
      await admin.query(`DROP ROLE IF EXISTS "${role}"`).finally(() => admin.end());
      role = undefined;
    }
  });

  function io(): CommandIO & { out: () => string } {
    const stdout = new PassThrough();
    let out = '';
    stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    return { stdout, stderr: new PassThrough(), env: {}, signal: new AbortController().signal, out: () => out };
  }

  // Issue 16 item 7: `permission denied for database` came out with a stack trace, and no word of
  // what to grant.
  it('names the missing privilege and both fixes, as one line; a schema created for the role is enough', async () => {
    db = await createTestDatabase();
    role = `sk_role_${randomBytes(4).toString('hex')}`;
    const owner = await db.client();
    await owner.query(`CREATE ROLE "${role}" LOGIN`);
    const url = new URL(db.url);
    url.username = role;

    const error = await installCommand({ database: url.toString() }, io()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SidekickError);
    const message = (error as SidekickError).message;
    expect((error as SidekickError).code).toBe('INSTALL_PRIVILEGE');
    expect(message).not.toContain('\n');
    expect(message).toContain('permission denied for database');
    expect(message).toContain(`GRANT CREATE ON DATABASE "${db.name}" TO "${role}"`);
    expect(message).toContain(`CREATE SCHEMA sidekick AUTHORIZATION "${role}"`);

    // The second fix works: with the schema made for it, the role installs without CREATE on the database.
    await owner.query(`CREATE SCHEMA sidekick AUTHORIZATION "${role}"`);
    const second = io();
    await expect(installCommand({ database: url.toString() }, second)).resolves.toBe(0);
    expect(second.out()).toMatch(/installed \d+ migration\(s\)/);
  });
});
