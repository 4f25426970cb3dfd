import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { Bridge } from '../../src/bridge.js';
import { triggersCommand } from '../../src/commands/triggers.js';
import type { CommandIO } from '../../src/commands/io.js';
import { startBridge } from '../support/bridge.js';
import { adminUrl, createTestDatabase, waitFor, withDatabase, type TestDatabase } from '../support/db.js';
import { createMemorySinks } from '../support/memory-sink.js';

function io(): CommandIO & { out: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let text = '';
  stdout.on('data', (d) => {
    text += String(d);
  });
  stderr.resume();
  return { stdout, stderr, env: {}, signal: new AbortController().signal, out: () => text };
}

function asRole(url: string, role: string): string {
  const u = new URL(url);
  u.username = role;
  u.password = '';
  return u.toString();
}

describe('outbox: least privilege (real PostgreSQL, non-superuser roles)', () => {
  let db: TestDatabase | undefined;
  let bridge: Bridge | undefined;
  const clients: pg.Client[] = [];
  const roles: string[] = [];
  afterEach(async () => {
    await bridge?.stop();
    bridge = undefined;
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => {})));
    await db?.drop();
    db = undefined;
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    for (const role of roles.splice(0)) await admin.query(`DROP ROLE IF EXISTS ${role}`);
    await admin.end();
  });

  async function connect(url: string): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url });
    c.on('error', () => {});
    await c.connect();
    clients.push(c);
    return c;
  }

  it(
    'a table owner installs it without superuser, the bridge runs with DML only; application roles write through the triggers but cannot read or ' +
      'forge events',
    async () => {
      db = await createTestDatabase();
      const suffix = randomBytes(3).toString('hex');
      const owner = `sk_owner_${suffix}`;
      const app = `sk_app_${suffix}`;
      const bridgeRole = `sk_bridge_${suffix}`;
      roles.push(owner, app, bridgeRole);
      const admin = await db.client();
      await admin.query(`CREATE ROLE ${owner} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE`);
      await admin.query(`CREATE ROLE ${app} LOGIN NOSUPERUSER`);
      await admin.query(`CREATE ROLE ${bridgeRole} LOGIN NOSUPERUSER`);
      await admin.query(`ALTER DATABASE "${db.name}" OWNER TO ${owner}`);
      await admin.query(`ALTER SCHEMA public OWNER TO ${owner}`);
      const ownerUrl = asRole(withDatabase(adminUrl(), db.name), owner);
      const appUrl = asRole(withDatabase(adminUrl(), db.name), app);
      const bridgeUrl = asRole(withDatabase(adminUrl(), db.name), bridgeRole);

      const o = await connect(ownerUrl);
      expect((await o.query('SELECT rolsuper FROM pg_roles WHERE rolname = current_user')).rows[0].rolsuper).toBe(false);
      await o.query('CREATE TABLE orders (id int PRIMARY KEY, status text)');
      await o.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO ${app}`);
      // The owner installs the schema and the triggers with `sidekick triggers --apply` from a config file.
      const { mkdtempSync, writeFileSync } = await import('node:fs');
      const { join } = await import('node:path');
      const { tmpdir } = await import('node:os');
      const dir = mkdtempSync(join(tmpdir(), 'sk-sec-'));
      const file = join(dir, 'sidekick.yaml');
      writeFileSync(
        file,
        `database: ${ownerUrl}\ncapture:\n  - table: public.orders\nsinks:\n  out: { type: stdout }\nroutes:\n  - { from: "*", to: out }\n`,
      );
      const cmd = io();
      expect(await triggersCommand({ config: file, apply: true }, cmd)).toBe(0);
      expect(cmd.out()).toMatch(/capturing public\.orders: insert, update, delete \(statement-level, key id\)/);

      // The bridge's own role: DML on pg-sidekick's tables, nothing else (docs/outbox.md).
      await o.query(`GRANT USAGE ON SCHEMA sidekick TO ${bridgeRole}`);
      await o.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA sidekick TO ${bridgeRole}`);
      await o.query(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA sidekick TO ${bridgeRole}`);
      const memory = createMemorySinks();
      bridge = await startBridge(
        bridgeUrl,
        { capture: [{ table: 'public.orders' }], sinks: { out: { type: 'memory' } }, routes: [{ from: '*', to: 'out' }] },
        [memory.definition],
      );
      const out = memory.get('out');
      const b = await connect(bridgeUrl);
      await expect(b.query('SELECT * FROM orders')).rejects.toThrow(/permission denied/);
      await b.query(`SELECT sidekick.publish('from-the-bridge-role', '{}')`);
      await waitFor(() => out.received.some((e) => e.channel === 'from-the-bridge-role'), 'an event published by the bridge role');
      out.received.length = 0;

      const a = await connect(appUrl);
      await a.query(`INSERT INTO orders VALUES (1, 'new')`);
      await a.query(`UPDATE orders SET status = 'paid'`);
      await waitFor(() => out.received.length >= 2, "the application role's changes");
      expect(out.received.map((e) => e.op)).toEqual(['INSERT', 'UPDATE']);

      // The application role cannot read, write or publish into the outbox.
      await expect(a.query('SELECT * FROM sidekick.outbox')).rejects.toThrow(/permission denied/);
      await expect(a.query(`INSERT INTO sidekick.outbox (source, channel) VALUES ('publish', 'forged')`)).rejects.toThrow(/permission denied/);
      await expect(a.query('SELECT * FROM sidekick.row_changes')).rejects.toThrow(/permission denied/);
      await expect(a.query(`INSERT INTO sidekick.row_changes VALUES (1, '1', now(), '{INSERT,public,orders,id}', '{}')`)).rejects.toThrow(
        /permission denied/,
      );
      await expect(a.query('SELECT * FROM sidekick.events')).rejects.toThrow(/permission denied/);
      await expect(a.query(`SELECT sidekick.publish('forged', '{}')`)).rejects.toThrow(/permission denied/);
      await expect(a.query('SELECT * FROM sidekick.dead_letters')).rejects.toThrow(/permission denied/);
      // …nor attach pg-sidekick's capture function to a table of its own.
      await a.query('CREATE TEMP TABLE mine (id int)');
      await expect(
        a.query(
          'CREATE TRIGGER x AFTER INSERT ON mine REFERENCING NEW TABLE AS sidekick_new FOR EACH STATEMENT EXECUTE FUNCTION sidekick."public.orders:insert"()',
        ),
      ).rejects.toThrow(/permission denied/);
      // A forged NOTIFY on the wake-up channel only wakes the drain: nothing is delivered.
      await a.query(`NOTIFY sidekick, '{"id": 1, "channel": "public.orders", "op": "DELETE"}'`);
      // (A sentinel change after it: the forged one would have come first.)
      await a.query(`UPDATE orders SET status = 'sentinel'`);
      await waitFor(() => out.received.length >= 3, 'the sentinel change');
      expect(out.received.map((e) => e.op)).toEqual(['INSERT', 'UPDATE', 'UPDATE']);
    },
  );

  it('installs into a schema an administrator made for a role that may not create schemas', async () => {
    db = await createTestDatabase();
    const role = `sk_svc_${randomBytes(3).toString('hex')}`;
    roles.push(role);
    const admin = await db.client();
    await admin.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER`);
    await admin.query(`REVOKE CREATE ON DATABASE "${db.name}" FROM PUBLIC`);
    await admin.query(`CREATE SCHEMA sidekick AUTHORIZATION ${role}`);
    await admin.query(`CREATE SCHEMA shop AUTHORIZATION ${role}`);
    const url = asRole(withDatabase(adminUrl(), db.name), role);
    const r = await connect(url);
    await expect(r.query('CREATE SCHEMA other')).rejects.toThrow(/permission denied/);
    await r.query('CREATE TABLE shop.items (id int PRIMARY KEY)');
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const file = join(mkdtempSync(join(tmpdir(), 'sk-sec-')), 'triggers.json');
    writeFileSync(file, JSON.stringify([{ schema: 'shop', table: 'items' }]));
    expect(await triggersCommand({ file, config: 'unused.yaml', database: url, apply: true }, io())).toBe(0);
    const memory = createMemorySinks();
    bridge = await startBridge(url, { sinks: { out: { type: 'memory' } }, routes: [{ from: 'shop.*', to: 'out' }] }, [memory.definition]);
    await r.query('INSERT INTO shop.items VALUES (7)');
    await waitFor(() => memory.get('out').received.length === 1, 'the event');
  });
});
