import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { migrate } from '../../src/sql/migrate.js';
import { adminUrl, createTestDatabase, withDatabase, type TestDatabase } from '../support/db.js';
import { REPO_ROOT } from '../support/services.js';

// The least-privilege roles of examples/compose/init.sql (the same recipe docs/operations.md gives),
// applied to a fresh database on the real test server with per-test role names (roles are
// cluster-wide), then `sidekick install` run as the owner role, as the compose stack does.

function roleUrl(dbUrl: string, role: string, password: string): string {
  const u = new URL(dbUrl);
  u.username = role;
  u.password = password;
  return u.toString();
}

describe('least-privilege roles (examples/compose/init.sql, real PostgreSQL)', () => {
  let db: TestDatabase | undefined;
  let roles: string[] = [];
  afterEach(async () => {
    await db?.drop();
    db = undefined;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    try {
      for (const r of roles) await admin.query(`DROP ROLE IF EXISTS "${r}"`);
    } finally {
      await admin.end();
    }
    roles = [];
  });

  it('the bridge role gets DML on sidekick tables only; the application role nothing in schema sidekick', async () => {
    db = await createTestDatabase();
    const suffix = randomBytes(3).toString('hex');
    const owner = `app_owner_${suffix}`;
    const app = `app_${suffix}`;
    const bridge = `sidekick_${suffix}`;
    roles = [owner, app, bridge];
    const sql = readFileSync(join(REPO_ROOT, 'examples', 'compose', 'init.sql'), 'utf8')
      .replace(/\bapp_owner\b/g, owner)
      .replace(/ROLE app LOGIN/g, `ROLE ${app} LOGIN`)
      .replace(/ROLE sidekick LOGIN/g, `ROLE ${bridge} LOGIN`)
      .replace(/DATABASE app\b/g, `DATABASE "${db.name}"`)
      .replace(/TO app, sidekick;/g, `TO ${app}, ${bridge};`)
      .replace(/TO app;/g, `TO ${app};`)
      .replace(/TO sidekick;/g, `TO ${bridge};`);
    expect(sql).not.toMatch(/\b(TO|ROLE) (app|sidekick)\b[^_]/);

    // As the postgres image's entrypoint does: the script runs as the superuser in the new database.
    const admin = new pg.Client({ connectionString: withDatabase(adminUrl(), db.name) });
    await admin.connect();
    try {
      await admin.query(sql);
    } finally {
      await admin.end();
    }

    const connect = async (role: string) => {
      const c = new pg.Client({ connectionString: roleUrl(db!.url, role, role.replace(`_${suffix}`, '')) });
      await c.connect();
      return c;
    };
    // `sidekick install` as the owner of the application's tables (not a superuser).
    const ownerClient = await connect(owner);
    try {
      const { rows } = await ownerClient.query<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_roles WHERE rolname = current_user');
      expect(rows[0]?.rolsuper).toBe(false);
      await migrate(ownerClient);
    } finally {
      await ownerClient.end();
    }

    const check = await connect(bridge);
    try {
      const { rows: tables } = await check.query<{ name: string; dml: boolean; truncate: boolean; app_select: boolean }>(
        `
        SELECT c.oid::regclass::text AS name,
               -- (a list of privileges would mean "any of them": ask for each)
               has_table_privilege(c.oid, 'SELECT') AND has_table_privilege(c.oid, 'INSERT')
                 AND has_table_privilege(c.oid, 'UPDATE') AND has_table_privilege(c.oid, 'DELETE') AS dml,
               has_table_privilege(c.oid, 'TRUNCATE') AS truncate,
               has_table_privilege($1, c.oid, 'SELECT') AS app_select
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'sidekick' AND c.relkind IN ('r', 'u', 'p')`,
        [app],
      );
      expect(tables.map((t) => t.name)).toContain('sidekick.migrations');
      for (const t of tables) expect(t, t.name).toMatchObject({ dml: true, truncate: false, app_select: false });
      // Nothing on the application's data, no DDL.
      await expect(check.query('SELECT * FROM public.orders')).rejects.toThrow(/permission denied/);
      await expect(check.query('CREATE TABLE sidekick.nope (id int)')).rejects.toThrow(/permission denied/);
      // And what the bridge itself uses outside its tables works: LISTEN and the queue gauge.
      await check.query('LISTEN sidekick');
      await check.query('SELECT pg_notification_queue_usage()');
    } finally {
      await check.end();
    }

    const appClient = await connect(app);
    try {
      await appClient.query(`INSERT INTO public.orders (customer, total) VALUES ('c1', 10)`);
      await expect(appClient.query('SELECT * FROM sidekick.migrations')).rejects.toThrow(/permission denied for schema sidekick/);
    } finally {
      await appClient.end();
    }
  });
});
