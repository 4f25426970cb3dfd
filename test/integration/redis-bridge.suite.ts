import { Redis } from 'ioredis';
import { expect } from 'vitest';
import { bridgeContract } from '../contract/bridge-contract.js';
import { serviceEnv } from '../support/services.js';

type Fields = Record<string, string>;

/** Called from redis-stream.test.ts so that it runs after that file's other tests, never beside them (vitest runs one file's tests in sequence). */
export function redisBridgeSuite(): void {
  bridgeContract<Fields>({
    title: 'bridge → redis-stream sink → Redis (real PostgreSQL and Redis)',
    env: { REDIS_URL: serviceEnv().REDIS_URL },
    sinkYaml: (prefix) => ['type: redis-stream', 'url: ${REDIS_URL}', `stream: "${prefix}:{channel}"`, 'maxLen: 100000'].join('\n'),
    async open(prefix, channel) {
      // Read back with XRANGE from a separate client.
      const client = new Redis(serviceEnv().REDIS_URL);
      const key = `${prefix}:${channel}`;
      return {
        async read() {
          const rows = await client.xrange(key, '-', '+');
          return rows.map(([, flat]) => {
            const fields: Fields = Object.fromEntries(Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]));
            return { envelope: JSON.parse(fields.data as string), key: fields.id, message: fields };
          });
        },
        async close() {
          await client.del(key).catch(() => {});
          client.disconnect();
        },
      };
    },
    checkFirst(first, channel) {
      expect(first.message).toMatchObject({ channel, source: 'notify' });
      expect(first.message).not.toHaveProperty('op');
    },
  });
}
