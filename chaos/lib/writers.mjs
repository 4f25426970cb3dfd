// Concurrent writers: each loops `UPDATE chaos_items SET v = v + 1 … WHERE id = <random key>`, one
// row per transaction, at a paced rate, and survives the database going away (reconnects). What was
// committed is read back from the table afterwards (see db.mjs), so a write whose outcome is unknown
// (the connection died around COMMIT) needs no bookkeeping here.
import { connect, TABLE } from './db.mjs';
import { sleep } from './util.mjs';

/**
 * Starts `writers` loops writing `rate` transactions per second in all over `keys` (array of ids).
 * `payload(key)` may return the JSON text for the payload column (default '{"w":1}').
 * Returns { stop(): Promise<{ committed, failed, seconds, rate }>, committed(): number }.
 */
export function startWriters(url, { writers = 4, rate = 200, keys, payload = () => '{"w":1}' }) {
  let running = true;
  let committed = 0;
  let failed = 0;
  const started = performance.now();
  const perWriter = rate / writers;
  const loops = Array.from({ length: writers }, async () => {
    let client;
    let done = 0;
    const t0 = performance.now();
    while (running) {
      try {
        if (!client) client = await connect(url);
        const key = keys[Math.floor(Math.random() * keys.length)];
        await client.query(`UPDATE ${TABLE} SET v = v + 1, payload = $2::json WHERE id = $1`, [key, payload(key)]);
        committed++;
        done++;
        const due = t0 + (done / perWriter) * 1000;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
      } catch {
        failed++;
        await client?.end().catch(() => {});
        client = undefined;
        await sleep(100);
      }
    }
    await client?.end().catch(() => {});
  });
  return {
    committed: () => committed,
    async stop() {
      running = false;
      await Promise.all(loops);
      const seconds = (performance.now() - started) / 1000;
      return { committed, failed, seconds, rate: committed / seconds };
    },
  };
}

/**
 * Out-of-order commits: a transaction updates one key (taking its outbox id first), holds for
 * `holdMs` while the other writers commit later ids, then commits. Repeats `times` times, over
 * `keys` (keys no other writer touches, so it never blocks them on a row lock).
 */
export async function lateCommits(url, { keys, holdMs = 1500, times = 5, concurrent = 2 }) {
  let committed = 0;
  await Promise.all(
    Array.from({ length: concurrent }, async (_, w) => {
      const client = await connect(url);
      try {
        for (let i = 0; i < times; i++) {
          const key = keys[(w + i * concurrent) % keys.length];
          await client.query('BEGIN');
          await client.query(`UPDATE ${TABLE} SET v = v + 1, payload = '{"late":true}' WHERE id = $1`, [key]);
          await sleep(holdMs);
          await client.query('COMMIT');
          committed++;
        }
      } finally {
        await client.end().catch(() => {});
      }
    }),
  );
  return committed;
}
