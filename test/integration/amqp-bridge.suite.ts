import amqp, { type ConsumeMessage } from 'amqplib';
import { expect } from 'vitest';
import { bridgeContract } from '../contract/bridge-contract.js';
import { serviceEnv } from '../support/services.js';

/** Called from amqp.test.ts so that it runs after that file's other tests, never beside them (vitest runs one file's tests in sequence). */
export function amqpBridgeSuite(): void {
  bridgeContract<ConsumeMessage>({
    title: 'bridge → amqp sink → RabbitMQ (real PostgreSQL and RabbitMQ)',
    env: { AMQP_URL: serviceEnv().AMQP_URL },
    sinkYaml: (prefix) =>
      ['type: amqp', 'url: ${AMQP_URL}', `exchange: ${prefix}`, 'routingKey: "{channel}.{op}"', 'headers: { origin: bridge-test }'].join('\n'),
    async open(prefix, channel) {
      // The consumer binds its queue before the bridge publishes (mandatory: unroutable would be retried).
      const connection = await amqp.connect(serviceEnv().AMQP_URL);
      connection.on('error', () => {});
      const ch = await connection.createChannel();
      await ch.assertExchange(prefix, 'topic', { durable: true });
      const { queue } = await ch.assertQueue('', { exclusive: true });
      await ch.bindQueue(queue, prefix, `${channel}.#`);
      const got: ConsumeMessage[] = [];
      await ch.consume(queue, (m) => m && got.push(m), { noAck: true });
      return {
        read: async () =>
          got.map((m) => ({ envelope: JSON.parse(m.content.toString()), key: m.properties.messageId as string | undefined, message: m })),
        async close() {
          await ch.deleteExchange(prefix).catch(() => {});
          await connection.close().catch(() => {});
        },
      };
    },
    checkFirst(first, channel) {
      expect(first.message.fields.routingKey).toBe(`${channel}.NOTIFY`);
      expect(first.message.properties.headers).toEqual({ origin: 'bridge-test', source: 'notify', channel });
    },
  });
}
