import amqp, { type ConsumeMessage } from 'amqplib';
import { afterEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { sinkDefinitions } from '../../sinks/index.js';
import { createBridge, type Bridge } from '../../src/bridge.js';
import { parseConfig } from '../../src/config.js';
import { quietLogger } from '../contract/sink-contract.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../support/db.js';
import { serviceEnv } from '../support/services.js';
import { randomName } from './amqp-redis-helpers.js';

// End to end: pg_notify in a fresh database → the bridge (LISTEN, router, dispatcher) → the amqp
// sink → real RabbitMQ → an independent amqplib consumer. The config is YAML, as a user writes it.

/** Called from amqp.test.ts so that it runs after that file's other tests, never beside them (vitest runs one file's tests in sequence). */
export function amqpBridgeSuite(): void {
  describe('bridge → amqp sink → RabbitMQ (real PostgreSQL and RabbitMQ)', () => {
    let db: TestDatabase | undefined;
    let bridge: Bridge | undefined;
    afterEach(async () => {
      await bridge?.stop();
      await db?.drop();
      bridge = undefined;
      db = undefined;
    });

    it('publishes every notification of a channel, in order, with messageId and headers', async () => {
      db = await createTestDatabase();
      const exchange = randomName('sk-bridge');
      const channel = 'orders_events';
      const config = parseConfig(
        parseYaml(`
  database: ${db.url}
  listen: [${channel}]
  sinks:
    rabbit:
      type: amqp
      url: \${AMQP_URL}
      exchange: ${exchange}
      routingKey: "{channel}.{op}"
      headers: { origin: bridge-test }
  routes:
    - { from: ${channel}, to: rabbit }
  `),
        { env: { AMQP_URL: serviceEnv().AMQP_URL }, sinks: sinkDefinitions },
      );

      // The consumer binds its queue before the bridge publishes (mandatory: unroutable would be retried).
      const connection = await amqp.connect(serviceEnv().AMQP_URL);
      connection.on('error', () => {});
      const ch = await connection.createChannel();
      await ch.assertExchange(exchange, 'topic', { durable: true });
      const { queue } = await ch.assertQueue('', { exclusive: true });
      await ch.bindQueue(queue, exchange, `${channel}.#`);
      const got: ConsumeMessage[] = [];
      await ch.consume(
        queue,
        (m) => {
          if (m) got.push(m);
        },
        { noAck: true },
      );
      try {
        bridge = createBridge({ config, logger: quietLogger });
        await bridge.start();
        await waitFor(() => bridge!.readiness().ready, 'the bridge to be ready');
        const c = await db.client();
        for (let i = 0; i < 200; i++) await c.query('SELECT pg_notify($1, $2)', [channel, JSON.stringify({ n: i })]);
        await waitFor(() => got.length >= 200, '200 messages', 15_000);
        expect(got.map((m) => JSON.parse(m.content.toString()).payload.n)).toEqual(Array.from({ length: 200 }, (_, i) => i));
        const first = got[0]!;
        expect(first.fields.routingKey).toBe(`${channel}.NOTIFY`);
        expect(first.properties.headers).toEqual({ origin: 'bridge-test', source: 'notify', channel });
        expect(first.properties.messageId).toBe(JSON.parse(first.content.toString()).id);
        expect(new Set(got.map((m) => m.properties.messageId)).size).toBe(200);
      } finally {
        await ch.deleteExchange(exchange).catch(() => {});
        await connection.close().catch(() => {});
      }
    });
  });
}
