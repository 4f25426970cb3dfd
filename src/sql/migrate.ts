import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { ConfigError } from '../errors.js';
import { SQL_DIR } from '../paths.js';

export interface Migration {
  readonly id: number;
  readonly name: string;
  readonly sql: string;
}

/** sql/NNN_name.sql, in order. Numbers are unique and never reused (forward-only). */
export function listMigrations(dir = SQL_DIR): Migration[] {
  const files = readdirSync(dir)
    .filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f))
    .sort();
  const seen = new Set<number>();
  return files.map((file) => {
    const id = Number(file.slice(0, 3));
    if (seen.has(id)) throw new Error(`two migrations numbered ${id} in ${dir}`);
    seen.add(id);
    return { id, name: file.replace(/\.sql$/, ''), sql: readFileSync(join(dir, file), 'utf8') };
  });
}

/**
 * Migrations of development versions, folded into 002_outbox before the first release. A database
 * that still records them was installed by such a version: it cannot be upgraded in place.
 */
const FOLDED = new Set(['003_backfill', '004_lean_outbox', '005_row_changes', '006_event_identity']);

/** True for a recorded migration of a development version that was folded into 002_outbox. */
export function isFolded(name: string): boolean {
  return FOLDED.has(name);
}

/** The schema predates the fold of the migrations (see FOLDED): uninstall and install again. */
export class PreFoldSchema extends ConfigError {
  constructor() {
    super(
      'the sidekick schema in this database was installed by a development version of pg-sidekick from before its migrations were folded into one ' +
        '(0.1.0 is unreleased): run `sidekick uninstall --yes` (it drops the undelivered events, backlogs and dead letters) and then `sidekick ' +
        'install`',
    );
  }
}

// One lock for every installer: two `sidekick install` at once run one after the other.
const LOCK_KEY = "hashtext('pg-sidekick:migrate')";

export interface MigrateResult {
  readonly applied: readonly string[];
  readonly current: number;
}

/**
 * Applies the migrations not yet recorded in sidekick.migrations, each in its own transaction,
 * under a session advisory lock. Safe to run twice and from two processes at once. Refuses to
 * run against a schema newer than this version knows (a downgrade).
 */
export async function migrate(client: pg.Client, options: { dir?: string; onApply?: (m: Migration) => void } = {}): Promise<MigrateResult> {
  const migrations = listMigrations(options.dir);
  await client.query(`SELECT pg_advisory_lock(${LOCK_KEY})`);
  try {
    // CREATE SCHEMA IF NOT EXISTS checks the database's CREATE privilege even when the schema is
    // there: a role given a schema made for it by an administrator must not need that privilege.
    const schema = await client.query<{ ok: boolean }>(`SELECT to_regnamespace('sidekick') IS NOT NULL AS ok`);
    if (!schema.rows[0]?.ok) await client.query(`CREATE SCHEMA sidekick`);
    await client.query(`CREATE TABLE IF NOT EXISTS sidekick.migrations (
      id integer PRIMARY KEY,
      name text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ id: number; name: string }>('SELECT id, name FROM sidekick.migrations ORDER BY id');
    const done = new Map(rows.map((r) => [r.id, r.name]));
    const known = new Set(migrations.map((m) => m.id));
    const newer = rows.filter((r) => !known.has(r.id));
    if (newer.some((r) => FOLDED.has(r.name))) throw new PreFoldSchema();
    if (newer.length > 0) {
      throw new Error(
        `the database has pg-sidekick migrations this version does not know (${newer.map((r) => r.name).join(', ')}): it was installed by a newer pg-sidekick`,
      );
    }
    const applied: string[] = [];
    for (const m of migrations) {
      if (done.has(m.id)) {
        if (done.get(m.id) !== m.name) throw new Error(`migration ${m.id} is recorded as "${done.get(m.id)}" but this version calls it "${m.name}"`);
        continue;
      }
      options.onApply?.(m);
      await client.query('BEGIN');
      try {
        await client.query(m.sql);
        await client.query('INSERT INTO sidekick.migrations (id, name) VALUES ($1, $2)', [m.id, m.name]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK').catch(() => {});
        throw new Error(`migration ${m.name} failed: ${(error as Error).message}`, { cause: error });
      }
      applied.push(m.name);
    }
    return { applied, current: migrations.at(-1)?.id ?? 0 };
  } finally {
    await client.query(`SELECT pg_advisory_unlock(${LOCK_KEY})`).catch(() => {});
  }
}
