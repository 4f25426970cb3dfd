// A database per scenario: the sidekick schema, the captured table chaos_items, and the truth.
//
// chaos_items(id int primary key, v int, payload json): every write is `UPDATE … SET v = v + 1`, one
// row per transaction, captured by pg-sidekick's trigger. The rows are inserted before the triggers
// exist, so the captured events of key k are exactly versions 1..v(k) — whatever happened to the
// writers' connections, the table itself says what was committed (a write whose COMMIT answer was
// lost is in it or not, and the table knows which).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { migrate } from '../../dist/src/sql/migrate.js';
import { captureSpecsFromConfig } from '../../dist/src/capture/spec.js';
import { resolveCaptures } from '../../dist/src/capture/catalog.js';
import { captureStatements } from '../../dist/src/capture/sql.js';

export const TABLE = 'chaos_items';
export const CHANNEL = `public.${TABLE}`;

function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Opens a client that never crashes the process on a dropped connection. */
export async function connect(url) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Runs one query on a fresh connection. */
export async function query(url, text, values) {
  const client = await connect(url);
  try {
    return await client.query(text, values);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Creates a fresh database on `serverUrl` with `keys` rows in chaos_items, the sidekick schema
 * installed and capture triggers on the table. Returns { url, name, drop() }.
 */
export async function createChaosDatabase(serverUrl, { keys = 50 } = {}) {
  const name = `chaos_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  await query(serverUrl, `CREATE DATABASE "${name}"`);
  const url = withDatabase(serverUrl, name);
  const client = await connect(url);
  try {
    await migrate(client);
    await client.query(`CREATE TABLE ${TABLE} (id int PRIMARY KEY, v int NOT NULL DEFAULT 0, payload json)`);
    await client.query(`INSERT INTO ${TABLE} (id) SELECT generate_series(1, $1::int)`, [keys]);
    const specs = captureSpecsFromConfig([{ table: TABLE, columns: '*', mode: 'statement' }]);
    await client.query(captureStatements(await resolveCaptures(client, specs)));
  } finally {
    await client.end();
  }
  return {
    url,
    name,
    async drop() {
      await query(serverUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).catch(() => {});
    },
  };
}

/** The truth: Map key (string, as in envelopes) → highest committed version. */
export async function readTruth(url) {
  const { rows } = await query(url, `SELECT id, v FROM ${TABLE}`);
  return new Map(rows.map((r) => [String(r.id), r.v]));
}

/** Reads the truth, retrying while the database is unreachable (after an outage). */
export async function readTruthWhenUp(url, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await readTruth(url);
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`database unreachable for ${timeoutMs} ms: ${err.message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Dead letters per sink: [{ sink, key, v, error_code }] (v from the stored row image). */
export async function readDeadLetters(url) {
  const { rows } = await query(
    url,
    // The version is read from the image's text: a poison image (\u0000 in a json value) cannot go through ->>.
    `SELECT sink, key, substring(new::text from '"v"\\s*:\\s*(\\d+)')::int AS v, error_code FROM sidekick.dead_letters WHERE channel = $1`,
    [CHANNEL],
  );
  return rows;
}

/** Events still waiting: in the outbox (not yet handed to every sink) and in sinks' backlogs. */
export async function readPending(url) {
  const { rows } = await query(
    url,
    `SELECT
      (SELECT count(*) FROM sidekick.events)::int AS outbox,
      (SELECT count(*) FROM sidekick.deliveries)::int AS backlog`,
  );
  return rows[0];
}
