import amqp, { type ConsumeMessage } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { amqpSink } from '../../sinks/amqp/index.js';
import { amqpOptions } from '../../sinks/amqp/options.js';
import { createDispatcher, type Delivery } from '../../src/dispatcher/index.js';
import { contractContext, quietLogger } from '../contract/sink-contract.js';
import { waitFor } from '../support/db.js';
import { serviceEnv } from '../support/services.js';
import { dispatchOptions, randomName, rowChanges, services, verifyDelivery, within, type Received } from './amqp-redis-helpers.js';

// RabbitMQ itself (the shared instance from scripts/services.sh) is stopped and started again in
// the middle of a stream of row changes. The exchange and queue are durable and the messages
// persistent, and RabbitMQ confirms a persistent message routed to a durable queue only once it is
// on disk; services.sh keeps the node's data directory across down/up. So every event the sink
// counted as delivered must be in the queue after the restart; the ones in flight at the moment of
// the stop were not confirmed and are sent again (duplicates are allowed: at-least-once).

const AMQP_URL = serviceEnv().AMQP_URL;

/**
 * Called last from amqp.test.ts: the restart takes the shared RabbitMQ away, so no other AMQP test may
 * run beside it (vitest runs one file's tests in sequence; files run in parallel).
 */
export function amqpRestartSuite(): void {
  describe('amqp sink: RabbitMQ restarted in the middle of a stream', () => {
    it('loses nothing and keeps per-key order once RabbitMQ is back', async () => {
      const exchange = randomName('sk-restart');
      const queue = randomName('sk-restart-q');
      const setup = await amqp.connect(AMQP_URL);
      setup.on('error', () => {});
      const ch = await setup.createChannel();
      await ch.assertExchange(exchange, 'topic', { durable: true });
      await ch.assertQueue(queue, { durable: true });
      await ch.bindQueue(queue, exchange, '#');
      await setup.close();

      const sink = amqpSink.create(
        z.strictObject(amqpOptions).parse({ url: AMQP_URL, exchange, connectTimeout: 2_000, heartbeat: 5_000 }),
        contractContext('rabbit-restart'),
      );
      const dispatcher = createDispatcher({
        sink,
        options: dispatchOptions({ retry: { attempts: 1000, initialDelay: 100, maxDelay: 1_000 } }),
        logger: quietLogger,
      });
      await sink.start(new AbortController().signal);

      const all = rowChanges(200_000, 100);
      const sent: typeof all = [];
      const results: Promise<Delivery>[] = [];
      let producing = true;
      // A steady stream: 50 events every 25 ms (≈ 2 000/s) until the broker is back and a bit after.
      const producer = (async () => {
        while (producing && sent.length < all.length) {
          for (const e of all.slice(sent.length, sent.length + 50)) {
            sent.push(e);
            results.push(dispatcher.deliver(e));
          }
          await new Promise((r) => setTimeout(r, 25));
        }
      })();

      await waitFor(() => sent.length >= 2_000, 'the stream to be flowing', 10_000, 20);
      const down = await services('down', 'rabbitmq');
      console.info(`rabbitmq down in ${down.ms} ms`);
      const sentAtStop = sent.length;
      const up = await services('up', 'rabbitmq');
      const sentAtStart = sent.length;
      await waitFor(() => sent.length >= sentAtStart + 2_000, 'more events after the restart', 20_000, 20);
      producing = false;
      await producer;

      const outcomes = await within(Promise.all(results), 60_000, 'every delivery to finish');
      await dispatcher.stop(1_000);
      await sink.stop();
      expect(outcomes.filter((o) => o.status !== 'delivered')).toEqual([]);
      // The stream really ran across the restart: events were queued while the broker was down, and
      // some deliveries needed more than one attempt.
      expect(sentAtStart).toBeGreaterThan(sentAtStop);
      expect(outcomes.some((o) => o.attempts > 1)).toBe(true);

      // Read the durable queue back with an independent consumer.
      const reader = await amqp.connect(AMQP_URL);
      reader.on('error', () => {});
      const rch = await reader.createChannel();
      const got: Received[] = [];
      await rch.prefetch(1000);
      await rch.consume(queue, (m: ConsumeMessage | null) => {
        if (!m) return;
        const body = JSON.parse(m.content.toString('utf8')) as { id: string; key: string; new: { seq: number } };
        got.push({ id: body.id, key: body.key, seq: body.new.seq });
        rch.ack(m);
      });
      await waitFor(() => new Set(got.map((r) => r.id)).size >= sent.length, `${sent.length} events in ${queue}`, 30_000, 50).catch(() => undefined);
      await rch.deleteQueue(queue);
      await rch.deleteExchange(exchange);
      await reader.close();

      const report = verifyDelivery(sent, got);
      console.info(
        `amqp restart: ${sent.length} events (${sentAtStop} before the stop), down ${down.ms} ms, up ${up.ms} ms, ` +
          `${report.distinct} distinct received, ${report.duplicates} duplicates`,
      );
      expect(report.problems).toEqual([]);
    }, 180_000);
  });
}
