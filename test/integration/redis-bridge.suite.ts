import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { quietLogger } from '../contract/sink-contract.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { serviceEnv } from '../support/services.js';
import { randomName } from './amqp-redis-helpers.js';

// End to end: pg_notify in a fresh database → the bridge → the redis-stream sink → real Redis,
// read back with XRANGE from a separate client. The config is YAML, as a user writes it.

/** Called from redis-stream.test.ts so that it runs after that file's other tests, never beside them (vitest runs one file's tests in sequence). */
export function redisBridgeSuite(): void {
  describe('bridge → redis-stream sink → Redis (real PostgreSQL and Redis)', () => {
    let db: TestDatabase | undefined;
    let bridge: Bridge | undefined;
    afterEach(async () => {
      await bridge?.stop();
      await db?.drop();
      bridge = undefined;
      db = undefined;
    });

    it('appends every notification of a channel to its stream, in order', async () => {
      db = await createTestDatabase();
      const prefix = randomName('sk-bridge');
      const channel = 'orders_events';
      const config = parseConfig(
        parseYaml(`
  database: ${db.url}
  listen: [${channel}]
  sinks:
    redis:
      type: redis-stream
      url: \${REDIS_URL}
      stream: "${prefix}:{channel}"
      maxLen: 100000
  routes:
    - { from: ${channel}, to: redis }
  `),
        { env: { REDIS_URL: serviceEnv().REDIS_URL }, sinks: sinkDefinitions },
      );
      const reader = new Redis(serviceEnv().REDIS_URL);
      const key = `${prefix}:${channel}`;
      try {
        bridge = createBridge({ config, logger: quietLogger });
        await bridge.start();
        await waitFor(() => bridge!.readiness().ready, 'the bridge to be ready');
        const c = await db.client();
        for (let i = 0; i < 200; i++) await c.query('SELECT pg_notify($1, $2)', [channel, JSON.stringify({ n: i })]);
        await waitFor(async () => (await reader.xlen(key)) >= 200, '200 stream entries', 15_000);
        const rows = await reader.xrange(key, '-', '+');
        const fields = rows.map(([, flat]) => Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]])));
        expect(fields.map((f) => JSON.parse(f.data!).payload.n)).toEqual(Array.from({ length: 200 }, (_, i) => i));
        expect(fields[0]).toMatchObject({ channel, source: 'notify' });
        expect(fields[0]).not.toHaveProperty('op');
        expect(fields[0]!.id).toBe(JSON.parse(fields[0]!.data!).id);
        expect(new Set(fields.map((f) => f.id)).size).toBe(200);
      } finally {
        await reader.del(key).catch(() => {});
        reader.disconnect();
      }
    });
  });
}
